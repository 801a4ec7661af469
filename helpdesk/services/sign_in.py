"""Signing in to the mail servers: OAuth connections and their tokens, and the credential health admins see.

Outbound (SMTP) and every mailbox sign in with a password or with OAuth 2.0. Tokens are
refreshed here, in a transaction of their own that locks the connection's row, so two workers
refreshing at once keep the newest (rotated) refresh token. Sign-in failures that persist open
an incident: a banner on every console page and one mail to the admins, and one more when it
works again.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from flask import current_app
from sqlalchemy.orm import Session

from helpdesk.extensions import db
from helpdesk.mail import oauth
from helpdesk.mail.oauth import OAuthApp, OAuthError, Tokens
from helpdesk.mail.render import RenderedMail
from helpdesk.models import Agent, Mailbox, OAuthConnection, SmtpConfig
from helpdesk.models._time import utcnow
from helpdesk.services import credential_box

log = logging.getLogger(__name__)

Owner = SmtpConfig | Mailbox
CALLBACK_PATH = "/admin/settings/email/oauth/callback"
FAILURES_FOR_INCIDENT = 3  # sign-in failures in a row (polls, sends) before admins are told
REFRESH_MARGIN = timedelta(seconds=60)  # refresh this long before the access token expires
SUCCESS_NOTED_EVERY = timedelta(seconds=60)  # how fresh "last successful sign-in" is kept
# In one process, one refresh at a time; across processes the row lock (PostgreSQL) or the
# re-read after a refused refresh (SQLite) keeps the newest refresh token.
_refreshing = threading.Lock()


@dataclass
class OAuthValues:
    """What the settings screens edit on an OAuth connection (the client secret aside)."""

    provider: str = "microsoft"
    flow: str = "authorization_code"
    client_id: str = ""
    tenant: str = "organizations"
    authorize_url: str = ""
    token_url: str = ""
    scopes: str = ""


# Changing any of these makes the tokens belong to another app or account: they are dropped.
_APP_FIELDS = ("provider", "flow", "client_id", "tenant", "authorize_url", "token_url", "scopes")


def use_of(owner: Owner) -> str:
    """Return what the owner signs in to: "imap" for a mailbox, "smtp" for Outbound."""
    return "imap" if isinstance(owner, Mailbox) else "smtp"


def owner_key(owner: Owner) -> str:
    """Return how the OAuth callback names the owner: "smtp" or "mailbox:<id>"."""
    return f"mailbox:{owner.id}" if isinstance(owner, Mailbox) else "smtp"


def owner_by_key(key: str) -> Owner | None:
    """Return the owner an OAuth callback's key names, or None."""
    if key == "smtp":
        return db.session.scalar(db.select(SmtpConfig).order_by(SmtpConfig.id).limit(1))
    kind, _, mailbox_id = key.partition(":")
    return db.session.get(Mailbox, int(mailbox_id)) if kind == "mailbox" and mailbox_id.isdigit() else None


def redirect_uri() -> str:
    """Return the callback URL to register at the provider."""
    return current_app.config["PUBLIC_BASE_URL"] + CALLBACK_PATH


def oauth_values(owner: Owner | None) -> OAuthValues:
    """Return the owner's OAuth settings as the screens edit them."""
    connection = owner.oauth_connection if owner is not None else None
    if connection is None:
        return OAuthValues()
    return OAuthValues(**{name: getattr(connection, name) for name in OAuthValues.__dataclass_fields__})


def save_oauth(owner: Owner, method: str, values: OAuthValues, client_secret: str) -> None:
    """Store the sign-in method and OAuth app settings; a changed app or a blank flow drops the tokens.

    The caller commits.
    """
    owner.auth_method = method
    connection = owner.oauth_connection
    if connection is None:
        if method != "oauth2":
            return
        connection = OAuthConnection()
        db.session.add(connection)
        owner.oauth_connection = connection
    if any((getattr(connection, name) or "") != (getattr(values, name) or "") for name in _APP_FIELDS):
        _forget_tokens(connection)
        if (connection.client_id or "") != values.client_id:
            connection.client_secret_encrypted = ""  # a secret belongs to its client ID
    for name, value in vars(values).items():
        setattr(connection, name, value)
    if client_secret:
        connection.client_secret_encrypted = credential_box().seal(client_secret)
    connection.updated_at = utcnow()


def secret_for_client(owner: Owner | None) -> str:
    """Return the client ID whose secret is stored for the owner, or "" when no secret is."""
    connection = owner.oauth_connection if owner is not None else None
    return connection.client_id if connection is not None and connection.client_secret_encrypted else ""


