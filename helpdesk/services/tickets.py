"""Ticket use cases: open, reply, note, assign, change status, resolve; SLA due times."""
from __future__ import annotations

from datetime import datetime, timedelta

from helpdesk import events
from helpdesk.extensions import db
from helpdesk.models import Agent, Attachment, Comment, Contact, Customer, SlaPolicy, Ticket
from helpdesk.models._time import utcnow
from helpdesk.models.tickets import PRIORITIES, STATUSES
from helpdesk.services.mail_settings import MailSettings


class TicketError(ValueError):
    """A ticket change that does not make sense (unknown status, empty reply, ...)."""


def open_ticket(*, title: str, description: str = "", contact: Contact | None = None,
                customer: Customer | None = None, priority: str = "normal", source: str = "web",
                agent: Agent | None = None, description_html: str | None = None,
                message_id: str | None = None, mailbox_id: int | None = None,
                notify: bool = True, settings: MailSettings | None = None) -> Ticket:
    """Create a ticket, set its SLA due times and emit `ticket-created` (notify=False: no confirmation mail).

    `settings` are those a run of writes read once (a poll); None reads each when needed.
    """
    if priority not in PRIORITIES:
        raise TicketError(f"Unknown priority {priority!r}")
    customer = customer or (contact.customer if contact else None)
    now = utcnow()
    first_response_due, resolution_due = sla_due_times(priority, now, settings)
    ticket = Ticket(
        title=(title.strip() or "(no subject)")[:500], description=description, description_html=description_html,
        contact=contact, customer=customer, priority=priority, source=source, message_id=message_id,
        mailbox_id=mailbox_id, status="new", created_at=now, updated_at=now,
        first_response_due_at=first_response_due, resolution_due_at=resolution_due)
    db.session.add(ticket)
    db.session.flush()  # its number is its id: the history and the confirmation mail name it
    events.emit("ticket-created", ticket, agent=agent, notify=notify, settings=settings)
    return ticket


def apply_sla(ticket: Ticket) -> None:
    """Set the first-response and resolution due times from the priority's SLA policy."""
    first_response_due, resolution_due = sla_due_times(ticket.priority, ticket.created_at or utcnow())
    if ticket.first_responded_at is None or first_response_due is None:
        ticket.first_response_due_at = first_response_due
    ticket.resolution_due_at = resolution_due


def sla_due_times(priority: str, start: datetime,
                  settings: MailSettings | None = None) -> tuple[datetime | None, datetime | None]:
    """Return when the first response and the resolution are due for a ticket opened at `start`."""
    if settings is not None:
        targets = settings.sla_targets.get(priority)
    else:
        policy = db.session.scalar(db.select(SlaPolicy).filter_by(priority=priority))
        targets = (policy.first_response_minutes, policy.resolution_minutes) if policy is not None else None
    if targets is None:
        return None, None
    return start + timedelta(minutes=targets[0]), start + timedelta(minutes=targets[1])


def add_comment(ticket: Ticket, body: str, *, public: bool = True, agent: Agent | None = None,
                contact: Contact | None = None, source: str = "web", body_html: str | None = None,
                full_text: str | None = None, message_id: str | None = None) -> Comment:
    """Add a reply or note to the thread; agents' public replies emit `public-reply-posted`."""
    if not body.strip() and not body_html:
        raise TicketError("The reply is empty.")
    comment = Comment(ticket=ticket, body_text=body, body_html=body_html, full_text=full_text,
                      public=public, author_agent=agent, author_contact=contact, source=source,
                      message_id=message_id, created_at=utcnow())
    db.session.add(comment)
    ticket.updated_at = utcnow()
    if agent is not None and public:
        if ticket.first_responded_at is None:
            ticket.first_responded_at = utcnow()
        if ticket.status == "new":
            ticket.status = "open"
        db.session.flush()
        events.emit("public-reply-posted", ticket, agent=agent, comment=comment)
    elif contact is not None and ticket.status in ("resolved", "closed", "pending"):
        reopened = ticket.status in ("resolved", "closed")
        ticket.status = "open"
        ticket.resolved_at = None
        db.session.flush()
        if reopened:
            events.emit("ticket-reopened", ticket, detail="The contact replied")
    else:
        db.session.flush()
    return comment


def set_status(ticket: Ticket, status: str, agent: Agent | None = None) -> None:
    """Move a ticket to another status; resolving emits `ticket-resolved`."""
    if status not in STATUSES:
        raise TicketError(f"Unknown status {status!r}")
    if status == ticket.status:
        return
    previous, ticket.status = ticket.status, status
    if status in ("resolved", "closed"):
        ticket.resolved_at = ticket.resolved_at or utcnow()
    else:
        ticket.resolved_at = None
    db.session.flush()
    if status == "resolved":
        events.emit("ticket-resolved", ticket, agent=agent)
    else:
        events.emit("status-changed", ticket, agent=agent, detail=f"{previous} → {status}")


def assign(ticket: Ticket, assignee: Agent | None, agent: Agent | None = None) -> None:
    """Give the ticket to an agent (or nobody)."""
    ticket.assignee = assignee
    db.session.flush()
    events.emit("assigned", ticket, agent=agent, detail=assignee.name if assignee else "nobody")


def set_priority(ticket: Ticket, priority: str, agent: Agent | None = None) -> None:
    """Change the priority and recompute the SLA due times."""
    if priority not in PRIORITIES:
        raise TicketError(f"Unknown priority {priority!r}")
    ticket.priority = priority
    apply_sla(ticket)
    db.session.flush()
    events.emit("priority-changed", ticket, agent=agent, detail=priority)


def merge(source: Ticket, into: Ticket, agent: Agent | None = None) -> None:
    """Move a duplicate ticket's thread and files into another ticket, then remove the duplicate."""
    if source.id == into.id:
        raise TicketError("A ticket cannot be merged into itself.")
    number = source.number
    db.session.execute(db.update(Comment).where(Comment.ticket_id == source.id).values(ticket_id=into.id)
                       .execution_options(synchronize_session=False))
    db.session.execute(db.update(Attachment).where(Attachment.ticket_id == source.id).values(ticket_id=into.id)
                       .execution_options(synchronize_session=False))
    db.session.expire(source)
    db.session.delete(source)
    db.session.flush()
    db.session.expire(into, ["comments", "attachments"])
    events.emit("merged", into, agent=agent, detail=f"#{number} merged into this ticket")
