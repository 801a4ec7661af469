"""SLA breach alerts: a recurring sweep tells agents once about each target a ticket missed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update

from helpdesk import events
from helpdesk.extensions import db
from helpdesk.models import Agent, Ticket
from helpdesk.models._time import utcnow
from helpdesk.models.tickets import OPEN_STATUSES
from helpdesk.services import outbox
from helpdesk.services.email_templates import render_notification
from helpdesk.services.placeholders import ticket_values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    label: str  # what $sla_target says
    due: str  # Ticket column names
    done: str
    alerted: str


TARGETS = (
    _Target("first response", "first_response_due_at", "first_responded_at", "first_response_breach_alerted_at"),
    _Target("resolution", "resolution_due_at", "resolved_at", "resolution_breach_alerted_at"),
)


def sweep(now: datetime | None = None) -> int:
    """Alert the assignee (or every active agent) about each newly missed SLA target; return the count."""
    now = now or utcnow()
    alerts = 0
    for target in TARGETS:
        due, done, alerted = (getattr(Ticket, name) for name in (target.due, target.done, target.alerted))
        ids = db.session.scalars(
            db.select(Ticket.id).where(Ticket.status.in_(OPEN_STATUSES), due.is_not(None), due <= now,
                                       done.is_(None), alerted.is_(None)).order_by(due)).all()
        for ticket_id in ids:
            if _claim(ticket_id, target, now):
                _alert(db.session.get(Ticket, ticket_id), target)
                alerts += 1
            # One commit per breach: a failure later in the sweep does not repeat earlier alerts.
            db.session.commit()
    return alerts


def _claim(ticket_id: int, target: _Target, now: datetime) -> bool:
    """Mark the breach as announced; False when a concurrent sweep already did."""
    alerted = getattr(Ticket, target.alerted)
    result = db.session.execute(
        update(Ticket).where(Ticket.id == ticket_id, alerted.is_(None))
        # updated_at kept: announcing a breach is not a change agents made to the ticket.
        .values({alerted: now, Ticket.updated_at: Ticket.updated_at})
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _alert(ticket: Ticket, target: _Target) -> None:
    db.session.refresh(ticket)
    due_at = getattr(ticket, target.due)
    events.emit("sla-breached", ticket, detail=f"The {target.label} target was due {due_at:%Y-%m-%d %H:%M} UTC")
    for agent in _recipients(ticket):
        rendered = render_notification("sla_breach", ticket_values(
            ticket, agent, sla_target=target.label, sla_due_at=f"{due_at:%Y-%m-%d %H:%M} UTC"))
        if rendered is None:
            log.info("SLA alert for ticket %s not sent: the template is disabled", ticket.number)
            return
        outbox.queue_mail(kind="sla_breach", to=[agent.email], rendered=rendered, ticket=ticket, automatic=True)


def _recipients(ticket: Ticket) -> list[Agent]:
    if ticket.assignee is not None and ticket.assignee.active:
        return [ticket.assignee]
    return list(db.session.scalars(db.select(Agent).filter_by(active=True).order_by(Agent.id)))