def oauth_app(connection: OAuthConnection) -> OAuthApp:
    """Return the app registration of a stored connection, its secret decrypted."""
    return OAuthApp(provider=connection.provider, client_id=connection.client_id,
                    client_secret=credential_box().open(connection.client_secret_encrypted),
                    flow=connection.flow, tenant=connection.tenant, authorize_url=connection.authorize_url,
                    token_url=connection.token_url, scopes=connection.scopes,
                    ca_file=current_app.config.get("TLS_CA_FILE"))


def connect(owner: Owner, tokens: Tokens, account: str) -> None:
    """Keep the tokens an authorization (or an app-only request) gave, for `account`; the caller commits."""
    connection = owner.oauth_connection
    _store(connection, tokens)
    connection.account = account
    connection.connected_at = utcnow()
    log.info("%s: OAuth connected as %s", owner_key(owner), account)


def disconnect(owner: Owner) -> None:
    """Forget the owner's tokens (the app settings stay); the caller commits."""
    if owner.oauth_connection is not None:
        _forget_tokens(owner.oauth_connection)
        log.info("%s: OAuth disconnected", owner_key(owner))


def is_connected(owner: Owner) -> bool:
    """Tell whether the owner holds OAuth tokens it can sign in with."""
    connection = owner.oauth_connection
    return connection is not None and bool(connection.refresh_token_encrypted or
                                           (connection.flow == "client_credentials" and connection.account))


def bearer(owner: Owner) -> dict:
    """Return the OAuth fields of the owner's ImapSettings/SmtpSettings: login, token, renewal, refusal text.

    Raises OAuthError when the owner is not connected or the provider refuses a refresh.
    """
    connection = owner.oauth_connection
    if connection is None or not is_connected(owner):
        raise OAuthError("revoked", "OAuth 2.0 is chosen but no account is connected: press “Connect "
                                    "account” in the settings.")
    use = use_of(owner)
    app = oauth_app(connection)
    return dict(username=connection.account, password="",
                oauth_token=access_token(connection.id, use),
                oauth_renew=partial(access_token, connection.id, use),
                oauth_refusal=oauth.xoauth2_refusal(app, use, connection.account))


def access_token(connection_id: int, use: str, refused: str = "") -> str:
    """Return a valid access token; refresh it when it is about to expire or is the one a server just refused."""
    with _refreshing, Session(db.engine) as session:
        with session.begin():
            connection = session.get(OAuthConnection, connection_id, with_for_update=True)
            if connection is None:
                raise OAuthError("revoked", "The OAuth connection was removed: connect the account again.")
            box = credential_box()
            current = box.open(connection.access_token_encrypted)
            if current and current != refused and not _expiring(connection):
                return current
            used_refresh = connection.refresh_token_encrypted
            try:
                tokens = _new_tokens(connection, use)
            except OAuthError as exc:
                rotated = _rotated_meanwhile(connection_id, used_refresh, refused) if exc.kind == "revoked" else ""
                if rotated:
                    return rotated
                raise
            _store(connection, tokens)
    log.info("OAuth connection %s: access token refreshed, valid until %s", connection_id, tokens.expires_at)
    return tokens.access_token


def _new_tokens(connection: OAuthConnection, use: str) -> Tokens:
    app = oauth_app(connection)
    if connection.flow == "client_credentials":
        return oauth.client_credentials(app, use)
    refresh_token = credential_box().open(connection.refresh_token_encrypted)
    if not refresh_token:
        raise OAuthError("revoked", "Not connected: press “Connect account” in the settings.")
    return oauth.refresh(app, use, refresh_token)


def _rotated_meanwhile(connection_id: int, used_refresh: str, refused: str) -> str:
    """Return the access token another process stored with a new refresh token since we read ours, or ""."""
    with Session(db.engine) as fresh:
        now = fresh.get(OAuthConnection, connection_id)
        if now is None or now.refresh_token_encrypted == used_refresh:
            return ""
        token = credential_box().open(now.access_token_encrypted)
        return "" if token == refused else token


def _expiring(connection: OAuthConnection) -> bool:
    expires, obtained = connection.access_token_expires_at, connection.access_token_obtained_at
    if expires is None:
        return True
    # Short-lived tokens (minutes) are refreshed in their last fifth, long ones a minute before.
    margin = min(REFRESH_MARGIN, (expires - obtained) / 5) if obtained else REFRESH_MARGIN
    return utcnow() >= expires - margin


