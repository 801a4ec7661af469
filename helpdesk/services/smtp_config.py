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
        config = SmtpConfig(host="", port=587, security="starttls", username="", password_encrypted="",
                            from_address="", from_name="", verify_tls=True, timeout=15)
        db.session.add(config)
        db.session.flush()
    return config


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
    moved = ((form_data.get("host") or "").strip().lower() != (config.host or "").lower()
             or (form_data.get("username") or "").strip().lower() != (config.username or "").lower())
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
        # A stored password belongs to its server and account: a new host or username drops it.
        config.password_encrypted = ""
    config.updated_at = utcnow()
    config.updated_by_id = agent.id if agent is not None else None
    db.session.flush()
    # Never the password: only what an admin would need to trace a change.
    log.info("SMTP settings saved by agent %s: %s:%s %s, user %r, sign-in %s, verify TLS %s",
             config.updated_by_id, config.host, config.port, config.security, config.username,
             config.auth_method, config.verify_tls)
    return config


def _points_elsewhere(form: SmtpForm, stored: SmtpConfig) -> bool:
    host, username = (form.host.data or "").strip().lower(), (form.username.data or "").strip().lower()
    return host != (stored.host or "").lower() or username != (stored.username or "").lower()


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
