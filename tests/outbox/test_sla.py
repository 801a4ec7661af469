"""SLA breach alerts: found by the sweep, sent once per breach to the assignee or every active agent."""
from __future__ import annotations

from datetime import timedelta

from helpdesk.extensions import db
from helpdesk.models import OutboundMessage, TicketEvent
from helpdesk.models._time import utcnow
from helpdesk.services import sla, tickets


def alerts() -> list[OutboundMessage]:
    return list(db.session.scalars(db.select(OutboundMessage).filter_by(kind="sla_breach").order_by(OutboundMessage.id)))


def overdue(ticket, minutes: int = 5, target: str = "first_response_due_at"):
    setattr(ticket, target, utcnow() - timedelta(minutes=minutes))
    db.session.commit()
    return ticket


def test_first_response_breach_alerts_the_assignee_once(app, smtp, make_ticket, make_agent):
    sam = make_agent("sam@helpdesk.test", name="Sam Taylor")
    make_agent("other@helpdesk.test", name="Other Agent")
    ticket = make_ticket()
    tickets.assign(ticket, sam)
    overdue(ticket)

    assert sla.sweep() == 1
    [received] = smtp.received
    assert received.rcpt_tos == ["sam@helpdesk.test"]
    mail = received.message
    assert mail["Subject"] == f"[#{ticket.number}] SLA breached: Printer on fire"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_body(("plain",)).get_content()
    assert "Hello Sam Taylor" in body and "Target: first response" in body
    assert f"Due: {ticket.first_response_due_at:%Y-%m-%d %H:%M} UTC" in body
    assert db.session.scalar(db.select(TicketEvent).filter_by(ticket_id=ticket.id, kind="sla-breached"))

    assert sla.sweep() == 0
    assert len(smtp.received) == 1


def test_unassigned_breach_alerts_every_active_agent(app, smtp, make_ticket, make_agent):
    make_agent("a@helpdesk.test")
    make_agent("b@helpdesk.test")
    make_agent("gone@helpdesk.test").active = False
    db.session.commit()
    overdue(make_ticket())
    assert sla.sweep() == 1
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["a@helpdesk.test", "b@helpdesk.test"]


def test_each_target_is_its_own_breach(app, smtp, make_ticket, make_agent):
    make_agent("a@helpdesk.test")
    ticket = overdue(make_ticket())
    assert sla.sweep() == 1
    overdue(ticket, target="resolution_due_at")
    assert sla.sweep() == 1
    assert [m.text_body.count("Target: resolution") for m in alerts()] == [0, 1]
    assert sla.sweep() == 0


def test_no_alert_when_the_target_was_met_or_not_yet_due(app, smtp, make_ticket, make_agent):
    agent = make_agent("a@helpdesk.test")
    answered = overdue(make_ticket(title="Answered"))
    tickets.add_comment(answered, "On it", agent=agent)
    db.session.commit()
    resolved = overdue(make_ticket(title="Resolved"), target="resolution_due_at")
    tickets.set_status(resolved, "resolved")
    db.session.commit()
    future = make_ticket(title="Later")
    future.first_response_due_at = utcnow() + timedelta(hours=1)
    db.session.commit()
    smtp.received.clear()
    assert sla.sweep() == 0
    assert alerts() == []
