"""Tickets, their comment thread, attachments, macros and SLA targets."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from helpdesk.extensions import db
from helpdesk.models._time import utcnow
from helpdesk.models.people import Agent, Contact, Customer

STATUSES = ("new", "open", "pending", "resolved", "closed")
OPEN_STATUSES = ("new", "open", "pending")
PRIORITIES = ("low", "normal", "high", "urgent")
# The human ticket number is derived from the id: no counter to keep in step.
TICKET_NUMBER_OFFSET = 1000


class Ticket(db.Model):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_status_created", "status", "created_at"),
                      Index("ix_tickets_created", "created_at", "id"),
                      Index("ix_tickets_customer_created", "customer_id", "created_at", "id"),
                      Index("ix_tickets_assignee_created", "assignee_id", "created_at", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    description_html: Mapped[str | None] = mapped_column(Text)  # sanitised, from a mail's HTML part
    status: Mapped[str] = mapped_column(String(20), default="new")
    priority: Mapped[str] = mapped_column(String(20), default="normal")
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(20), default="web")
    message_id: Mapped[str | None] = mapped_column(String(998))  # the mail that opened it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    first_response_due_at: Mapped[datetime | None]
    resolution_due_at: Mapped[datetime | None]
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    # One SLA alert per breach: these remember which breaches were already announced.
    first_response_breach_alerted_at: Mapped[datetime | None]
    resolution_breach_alerted_at: Mapped[datetime | None]

    contact: Mapped[Contact | None] = relationship()
    customer: Mapped[Customer | None] = relationship()
    assignee: Mapped[Agent | None] = relationship()
    comments: Mapped[list[Comment]] = relationship(
        back_populates="ticket", order_by="Comment.created_at, Comment.id", cascade="all, delete-orphan")
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="ticket", order_by="Attachment.id", cascade="all, delete-orphan")

    @property
    def number(self) -> int:
        return self.id + TICKET_NUMBER_OFFSET

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @staticmethod
    def id_from_number(number: int) -> int:
        return number - TICKET_NUMBER_OFFSET


class Comment(db.Model):
    """One entry of a ticket's thread: a public reply or an internal note."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    public: Mapped[bool] = mapped_column(default=True)
    author_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    author_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)  # sanitised
    full_text: Mapped[str | None] = mapped_column(Text)  # the untrimmed mail body, quotes and all
    source: Mapped[str] = mapped_column(String(20), default="web")
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="comments")
    author_agent: Mapped[Agent | None] = relationship()
    author_contact: Mapped[Contact | None] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(back_populates="comment", order_by="Attachment.id")

    @property
    def author_name(self) -> str:
        if self.author_agent:
            return self.author_agent.name
        if self.author_contact:
            return self.author_contact.display_name
        return "System"


class Attachment(db.Model):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255), index=True)
    content_id: Mapped[str | None] = mapped_column(String(255))  # for inline cid: images
    inline: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="attachments")
    comment: Mapped[Comment | None] = relationship(back_populates="attachments")


class TicketEvent(db.Model):
    """A record of what happened to a ticket (created, replied, resolved, ...), shown in its history."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    agent: Mapped[Agent | None] = relationship()


class Macro(db.Model):
    """An agent's canned reply with `$variable` placeholders."""

    __tablename__ = "macros"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SlaPolicy(db.Model):
    """Response and resolution targets for one ticket priority, in minutes."""

    __tablename__ = "sla_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    priority: Mapped[str] = mapped_column(String(20), unique=True)
    first_response_minutes: Mapped[int]
    resolution_minutes: Mapped[int]


