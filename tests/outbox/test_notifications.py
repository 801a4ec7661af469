"""Ticket events become mail to the contact, through the outbox, to a real SMTP server."""
from __future__ import annotations

import io

from helpdesk.extensions import db
from helpdesk.models import Contact, OutboundMessage, Ticket
from helpdesk.services import tickets
from helpdesk.services.email_templates import save_template


def outbound(kind: str | None = None) -> list[OutboundMessage]:
    query = db.select(OutboundMessage).order_by(OutboundMessage.id)
    return list(db.session.scalars(query.filter_by(kind=kind) if kind else query))


def test_new_ticket_is_confirmed_to_the_contact(app, smtp, make_ticket):
    ticket = make_ticket(title="Printer on fire", notify=True)
    [received] = smtp.received
    mail = received.message
    assert received.rcpt_tos == ["jane@customer.test"]
    assert mail["Subject"] == f"[#{ticket.number}] We received your request: Printer on fire"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert f"ticket #{ticket.number}" in mail.get_body(("plain",)).get_content()
    assert outbound("new_ticket")[0].status == "sent"


def test_a_new_tickets_confirmation_looks_up_no_thread(app, smtp, make_ticket, statements_asked):
    # A ticket just opened has no mail of the customer's after the one that opened it (here none):
    # the confirmation's threading is known without asking the database.
    with statements_asked() as statements:
        ticket = make_ticket(title="Called us", notify=True)

    assert [s for s in statements if "FROM comments" in s] == []
    [received] = smtp.received
    assert received.message["In-Reply-To"] is None and received.message["References"] is None
    assert outbound("new_ticket")[0].ticket_id == ticket.id


def test_ticket_from_an_automatic_mail_gets_no_confirmation(app, smtp, make_ticket):
    # Ingest opens tickets from auto-replies and bounces with notify=False.
    make_ticket(notify=False)
    assert smtp.received == [] and outbound() == []


def test_ticket_without_contact_gets_no_confirmation(app, smtp):
    tickets.open_ticket(title="Noted by phone", contact=None)
    db.session.commit()
    assert smtp.received == [] and outbound() == []


def test_disabled_template_sends_nothing(app, smtp, make_ticket):
    save_template("new_ticket", "Got it", "Hello", enabled=False, agent=None)
    db.session.commit()
    make_ticket(notify=True)
    assert smtp.received == [] and outbound() == []


def customer_thread(make_ticket) -> Ticket:
    """A ticket opened by a customer's mail, with a follow-up mail from them."""
    ticket = make_ticket(message_id="<first.1@customer.test>", source="email")
    contact = db.session.scalar(db.select(Contact).filter_by(email="jane@customer.test"))
    tickets.add_comment(ticket, "Any news?", contact=contact, source="email", message_id="<second.2@customer.test>")
    db.session.commit()
    return ticket


def test_agent_reply_threads_under_the_customers_latest_mail_with_attachments(app, smtp, make_ticket,
                                                                              agent_client):
    ticket = customer_thread(make_ticket)
    pdf = b"%PDF-1.4 not really a pdf \x00\xff"
    response = agent_client.auth.post(f"/tickets/{ticket.id}/comments", data={
        "visibility": "public", "body": "We replaced the toner.\nTry again, please.",
        "files": [(io.BytesIO(pdf), "report.pdf", "application/pdf")],
    }, content_type="multipart/form-data")
    assert response.status_code == 302

    [received] = smtp.received
    mail = received.message
    assert mail["In-Reply-To"] == "<second.2@customer.test>"
    assert mail["References"].split() == ["<first.1@customer.test>", "<second.2@customer.test>"]
    assert mail["Subject"] == f"[#{ticket.number}] Re: Printer on fire"
    # A person wrote it: autoresponders may answer, so no Auto-Submitted.
    assert mail["Auto-Submitted"] is None
    assert "We replaced the toner.\r\nTry again, please." in mail.get_body(("plain",)).get_content()
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    [row] = outbound("agent_reply")
    assert row.automatic is False and row.comment_id is not None and row.status == "sent"


def test_internal_note_sends_nothing(app, smtp, make_ticket, make_agent):
    ticket = make_ticket()
    tickets.add_comment(ticket, "Customer is grumpy", public=False, agent=make_agent())
    db.session.commit()
    assert smtp.received == [] and outbound() == []


def test_resolving_sends_the_resolution_mail_in_the_thread(app, smtp, make_ticket, make_agent):
    ticket = customer_thread(make_ticket)
    tickets.set_status(ticket, "resolved", agent=make_agent())
    db.session.commit()
    [received] = smtp.received
    mail = received.message
    assert mail["Subject"] == f"[#{ticket.number}] Resolved: Printer on fire"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["In-Reply-To"] == "<second.2@customer.test>"
    # Closing without resolving says nothing.
    tickets.set_status(ticket, "open")
    tickets.set_status(ticket, "closed")
    db.session.commit()
    assert len(smtp.received) == 1


def test_connecting_twice_sends_one_mail(app, smtp, make_ticket):
    from helpdesk import create_app, notifications

    create_app(dict(app.config))
    notifications.connect()
    make_ticket(notify=True)
    assert len(smtp.received) == 1
