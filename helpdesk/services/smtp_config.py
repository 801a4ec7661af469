"""The outbound SMTP settings: the one stored row, its encrypted password, and SmtpSettings from it.

The admin screen saves through `save_config`; everything that sends mail reads through
`load_smtp_settings`, so the password is decrypted in exactly one place.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from flask import current_app

from helpdesk.extensions import db
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail.smtp import SmtpSettings
from helpdesk.models import Agent, SmtpConfig
from helpdesk.models._time import utcnow
from helpdesk.services import credential_box, sign_in

log = logging.getLogger(__name__)


class _Field(Protocol):
    data: Any


class SmtpForm(Protocol):
    """What `settings_from_form` reads: the Outbound form's fields (WTForms fields with .data)."""

    host: _Field
    port: _Field
    security: _Field
    username: _Field
    password: _Field
    clear_password: _Field
    uses_oauth: bool
    verify_tls: _Field
    timeout: _Field


def _stored_config() -> SmtpConfig | None:
    return db.session.scalar(db.select(SmtpConfig).order_by(SmtpConfig.id).limit(1))


def get_config() -> SmtpConfig:
    """Return the single SMTP settings row, adding an empty one when there is none yet."""
    config = _stored_config()
    if config is None:
        # Flushed, not committed: the caller's transaction decides whether it is kept.
        config = _blank_config()
        db.session.add(config)
        db.session.flush()
    return config


def stored_or_blank_config() -> SmtpConfig:
    """Return the SMTP settings row, or blank settings that are not stored (for showing, never saving)."""
    return _stored_config() or _blank_config()


def _blank_config() -> SmtpConfig:
    return SmtpConfig(host="", port=587, security="starttls", username="", password_encrypted="",
                      from_address="", from_name="", verify_tls=True, timeout=15, auth_method="password")


def is_configured(config: SmtpConfig) -> bool:
    """Tell whether the settings are complete enough to send mail (a host and a From Address)."""
    return bool(config.host and config.from_address)


def load_smtp_settings() -> tuple[SmtpSettings, str, str] | None:
    """Return (settings, From Address, From name) for sending, or None when SMTP is not configured.

    Raises CredentialError when the stored password cannot be decrypted (CREDENTIALS_KEY changed),
    OAuthError when OAuth is chosen and no access token can be had.
    """
    config = _stored_config()
    if config is None or not is_configured(config):
        return None
    oauth = config.auth_method == "oauth2"
    return _settings(config.host, config.port, config.security, config.username,
                     "" if oauth else credential_box().open(config.password_encrypted), config.verify_tls,
                     config.timeout, oauth_from=config if oauth else None), config.from_address, config.from_name


def _settings(host: str, port: int, security: str, username: str, password: str, verify_tls: bool,
              timeout: float, *, oauth_from: SmtpConfig | None) -> SmtpSettings:
    """Return SmtpSettings for these values; with `oauth_from`, sign in with its OAuth connection."""
    settings = SmtpSettings(host=host, port=port, security=security, username=username, password=password,
                            verify_tls=verify_tls, timeout=float(timeout),
                            ca_file=current_app.config.get("TLS_CA_FILE"))
    if oauth_from is not None:
        for name, value in sign_in.bearer(oauth_from).items():
            setattr(settings, name, value)
    return settings


def signed_in() -> None:
    """Note that Outbound (SMTP) accepted our sign-in; commit."""
    config = _stored_config()
    if config is not None and config.username and sign_in.record_success(config):
        # At once: a send burst must not hold the settings row (other workers note their sign-ins too).
        db.session.commit()


def sign_in_refused(diagnosis: str) -> None:
    """Note that Outbound (SMTP) refused our sign-in, which needs a person; commit."""
    config = _stored_config()
    if config is not None:
        sign_in.record_failure(config, diagnosis, certain=True)
        db.session.commit()


def save_config(form_data: Mapping[str, Any], agent: Agent | None) -> SmtpConfig:
    """Store the submitted settings; a blank password keeps the stored one for the same host and username.

    The caller commits.
    """
    config = get_config()
    moved = _leaves_saved_server(form_data.get("host"), form_data.get("username"), form_data["port"],
                                 form_data.get("security") or "starttls", form_data.get("verify_tls", True), config)
    config.host = (form_data.get("host") or "").strip()
    config.port = int(form_data["port"])
    config.security = form_data.get("security") or "starttls"
    config.username = (form_data.get("username") or "").strip()
    config.from_address = (form_data.get("from_address") or "").strip()
    config.from_name = (form_data.get("from_name") or "").strip()
    # Callers other than the form may leave these out: the safe defaults apply, not False/0.
    config.verify_tls = bool(form_data.get("verify_tls", True))
    config.timeout = int(form_data.get("timeout") or 15)
    password = form_data.get("password") or ""
    if password:
        config.password_encrypted = credential_box().seal(password)
    elif form_data.get("clear_password") or moved:
        # A stored password belongs to its server, account and the way it is sent: changing them drops it.
        config.password_encrypted = ""
    config.updated_at = utcnow()
    config.updated_by_id = agent.id if agent is not None else None
    db.session.flush()
    # Never the password: only what an admin would need to trace a change.
    log.info("SMTP settings saved by agent %s: %s:%s %s, user %r, sign-in %s, verify TLS %s",
             config.updated_by_id, config.host, config.port, config.security, config.username,
             config.auth_method, config.verify_tls)
    return config


def _leaves_saved_server(host: str | None, username: str | None, port: Any, security: str, verify_tls: Any,
                         stored: SmtpConfig) -> bool:
    """Tell whether these settings would send the stored password anywhere, or any way, it was not saved for.

    Another port may be another service, another security may be plain text, and switching
    certificate verification off lets anyone in between read it. Switching verification on is safe.
    """
    try:
        port = int(port)
    except (TypeError, ValueError):
        return True
    return ((host or "").strip().lower() != (stored.host or "").lower()
            or (username or "").strip().lower() != (stored.username or "").lower()
            or port != stored.port or security != stored.security
            or (bool(stored.verify_tls) and not verify_tls))


def _points_elsewhere(form: SmtpForm, stored: SmtpConfig) -> bool:
    return _leaves_saved_server(form.host.data, form.username.data, form.port.data, form.security.data,
                                form.verify_tls.data, stored)


def needs_password_again(form: SmtpForm, stored: SmtpConfig) -> bool:
    """Tell whether the form left the password blank although the stored one may not be used with its values."""
    return (not form.password.data and not form.clear_password.data and bool(stored.password_encrypted)
            and _points_elsewhere(form, stored))


def settings_from_form(form: SmtpForm, stored: SmtpConfig) -> SmtpSettings:
    """Return SmtpSettings from the values now in the form, saved or not; a blank password uses the stored one.

    Raises CredentialError when the stored password is needed and cannot be decrypted, OAuthError when
    OAuth is chosen and the account is not connected (or no token can be had).
    """
    if form.uses_oauth:
        if stored.auth_method != "oauth2" or not sign_in.is_connected(stored):
            raise OAuthError("revoked", "Choose OAuth 2.0, Save and press “Connect account” before testing.")
        password = ""
    elif form.password.data:
        password = form.password.data
    elif form.clear_password.data or _points_elsewhere(form, stored):
        # The stored password only ever goes to the server and account it was saved for.
        password = ""
    else:
        password = credential_box().open(stored.password_encrypted)
    return _settings((form.host.data or "").strip(), int(form.port.data), form.security.data,
                     (form.username.data or "").strip(), password, bool(form.verify_tls.data), form.timeout.data,
                     oauth_from=stored if form.uses_oauth else None)
