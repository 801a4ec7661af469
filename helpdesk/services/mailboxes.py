"""Support mailboxes: their settings as admins edit them, and the IMAP settings a poll uses."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSettings, token_failure
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail import route
from helpdesk.models import Agent, InboundMail, Mailbox, SmtpConfig
from helpdesk.models._time import utcnow
from helpdesk.services import credential_box, sign_in

log = logging.getLogger(__name__)

DEFAULT_NAME = "Support"
POLL_TIMEOUT = 30.0  # seconds per IMAP command while polling
TEST_TIMEOUT = 10.0  # "Test IMAP connection" runs inside a request: keep it short


@dataclass
class MailboxValues:
    """What the settings screen edits on a mailbox (everything but the password)."""

    name: str = DEFAULT_NAME
    host: str = ""
    port: int = 993
    security: str = "ssl"
    username: str = ""
    folder: str = "INBOX"
    poll_interval: int = 120
    enabled: bool = False
    after_processing: str = "seen"
    move_to_folder: str = ""
    reply_from_address: str = ""
    verify_tls: bool = True


# Changing any of these points the checkpoint at another folder: its UIDs mean nothing there.
_WHERE_FIELDS = ("host", "username", "folder")


def list_mailboxes() -> list[Mailbox]:
    """Return every mailbox, oldest first."""
    return list(db.session.scalars(db.select(Mailbox).order_by(Mailbox.id)))


def get_mailbox(mailbox_id: int) -> Mailbox | None:
    """Return the mailbox with this id, or None."""
    return db.session.get(Mailbox, mailbox_id)


def ensure_default_mailbox() -> Mailbox:
    """Return the first mailbox, creating a disabled "Support" one when there is none (caller commits)."""
    first = db.session.scalar(db.select(Mailbox).order_by(Mailbox.id).limit(1))
    if first is None:
        first = Mailbox(name=DEFAULT_NAME, host="", enabled=False)
        db.session.add(first)
        db.session.flush()
    return first


def save_mailbox(mailbox: Mailbox | None, values: MailboxValues, password: str, agent: Agent | None) -> Mailbox:
    """Store the edited settings; a blank password keeps the stored one for the same host and username.

    The caller commits.
    """
    if mailbox is None:
        mailbox = Mailbox()
        db.session.add(mailbox)
    moved = mailbox.id is not None and any(
        (getattr(mailbox, name) or "") != (getattr(values, name) or "") for name in _WHERE_FIELDS)
    # A stored password belongs to its server and account: a new host or username drops it.
    new_account = mailbox.id is not None and any(
        (getattr(mailbox, name) or "").lower() != (getattr(values, name) or "").lower() for name in ("host", "username"))
    for name, value in vars(values).items():
        setattr(mailbox, name, value)
    if password:
        mailbox.password_encrypted = credential_box().seal(password)
    elif new_account:
        mailbox.password_encrypted = ""
    if moved:
        mailbox.uidvalidity = None
        mailbox.last_uid = 0
    mailbox.updated_at = utcnow()
    mailbox.updated_by_id = agent.id if agent is not None else None
    db.session.flush()
    if not mailbox.verify_tls:
        # Never the password: who switched the check off, and for which server.
        log.warning("TLS certificate verification is off for mailbox %s (%s:%s, user %r), saved by agent %s",
                    mailbox.id, mailbox.host, mailbox.port, mailbox.username, mailbox.updated_by_id)
    return mailbox


def delete_mailbox(mailbox: Mailbox) -> None:
    """Remove a mailbox and its OAuth app and tokens; its inbound log rows stay, without the link (caller commits)."""
    # SQLite enforces ON DELETE SET NULL only with foreign keys switched on; do it explicitly.
    db.session.execute(db.update(InboundMail).where(InboundMail.mailbox_id == mailbox.id).values(mailbox_id=None))
    if mailbox.oauth_connection is not None:
        db.session.delete(mailbox.oauth_connection)
    db.session.delete(mailbox)


def stored_password(mailbox: Mailbox) -> str:
    """Return the mailbox's decrypted password (raises CredentialError when it cannot be read)."""
    return credential_box().open(mailbox.password_encrypted or "")


def imap_settings(mailbox: Mailbox, *, timeout: float = POLL_TIMEOUT) -> ImapSettings:
    """Return how to reach this mailbox and sign in: its decrypted password, or a valid OAuth token.

    Raises ImapError (kind "oauth") when OAuth is chosen and no token can be had.
    """
    if mailbox.auth_method != "oauth2":
        return settings_from_values(mailbox_values(mailbox), stored_password(mailbox), timeout=timeout)
    try:
        signed = sign_in.bearer(mailbox)
    except OAuthError as exc:
        raise token_failure(exc) from exc
    settings = settings_from_values(mailbox_values(mailbox), "", timeout=timeout)
    for name, value in signed.items():
        setattr(settings, name, value)
    return settings


def settings_from_values(values: MailboxValues, password: str, *, timeout: float = TEST_TIMEOUT) -> ImapSettings:
    """Return IMAP settings for values not saved yet (Test IMAP connection, Load folders)."""
    return ImapSettings(
        host=values.host, port=values.port, security=values.security, username=values.username,
        password=password, verify_tls=values.verify_tls, ca_file=current_app.config.get("TLS_CA_FILE") or None,
        timeout=timeout)


def password_for_test(mailbox: Mailbox | None, values: MailboxValues, typed: str) -> str:
    """Return the password a test should use: the typed one, else the stored one for the same server and user.

    The stored password is only sent to the host and user it was saved for, so a changed host
    in an unsaved form cannot be used to read it out.
    """
    if typed or mailbox is None or not mailbox.password_encrypted:
        return typed
    if (mailbox.host or "").lower() != values.host.lower() or mailbox.username != values.username:
        return ""
    return stored_password(mailbox)


def mailbox_values(mailbox: Mailbox) -> MailboxValues:
    """Return the editable settings of a stored mailbox."""
    return MailboxValues(**{name: getattr(mailbox, name) for name in MailboxValues.__dataclass_fields__})


def own_addresses() -> frozenset[str]:
    """Return the helpdesk's own From addresses and mailbox logins, lowercased: mail to or from them loops."""
    smtp = db.session.scalars(db.select(SmtpConfig.from_address))
    boxes = db.session.execute(db.select(Mailbox.reply_from_address, Mailbox.username)).all()
    return route.own_addresses([*smtp, *(a for row in boxes for a in row)])
