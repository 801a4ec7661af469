"""A mail nested thousands of levels deep still opens a ticket for its top-level sender."""
from __future__ import annotations

import json

import pytest

from helpdesk.extensions import db
from helpdesk.mail.parse import TOO_DEEP_NOTE
from helpdesk.models import InboundMail, Ticket
from helpdesk.services.ingest import ingest_mail

pytestmark = pytest.mark.usefixtures("clean_bucket")

HEAD = (b"From: Jane Doe <jane@customer.test>\r\nTo: help@example.test\r\nSubject: Printer on fire\r\n"
        b"Date: Mon, 07 Dec 2026 04:00:00 +0000\r\nMIME-Version: 1.0\r\n")


def nested_multiparts(levels: int, message_id: str) -> bytes:
    opens = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n'
                     b"--b%d\r\nContent-Type: text/plain\r\n\r\nlevel %d\r\n--b%d\r\n" % (i, i, i, i)
                     for i in range(levels))
    closes = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return (HEAD + b"Message-ID: " + message_id.encode() + b"\r\n" + opens
            + b"Content-Type: text/plain\r\n\r\nbottom" + closes)


def nested_messages(levels: int, message_id: str) -> bytes:
    embedded = b"".join(b"Content-Type: message/rfc822\r\n\r\nFrom: level%d@relay.test\r\nSubject: level %d\r\n" % (i, i)
                        for i in range(levels))
    return (HEAD + b"Message-ID: " + message_id.encode() + b"\r\n"
            + b'Content-Type: multipart/mixed; boundary="top"\r\n\r\n'
            b"--top\r\nContent-Type: text/plain\r\n\r\nThe printer in room 4 smokes.\r\n"
            b"--top\r\n" + embedded + b"Content-Type: text/plain\r\n\r\nbottom\r\n--top--\r\n")


@pytest.mark.parametrize("raw", [nested_multiparts(5000, "<deep-mp@customer.test>"),
                                 nested_messages(2000, "<deep-822@customer.test>")], ids=["multipart", "rfc822"])
def test_a_deeply_nested_mail_opens_a_ticket_for_its_top_level_sender(app, raw):
    result = ingest_mail(raw)
    assert result.outcome == "created"
    ticket = db.session.get(Ticket, result.ticket_id)
    assert (ticket.contact.email, ticket.contact.name) == ("jane@customer.test", "Jane Doe")
    assert ticket.title == "Printer on fire"
    assert ticket.message_id == result.message_id
    assert ticket.description.rstrip().endswith(TOO_DEEP_NOTE)
    [row] = db.session.scalars(db.select(InboundMail)).all()
    assert (row.sender, row.subject, row.ticket_id) == ("jane@customer.test", "Printer on fire", ticket.id)


def test_a_deeply_nested_mail_piped_to_email_ingest_opens_a_ticket(app, tmp_path):
    path = tmp_path / "deep.eml"
    path.write_bytes(nested_multiparts(5000, "<deep-cli@customer.test>"))
    result = app.test_cli_runner().invoke(args=["email", "ingest", str(path)])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(text) for text in result.output.splitlines() if text.strip()]
    assert (line["message_id"], line["outcome"]) == ("<deep-cli@customer.test>", "created")
    ticket = db.session.get(Ticket, line["ticket_id"])
    assert ticket.contact.email == "jane@customer.test"
    assert TOO_DEEP_NOTE in ticket.description
