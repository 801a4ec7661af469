"""Ticket events go through here: recorded in the ticket's history, then announced to listeners."""
from __future__ import annotations

from blinker import Namespace

from helpdesk.extensions import db
from helpdesk.models import Agent, Ticket, TicketEvent

_signals = Namespace()
ticket_created = _signals.signal("ticket-created")
public_reply_posted = _signals.signal("public-reply-posted")
ticket_resolved = _signals.signal("ticket-resolved")
ticket_reopened = _signals.signal("ticket-reopened")

SIGNALS = {s.name: s for s in (ticket_created, public_reply_posted, ticket_resolved, ticket_reopened)}


def emit(name: str, ticket: Ticket, agent: Agent | None = None, detail: str = "", **data) -> None:
    """Record event `name` on the ticket and tell whoever listens (notifications hang here)."""
    if ticket.id is None:
        db.session.flush()  # the event row refers to the ticket
    db.session.add(TicketEvent(ticket_id=ticket.id, kind=name, agent=agent, detail=detail))
    signal = SIGNALS.get(name)
    if signal is not None:
        signal.send(ticket, agent=agent, **data)
