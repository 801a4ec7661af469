"""Mail configuration and traffic: SMTP settings, mailboxes, templates, outbox, inbound log."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from helpdesk.extensions import db
from helpdesk.models._time import utcnow
from helpdesk.models.people import Agent
from helpdesk.models.tickets import Comment, Ticket


AUTH_METHODS = ("password", "oauth2")


class OAuthConnection(db.Model):
    """An app registration at an OAuth 2.0 provider and the tokens it holds for one mail account.

    Secrets and tokens are stored encrypted; `account` is whom the tokens belong to (the login).
    """

    __tablename__ = "oauth_connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), default="microsoft")  # microsoft | google | custom
    flow: Mapped[str] = mapped_column(String(30), default="authorization_code")  # | client_credentials
    client_id: Mapped[str] = mapped_column(String(255), default="")
    client_secret_encrypted: Mapped[str] = mapped_column(Text, default="")
    tenant: Mapped[str] = mapped_column(String(100), default="organizations")
    authorize_url: Mapped[str] = mapped_column(String(500), default="")
    token_url: Mapped[str] = mapped_column(String(500), default="")
    scopes: Mapped[str] = mapped_column(String(1000), default="")
    account: Mapped[str] = mapped_column(String(254), default="")
    refresh_token_encrypted: Mapped[str] = mapped_column(Text, default="")
    access_token_encrypted: Mapped[str] = mapped_column(Text, default="")
    access_token_expires_at: Mapped[datetime | None]
    access_token_obtained_at: Mapped[datetime | None]
    connected_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class SignInHealth:
    """How signing in to a mail server has gone lately: the credential health an admin sees."""

    auth_method: Mapped[str] = mapped_column(String(20), default="password")  # password | oauth2
    sign_in_ok_at: Mapped[datetime | None]  # last successful sign-in
    sign_in_failed_at: Mapped[datetime | None]
    sign_in_error: Mapped[str] = mapped_column(Text, default="")
    sign_in_failures: Mapped[int] = mapped_column(default=0)  # in a row
    # Set while sign-in is failing for good: the console shows a banner and admins got one mail.
    sign_in_incident_at: Mapped[datetime | None]


class SmtpConfig(SignInHealth, db.Model):
    """The one outbound SMTP server (a single row); the password is stored encrypted."""

    __tablename__ = "smtp_config"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(253), default="")
    port: Mapped[int] = mapped_column(default=587)
    security: Mapped[str] = mapped_column(String(20), default="starttls")
    username: Mapped[str] = mapped_column(String(254), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    from_address: Mapped[str] = mapped_column(String(254), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    verify_tls: Mapped[bool] = mapped_column(default=True)
    timeout: Mapped[int] = mapped_column(default=15)
    updated_at: Mapped[datetime | None]
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))

    oauth_connection_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_connections.id", ondelete="SET NULL"))

    updated_by: Mapped[Agent | None] = relationship()
    oauth_connection: Mapped[OAuthConnection | None] = relationship()


class Mailbox(SignInHealth, db.Model):
    """A support mailbox polled over IMAP, with its checkpoint and last poll status."""

    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="Support")
    host: Mapped[str] = mapped_column(String(253), default="")
    port: Mapped[int] = mapped_column(default=993)
    security: Mapped[str] = mapped_column(String(20), default="ssl")
    username: Mapped[str] = mapped_column(String(254), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    folder: Mapped[str] = mapped_column(String(500), default="INBOX")
    verify_tls: Mapped[bool] = mapped_column(default=True)
    poll_interval: Mapped[int] = mapped_column(default=120)  # seconds
    enabled: Mapped[bool] = mapped_column(default=False)
    after_processing: Mapped[str] = mapped_column(String(20), default="seen")  # seen | move | delete
    move_to_folder: Mapped[str] = mapped_column(String(500), default="")
    reply_from_address: Mapped[str] = mapped_column(String(254), default="")
    uidvalidity: Mapped[int | None]
    last_uid: Mapped[int] = mapped_column(default=0)
    last_poll_at: Mapped[datetime | None]
    last_poll_ok: Mapped[bool | None]
    last_poll_error: Mapped[str] = mapped_column(Text, default="")
    last_poll_count: Mapped[int] = mapped_column(default=0)
    # The poll lock: one poll per mailbox at a time, across workers; it expires by itself.
    locked_until: Mapped[datetime | None]
    locked_by: Mapped[str] = mapped_column(String(100), default="")
    oauth_connection_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_connections.id", ondelete="SET NULL"))
    # The IMAP IDLE watch's own account of itself: watching | reconnecting | polling (with the reason).
    push_state: Mapped[str] = mapped_column(String(20), default="")
    push_since: Mapped[datetime | None]
    push_note: Mapped[str] = mapped_column(Text, default="")
    push_seen_at: Mapped[datetime | None]  # the watch's last sign of life
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))

    oauth_connection: Mapped[OAuthConnection | None] = relationship()


class EmailTemplate(db.Model):
    """An admin-edited notification text; rows exist for every kind from the first migration."""

    __tablename__ = "email_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), unique=True)
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime | None]
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))


OUTBOUND_STATUSES = ("queued", "sending", "sent", "failed", "bounced")


class OutboundMessage(db.Model):
    """A mail in the outbox: written first, sent by a job, never lost between the two."""

    __tablename__ = "outbound_messages"
    __table_args__ = (Index("ix_outbound_messages_status_created", "status", "created_at"),
                      Index("ix_outbound_messages_recipient_created", "recipient", "created_at"),
                      Index("ix_outbound_messages_created", "created_at", "id"),
                      # Retention reads only the mails whose bytes are still kept.
                      Index("ix_outbound_messages_raw_kept", "created_at", "raw_size",
                            sqlite_where=text("raw_size IS NOT NULL"), postgresql_where=text("raw_size IS NOT NULL")))

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"), index=True)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(40))  # new_ticket | agent_reply | resolved | sla_breach | agent_invite | test
    automatic: Mapped[bool] = mapped_column(default=False)
    recipient: Mapped[str] = mapped_column(String(254))  # first To address, for the per-recipient limit
    to: Mapped[str] = mapped_column(Text)  # comma-separated addresses
    cc: Mapped[str] = mapped_column(Text, default="")
    from_address: Mapped[str] = mapped_column(String(254), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    subject: Mapped[str] = mapped_column(String(998))
    text_body: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON object of extra headers
    attachment_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of Attachment ids
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    server_reply: Mapped[str] = mapped_column(Text, default="")
    raw_sent: Mapped[bytes | None] = mapped_column(LargeBinary)  # the exact mail as sent
    raw_size: Mapped[int | None]  # its length while it is kept: retention sums these, not the bytes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


INBOUND_OUTCOMES = ("created", "appended", "ignored", "quarantined")


class InboundMail(db.Model):
    """Exactly one recorded outcome per received mail; the dedupe key stops duplicates."""

    __tablename__ = "inbound_mails"
    __table_args__ = (UniqueConstraint("channel", "dedupe_key", name="uq_inbound_mails_channel_dedupe"),
                      Index("ix_inbound_mails_outcome_created", "outcome", "created_at"),
                      Index("ix_inbound_mails_sender_created", "sender", "created_at"),
                      Index("ix_inbound_mails_created", "created_at", "id"),
                      Index("ix_inbound_mails_mailbox_created", "mailbox_id", "created_at", "id"),
                      Index("ix_inbound_mails_message_id", "message_id"),
                      Index("ix_inbound_mails_raw_kept", "created_at", "outcome", "size", "raw_key",
                            sqlite_where=text("raw_key IS NOT NULL"), postgresql_where=text("raw_key IS NOT NULL")))

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))  # "mailbox:<id>" or "cli"
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    uid: Mapped[int | None]
    uidvalidity: Mapped[int | None]
    dedupe_key: Mapped[str] = mapped_column(String(998))  # Message-ID, or sha256 of the raw mail
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str] = mapped_column(String(254), default="")
    subject: Mapped[str] = mapped_column(String(998), default="")
    size: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"), index=True)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="SET NULL"))
    raw_key: Mapped[str | None] = mapped_column(String(255), index=True)  # raw bytes kept when quarantined
    processing_ms: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    mailbox: Mapped[Mailbox | None] = relationship()
    ticket: Mapped[Ticket | None] = relationship()
    comment: Mapped[Comment | None] = relationship()