def _store(connection: OAuthConnection, tokens: Tokens) -> None:
    box = credential_box()
    connection.access_token_encrypted = box.seal(tokens.access_token)
    connection.access_token_expires_at = tokens.expires_at
    connection.access_token_obtained_at = utcnow()
    if tokens.refresh_token:  # a provider that rotates sends a new one; the others keep the old
        connection.refresh_token_encrypted = box.seal(tokens.refresh_token)


def _forget_tokens(connection: OAuthConnection) -> None:
    connection.refresh_token_encrypted = connection.access_token_encrypted = ""
    connection.access_token_expires_at = connection.access_token_obtained_at = connection.connected_at = None
    connection.account = ""


# --- credential health ------------------------------------------------------------------------

def record_success(owner: Owner) -> bool:
    """Note a successful sign-in; close an open incident with one mail to the admins (caller commits).

    Return whether anything changed: a run of successes is written about once a minute, not on every use.
    """
    now = utcnow()
    if (not owner.sign_in_failures and owner.sign_in_incident_at is None and owner.sign_in_ok_at is not None
            and now - owner.sign_in_ok_at < SUCCESS_NOTED_EVERY):
        return False
    owner.sign_in_ok_at = now
    owner.sign_in_failures = 0
    if owner.sign_in_incident_at is not None:
        owner.sign_in_incident_at = None
        log.warning("%s: signing in works again", owner_key(owner))
        _tell_admins(owner, recovered=True)
    return True


def record_failure(owner: Owner, diagnosis: str, *, certain: bool = False) -> None:
    """Note a refused sign-in; open an incident (banner, one admin mail) when it persists (caller commits).

    `certain`: the failure needs a person (a refused refresh, a send refused for its login), so the
    incident opens at once instead of after a few failures in a row.
    """
    owner.sign_in_failed_at = utcnow()
    owner.sign_in_error = diagnosis
    owner.sign_in_failures = (owner.sign_in_failures or 0) + 1
    if owner.sign_in_incident_at is None and (certain or owner.sign_in_failures >= FAILURES_FOR_INCIDENT):
        owner.sign_in_incident_at = utcnow()
        log.warning("%s: signing in fails: %s", owner_key(owner), diagnosis)
        _tell_admins(owner, recovered=False)


def record_poll(mailbox: Mailbox, ok: bool, error_kind: str, error: str) -> None:
    """Note how a poll's sign-in went: a poll that ran signed in; "auth" and "oauth" failures did not."""
    if ok:
        record_success(mailbox)
    elif error_kind in ("auth", "oauth"):
        # A refused token refresh needs a person now; a refused login may be the server's hiccup.
        record_failure(mailbox, error, certain=error_kind == "oauth")


def incidents() -> list[Owner]:
    """Return Outbound (SMTP) and the mailboxes whose sign-in is failing now."""
    smtp = db.session.scalars(db.select(SmtpConfig).where(SmtpConfig.sign_in_incident_at.is_not(None)))
    boxes = db.session.scalars(db.select(Mailbox).where(Mailbox.sign_in_incident_at.is_not(None))
                               .order_by(Mailbox.id))
    return [*smtp, *boxes]


def describe(owner: Owner) -> str:
    """Name the owner the way the console does: Outbound (SMTP) or the mailbox “Name”."""
    return f"the mailbox “{owner.name}”" if isinstance(owner, Mailbox) else "Outbound (SMTP)"


def _tell_admins(owner: Owner, *, recovered: bool) -> None:
    from helpdesk.services import outbox

    admins = list(db.session.scalars(db.select(Agent.email).where(Agent.role == "admin", Agent.active.is_(True))))
    if not admins:
        return
    what = describe(owner)
    base = current_app.config["PUBLIC_BASE_URL"]
    where = f"{base}/admin/settings/email/" + (f"inbound/{owner.id}" if isinstance(owner, Mailbox) else "outbound")
    if recovered:
        subject = f"Signing in works again: {what}"
        text = f"The helpdesk signs in to {what} again. Mail that waited meanwhile is being processed.\n\n{where}\n"
    else:
        subject = f"Action needed: the helpdesk cannot sign in to {what}"
        text = (f"The helpdesk cannot sign in to {what}:\n\n{owner.sign_in_error}\n\n"
                "No mail is lost: it waits on the mail server (or in the outbox) until signing in works. "
                f"Open the settings to fix it:\n{where}\n\nYou get one more mail when it works again.\n")
    outbox.queue_mail(kind="sign_in_alert", to=admins, rendered=RenderedMail(subject, text, "", ()))
