"""Fixtures of the security tests: a world with one of everything a route can name."""
from __future__ import annotations

import pytest

from helpdesk.extensions import db


@pytest.fixture
def world(app, make_agent, make_ticket):
    """One of everything a route can name; returns the values for the rules' placeholders."""
    from helpdesk.models import Customer, InboundMail, Macro, Mailbox, OutboundMessage
    from helpdesk.services import invitations
    from helpdesk.services.attachments import add_attachment
    from helpdesk.services.ingest import ingest_mail

    make_agent("admin@example.test", role="admin", name="Ada Admin")
    make_agent("agent@example.test")
    target = make_agent("other@example.test", name="Otto Other")
    ticket = make_ticket()
    attachment = add_attachment(ticket, b"hello", filename="hello.txt", content_type="text/plain")
    macro = Macro(name="Thanks", body="Thank you, $contact_name.")
    customer = Customer(name="Acme")
    mailbox = Mailbox(name="Support", host="", enabled=False)
    db.session.add_all([macro, customer, mailbox])
    invitation = invitations.invite("new@example.test", "agent", None)
    db.session.commit()
    # With a loop limit of 0 the first mail from a sender is a loop: a quarantined mail with its raw bytes.
    limit, app.config["INBOUND_LOOP_LIMIT"] = app.config["INBOUND_LOOP_LIMIT"], 0
    ingest_mail(b"From: Robot <robot@customer.test>\r\nTo: support@example.test\r\nSubject: Alarm\r\n"
                b"Message-ID: <alarm@customer.test>\r\n\r\nBeep.\r\n")
    app.config["INBOUND_LOOP_LIMIT"] = limit
    inbound = db.session.scalar(db.select(InboundMail).filter_by(outcome="quarantined"))
    outbound = db.session.scalar(db.select(OutboundMessage).order_by(OutboundMessage.id))
    outbound.raw_sent = b"Subject: Invitation\r\n\r\nHello\r\n"
    db.session.commit()
    assert inbound is not None and outbound is not None
    return {"ticket_id": ticket.id, "attachment_id": attachment.id, "macro_id": macro.id,
            "contact_id": ticket.contact_id, "customer_id": customer.id, "agent_id": target.id,
            "mailbox_id": mailbox.id, "inbound_id": inbound.id, "outbound_id": outbound.id,
            "token": invitations.make_token(invitation), "filename": "helpdesk.css", "kind": "new_ticket"}
