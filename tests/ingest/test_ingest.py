"""ingest_mail: from raw bytes to a ticket, comment, ignored or quarantined mail, exactly once."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from helpdesk import events
from helpdesk.extensions import db
from helpdesk.models import (Attachment, Comment, Contact, Customer, CustomerDomain, InboundMail, Mailbox,
                             OutboundMessage, SmtpConfig, Ticket)
from helpdesk.services.ingest import ReprocessError, ingest_mail, quarantined_raw, reprocess
from helpdesk.services.tickets import set_status

pytestmark = pytest.mark.usefixtures("clean_bucket")

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def tickets() -> list[Ticket]:
    return list(db.session.scalars(db.select(Ticket).order_by(Ticket.id)))


def inbound_rows() -> list[InboundMail]:
    return list(db.session.scalars(db.select(InboundMail).order_by(InboundMail.id)))


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def no_confirmation_queued() -> bool:
    return count(OutboundMessage) == 0


def dsn(bounced_id: str, recipient: str = "jane@customer.test") -> bytes:
    """Return a Postfix-style delivery status notification about the mail `bounced_id`."""
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>
To: support@example.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-{abs(hash(bounced_id))}@mx.customer.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.customer.test.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.customer.test said: 550 5.1.1 User unknown

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.test

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: Example Support <support@example.test>
To: {recipient}
Subject: [#1001] We received your request
Message-ID: {bounced_id}

--BOUNDARY--
""".replace("\n", "\r\n").encode()


def outbox_message(ticket_id: int | None, message_id: str, status: str = "sent") -> OutboundMessage:
    message = OutboundMessage(ticket_id=ticket_id, kind="new_ticket" if ticket_id else "test",
                              recipient="jane@customer.test", to="jane@customer.test", subject="We received it",
                              message_id=message_id, status=status)
    db.session.add(message)
    db.session.commit()
    return message


# ---------------------------------------------------------------------------
# New tickets, contacts and customers


def test_a_new_mail_opens_a_ticket_for_a_new_contact_and_records_the_outcome(app, make_mail, created_notify):
    raw = make_mail(subject="Printer on fire", body="The printer in room 4 smokes.\n",
                    message_id="<first@customer.test>")
    result = ingest_mail(raw)
    assert (result.outcome, result.message_id) == ("created", "<first@customer.test>")
    [ticket] = tickets()
    assert result.ticket_id == ticket.id
    assert (ticket.title, ticket.description.strip(), ticket.source) == (
        "Printer on fire", "The printer in room 4 smokes.", "email")
    assert ticket.message_id == "<first@customer.test>"
    assert (ticket.contact.email, ticket.contact.name, ticket.customer) == ("jane@customer.test", "Jane Doe", None)
    assert created_notify == [True]
    [row] = inbound_rows()
    assert (row.id, row.channel, row.dedupe_key, row.outcome, row.reason) == (
        result.inbound_id, "cli", "<first@customer.test>", "created", "new mail")
    assert (row.sender, row.subject, row.size, row.ticket_id) == (
        "jane@customer.test", "Printer on fire", len(raw), ticket.id)
    assert row.raw_key is None and row.processing_ms >= 0


def test_a_known_contact_is_matched_whatever_the_case_and_brings_the_customer(app, make_mail):
    acme = Customer(name="Acme")
    db.session.add(Contact(email="jane.doe@acme.test", name="Jane Doe", customer=acme))
    db.session.commit()
    result = ingest_mail(make_mail(sender="JANE <Jane.Doe@ACME.test>"))
    ticket = db.session.get(Ticket, result.ticket_id)
    assert (ticket.contact.email, ticket.contact.name, ticket.customer.name) == ("jane.doe@acme.test", "Jane Doe",
                                                                                 "Acme")
    assert count(Contact) == 1


def test_a_customer_domain_links_the_customer_and_files_the_new_contact_under_it(app, make_mail):
    db.session.add(CustomerDomain(domain="acme.test", customer=Customer(name="Acme")))
    db.session.commit()
    result = ingest_mail(make_mail(sender="Bob Builder <bob@ACME.test>"))
    ticket = db.session.get(Ticket, result.ticket_id)
    assert ticket.customer.name == "Acme"
    assert (ticket.contact.email, ticket.contact.name, ticket.contact.customer.name) == (
        "bob@acme.test", "Bob Builder", "Acme")
    # Only the exact domain: a subdomain is a different organisation as far as we know.
    other = db.session.get(Ticket, ingest_mail(make_mail(sender="eve@mail.acme.test")).ticket_id)
    assert other.customer is None


def test_free_mail_domains_are_never_mapped_to_a_customer(app, make_mail):
    # Even when someone listed one as a customer domain.
    db.session.add(CustomerDomain(domain="gmail.com", customer=Customer(name="Mistake Inc")))
    db.session.commit()
    ticket = db.session.get(Ticket, ingest_mail(make_mail(sender="someone@gmail.com")).ticket_id)
    assert ticket.customer is None
    assert (ticket.contact.email, ticket.contact.customer) == ("someone@gmail.com", None)


def test_unknown_senders_get_no_contact_when_the_setting_says_so(app_config, make_mail):
    app_config["INBOUND_CREATE_CONTACTS"] = False
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        db.session.add(CustomerDomain(domain="acme.test", customer=Customer(name="Acme")))
        db.session.commit()
        stranger = db.session.get(Ticket, ingest_mail(make_mail(sender="x@stranger.test")).ticket_id)
        assert (stranger.contact, stranger.customer) == (None, None)
        # A customer's colleague still becomes a contact of that customer.
        colleague = db.session.get(Ticket, ingest_mail(make_mail(sender="bob@acme.test")).ticket_id)
        assert (colleague.contact.email, colleague.customer.name) == ("bob@acme.test", "Acme")
        db.session.remove()
        db.engine.dispose()


def test_encoded_subject_and_sender_name_are_decoded(app, make_mail):
    raw = (b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@kunde.test>\r\n"
           b"To: support@example.test\r\n"
           b"Subject: =?ISO-8859-1?Q?Drucker_br=E4nnt?= =?UTF-8?B?IOKAkyBkcmluZ2VuZCE=?=\r\n"
           b"Message-ID: <rfc2047@kunde.test>\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"Gr=FC=DFe aus K=F6ln\r\n")
    ticket = db.session.get(Ticket, ingest_mail(raw).ticket_id)
    assert ticket.title == "Drucker brännt – dringend!"
    assert (ticket.contact.name, ticket.contact.email) == ("Jürgen Müller", "juergen@kunde.test")
    assert ticket.description.strip() == "Grüße aus Köln"


def test_an_empty_subject_makes_a_no_subject_title(app, make_mail):
    ticket = db.session.get(Ticket, ingest_mail(make_mail(subject="   ")).ticket_id)
    assert ticket.title == "(no subject)"


def test_html_is_sanitised_and_inline_images_are_shown_from_our_attachment_url(app, make_mail, agent_client):
    raw = make_mail(body="See the picture.\n",
                    html='<p onclick="steal()">See <b>the</b> picture:</p><img src="cid:shot1@customer.test">'
                         '<script>alert(1)</script><a href="javascript:alert(2)">x</a>',
                    inline_images=[("shot1@customer.test", "image/png", PNG)],
                    attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 fake")])
    ticket = db.session.get(Ticket, ingest_mail(raw).ticket_id)
    by_name = {a.filename: a for a in ticket.attachments}
    image = next(a for a in ticket.attachments if a.content_type == "image/png")
    assert (image.inline, image.content_id, image.size) == (True, "shot1@customer.test", len(PNG))
    assert by_name["report.pdf"].inline is False
    html = ticket.description_html
    assert f'src="/attachments/{image.id}?inline=1"' in html
    assert "<script" not in html and "alert(1)" not in html and "onclick" not in html
    assert "javascript:" not in html and "<b>the</b>" in html
    shown = agent_client.get(f"/attachments/{image.id}?inline=1")
    assert shown.status_code == 200
    assert shown.data == PNG
    assert shown.headers["Content-Disposition"].startswith("inline")


def test_attachments_keep_name_type_size_and_hash_and_attached_mails_become_eml_files(app, make_mail):
    import hashlib

    inner = make_mail(subject="The original", message_id="<inner@customer.test>")
    raw = make_mail(attachments=[("Übersicht.csv", "text/csv", b"a;b\r\n1;2\r\n"),
                                 ("forwarded", "message/rfc822", inner)])
    ticket = db.session.get(Ticket, ingest_mail(raw).ticket_id)
    csv, eml = ticket.attachments
    assert (csv.filename, csv.content_type, csv.size, csv.sha256) == (
        "Übersicht.csv", "text/csv", 10, hashlib.sha256(b"a;b\r\n1;2\r\n").hexdigest())
    assert (eml.filename, eml.content_type) == ("forwarded.eml", "message/rfc822")
    from helpdesk.services.attachments import attachment_store

    assert b"Subject: The original" in attachment_store().read(eml.storage_key)


# ---------------------------------------------------------------------------
# Replies


def test_a_reply_with_our_token_becomes_a_trimmed_public_comment_and_reopens_the_ticket(
        app, make_mail, our_message_id, created_notify):
    first = ingest_mail(make_mail(subject="Printer on fire"))
    ticket = db.session.get(Ticket, first.ticket_id)
    set_status(ticket, "resolved")
    db.session.commit()
    body = ("Sorry, it is burning again.\n\n"
            "On Mon, 6 May 2024 at 09:00, Example Support <support@example.test> wrote:\n"
            "> We fixed the printer.\n> Regards\n")
    reply = make_mail(subject="Re: something unrelated", body=body, message_id="<reply1@customer.test>",
                      headers={"In-Reply-To": our_message_id(ticket.id),
                               "References": f"<first@customer.test> {our_message_id(ticket.id)}"})
    result = ingest_mail(reply)
    assert (result.outcome, result.ticket_id) == ("appended", ticket.id)
    comment = db.session.get(Comment, result.comment_id)
    assert comment.ticket_id == ticket.id and comment.public is True and comment.source == "email"
    assert comment.body_text.strip() == "Sorry, it is burning again."
    assert "We fixed the printer." in comment.full_text
    assert comment.message_id == "<reply1@customer.test>"
    assert comment.author_contact.email == "jane@customer.test"
    assert ticket.status == "open" and ticket.resolved_at is None
    assert len(tickets()) == 1 and created_notify == [True]
    assert inbound_rows()[-1].comment_id == comment.id


def test_a_reply_keeps_its_html_unless_quoted_history_was_cut_from_it(app, make_mail, our_message_id,
                                                                      make_ticket):
    ticket = make_ticket()
    fresh = ingest_mail(make_mail(
        body="Here is the photo.\n", html='<p>Here is <i>the</i> photo:</p><img src="cid:p1@customer.test">',
        inline_images=[("p1@customer.test", "image/png", PNG)], headers={"In-Reply-To": our_message_id(ticket.id)}))
    comment = db.session.get(Comment, fresh.comment_id)
    [image] = comment.attachments
    assert (image.ticket_id, image.inline) == (ticket.id, True)
    assert f'src="/attachments/{image.id}?inline=1"' in comment.body_html and "<i>the</i>" in comment.body_html
    quoted = ingest_mail(make_mail(
        body="Thanks, fixed.\n\nOn Mon, 6 May 2024, Support <support@example.test> wrote:\n> Try again\n",
        html="<p>Thanks, fixed.</p><blockquote>Try again</blockquote>",
        headers={"In-Reply-To": our_message_id(ticket.id)}))
    comment = db.session.get(Comment, quoted.comment_id)
    assert (comment.body_text.strip(), comment.body_html) == ("Thanks, fixed.", None)
    assert "> Try again" in comment.full_text


def test_a_token_signed_with_another_key_is_not_a_reply(app, make_mail, make_ticket):
    from helpdesk.mail.tokens import make_message_id

    ticket = make_ticket()
    forged = make_message_id(ticket.id, b"someone else's key", "helpdesk.test")
    result = ingest_mail(make_mail(headers={"In-Reply-To": forged}))
    assert result.outcome == "created" and result.ticket_id != ticket.id


def test_a_subject_tag_from_the_contact_is_a_comment_and_from_a_stranger_a_new_ticket(app, make_mail):
    ticket = db.session.get(Ticket, ingest_mail(make_mail(subject="Printer on fire")).ticket_id)
    tagged = f"Re: [#{ticket.number}] Printer on fire"
    from_contact = ingest_mail(make_mail(subject=tagged, sender="jane@CUSTOMER.test", body="Still smoking."))
    assert (from_contact.outcome, from_contact.ticket_id) == ("appended", ticket.id)
    from_stranger = ingest_mail(make_mail(subject=tagged, sender="mallory@elsewhere.test", body="Me too."))
    assert from_stranger.outcome == "created" and from_stranger.ticket_id != ticket.id
    assert "not from that ticket's contact" in from_stranger.reason
    assert [c.body_text.strip() for c in ticket.comments] == ["Still smoking."]


def test_a_reply_that_is_only_a_quote_keeps_the_quote_as_its_body(app, make_mail, our_message_id, make_ticket):
    ticket = make_ticket()
    result = ingest_mail(make_mail(body="> quoted only\n", headers={"In-Reply-To": our_message_id(ticket.id)}))
    assert db.session.get(Comment, result.comment_id).body_text.strip() == "> quoted only"


def test_an_automatic_answer_is_added_but_never_reopens_a_resolved_ticket(app, make_mail, our_message_id,
                                                                          make_ticket):
    ticket = make_ticket()
    set_status(ticket, "resolved")
    db.session.commit()
    result = ingest_mail(make_mail(subject="Out of office", body="I am away until Monday.",
                                   headers={"In-Reply-To": our_message_id(ticket.id),
                                            "Auto-Submitted": "auto-replied"}))
    assert result.outcome == "appended" and "no automatic reply" in result.reason
    comment = db.session.get(Comment, result.comment_id)
    assert comment.author_contact.email == "jane@customer.test"
    assert ticket.status == "resolved"


# ---------------------------------------------------------------------------
# Exactly once


def test_the_same_mail_twice_makes_one_ticket(app, make_mail, created_notify):
    raw = make_mail(message_id="<twice@customer.test>")
    first, second = ingest_mail(raw), ingest_mail(raw)
    assert first.outcome == "created"
    assert (second.outcome, second.ticket_id, second.inbound_id) == ("duplicate", first.ticket_id, first.inbound_id)
    assert "already received" in second.reason
    assert (len(tickets()), len(inbound_rows()), created_notify) == (1, 1, [True])
    # The same Message-ID with other bytes (a resend through another relay) is the same mail.
    resent = make_mail(message_id="<twice@customer.test>", body="different relay, same mail")
    assert ingest_mail(resent).outcome == "duplicate"
    # Dedupe is per channel: each mailbox keeps its own record of what it received.
    assert ingest_mail(raw, channel="mailbox:other").outcome == "created"


def test_mail_without_message_id_is_deduplicated_by_its_bytes(app, make_mail):
    raw = make_mail(message_id=None)
    first, again = ingest_mail(raw), ingest_mail(raw)
    assert (first.outcome, again.outcome, first.message_id) == ("created", "duplicate", None)
    assert inbound_rows()[0].dedupe_key.startswith("sha256:")
    other = ingest_mail(make_mail(message_id=None, body="another mail"))
    assert other.outcome == "created"
    assert len(tickets()) == 2


def test_two_pollers_with_the_same_mail_at_once_make_one_ticket(app, make_mail):
    # Automatic mail: the race is about the dedupe key, not about the confirmation mail.
    raw = make_mail(message_id="<race@customer.test>", attachments=[("a.txt", "text/plain", b"hello")],
                    headers={"Auto-Submitted": "auto-generated"})
    flask_app = app
    barrier = threading.Barrier(2)
    results = []

    def poller() -> None:
        with flask_app.app_context():
            barrier.wait()
            results.append(ingest_mail(raw, channel="mailbox:race"))
            db.session.remove()

    threads = [threading.Thread(target=poller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.outcome for r in results) == ["created", "duplicate"], [r.reason for r in results]
    assert len({r.ticket_id for r in results}) == 1
    assert (len(tickets()), len(inbound_rows()), count(Attachment)) == (1, 1, 1)


def test_two_mails_from_the_same_new_sender_at_once_make_one_contact(app, make_mail):
    mails = [make_mail(subject=f"Race {n}", sender="New Person <new@race.test>",
                       headers={"Auto-Submitted": "auto-generated"}) for n in range(2)]
    flask_app = app
    barrier = threading.Barrier(2)
    results = []

    def poller(raw: bytes) -> None:
        with flask_app.app_context():
            barrier.wait()
            results.append(ingest_mail(raw, channel="mailbox:race"))
            db.session.remove()

    threads = [threading.Thread(target=poller, args=(raw,)) for raw in mails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.outcome for r in results] == ["created", "created"], [r.reason for r in results]
    assert count(Contact) == 1
    assert {t.contact.email for t in tickets()} == {"new@race.test"}


# ---------------------------------------------------------------------------
# Loops, automatic mail and bounces


@pytest.mark.parametrize("headers", [
    {"Auto-Submitted": "auto-replied"},
    {"X-Autoreply": "yes"},
    {"X-Autorespond": "Vacation"},
    {"Precedence": "bulk"},
    {"Precedence": "junk"},
    {"Precedence": "list"},
])
def test_automatic_mail_makes_a_ticket_without_confirmation(app, make_mail, created_notify, headers):
    result = ingest_mail(make_mail(subject="Re: your order", headers=headers))
    assert result.outcome == "created"
    assert created_notify == [False]
    assert "no automatic reply" in result.reason
    assert no_confirmation_queued()


def test_mail_from_the_mailer_daemon_gets_no_confirmation(app, make_mail, created_notify):
    result = ingest_mail(make_mail(sender="MAILER-DAEMON@mx.customer.test", subject="Warning"))
    assert result.outcome in ("created", "ignored")
    assert True not in created_notify
    assert no_confirmation_queued()


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in-one-batch"])
def test_confirmations_to_one_sender_stop_at_the_hourly_limit_of_automatic_mail(app, make_mail, batched):
    from helpdesk.models import TicketEvent
    from helpdesk.services.ingest import Origin, Run, record

    app.config["AUTO_MAILS_PER_HOUR"] = 2
    mails = [make_mail(subject=f"Problem {n}", sender="Jane <Jane@Customer.test>") for n in range(3)]
    if batched:  # as a poll writes a batch: one transaction
        run = Run.start()
        results = [record(raw, Origin("mailbox:1"), run) for raw in mails]
        db.session.commit()
    else:
        results = [ingest_mail(raw) for raw in mails]
    assert [r.outcome for r in results] == ["created"] * 3
    confirmed = db.session.scalars(db.select(OutboundMessage.ticket_id).order_by(OutboundMessage.id)).all()
    assert confirmed == [results[0].ticket_id, results[1].ticket_id]
    [event] = db.session.scalars(db.select(TicketEvent).filter_by(kind="notification-suppressed")).all()
    assert event.ticket_id == results[2].ticket_id and "already got 2 automatic mails" in event.detail


def test_mail_from_our_own_addresses_is_ignored(app, make_mail, created_notify):
    db.session.add(SmtpConfig(from_address="helpdesk@example.test"))
    db.session.add(Mailbox(username="support@example.test", reply_from_address="billing@example.test"))
    db.session.commit()
    for sender in ("helpdesk@example.test", "Support@Example.test", "billing@example.test"):
        result = ingest_mail(make_mail(sender=sender))
        assert result.outcome == "ignored"
        assert "our own address" in result.reason
    assert (tickets(), created_notify) == ([], [])
    assert [r.outcome for r in inbound_rows()] == ["ignored"] * 3


def test_a_bounce_of_our_mail_becomes_an_internal_note_and_marks_the_outbox_mail_bounced(
        app, make_ticket, our_message_id, created_notify):
    ticket = make_ticket()
    sent = outbox_message(ticket.id, our_message_id(ticket.id))
    other = outbox_message(ticket.id, our_message_id(ticket.id))
    result = ingest_mail(dsn(sent.message_id))
    assert (result.outcome, result.ticket_id) == ("appended", ticket.id)
    note = db.session.get(Comment, result.comment_id)
    assert note.public is False and note.author_name == "System"
    assert sent.message_id in note.body_text and "User unknown" in note.body_text
    assert (sent.status, other.status) == ("bounced", "sent")
    assert "delivery status notification" in sent.last_error
    # Only the ticket the test opened; the bounce opened none and queued nothing.
    assert ticket.status == "new" and created_notify == [False] and len(tickets()) == 1
    assert count(OutboundMessage) == 2


def test_a_bounce_of_a_mail_we_did_not_send_is_ignored(app, created_notify):
    result = ingest_mail(dsn("<somebody-elses@mail.test>"))
    assert result.outcome == "ignored"
    assert "bounce of a mail we did not send" in result.reason
    assert (tickets(), created_notify) == ([], [])


def test_a_bounce_of_our_mail_without_a_ticket_only_marks_the_outbox_mail(app, our_message_id):
    test_mail = outbox_message(None, our_message_id(None))
    result = ingest_mail(dsn(test_mail.message_id))
    assert result.outcome == "ignored"
    assert test_mail.status == "bounced"


def test_too_many_mails_from_one_sender_are_quarantined_and_can_be_reprocessed(app_config, make_mail):
    app_config["INBOUND_LOOP_LIMIT"] = 3
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        outcomes = [ingest_mail(make_mail(subject=f"Auto {n}", sender="robot@loop.test")) for n in range(5)]
        assert [r.outcome for r in outcomes] == ["created"] * 3 + ["quarantined"] * 2
        assert outcomes[3].reason == "suspected mail loop: more than 3 mails from robot@loop.test within 10 minutes"
        assert ingest_mail(make_mail(sender="someone@else.test")).outcome == "created"
        held = db.session.get(InboundMail, outcomes[3].inbound_id)
        assert held.raw_key and b"Subject: Auto 3" in quarantined_raw(held)
        again = reprocess(held.id)
        assert again.outcome == "created"
        assert db.session.get(Ticket, again.ticket_id).title == "Auto 3"
        assert db.session.get(InboundMail, held.id) is None
        db.session.remove()
        db.engine.dispose()


# ---------------------------------------------------------------------------
# Size limit, garbage, failures


def test_a_mail_over_the_size_limit_keeps_its_ticket_and_says_what_was_not_stored(app_config, make_mail):
    app_config["MAIL_MAX_SIZE"] = 20_000
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        raw = make_mail(subject="Huge scan", body="Scan attached.",
                        attachments=[("scan.tiff", "image/tiff", b"\x49\x49" * 15_000)])
        assert len(raw) > 20_000
        result = ingest_mail(raw)
        ticket = db.session.get(Ticket, result.ticket_id)
        assert (result.outcome, ticket.title, ticket.description.strip()) == ("created", "Huge scan", "Scan attached.")
        assert ticket.attachments == []
        [note] = ticket.comments
        assert note.public is False
        assert note.body_text.startswith(f"This mail is {len(raw) / 1024:.1f} KB, over the 19.5 KB limit for "
                                         "incoming mail, so its 1 attachment(s) were not stored:\n"
                                         "- scan.tiff (image/tiff, 29.3 KB)\n")
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("raw", [
    b"", b"\x00\xff\xfe\xfd", b"\r\n\r\n", b"Subject: only a header", b"From: \x00@\xff\r\n\r\n\x00\x00",
    bytes(range(256)) * 50, b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x",
])
def test_garbage_bytes_get_exactly_one_outcome_and_never_raise(app, raw):
    result = ingest_mail(raw)
    assert result.outcome in ("created", "ignored")
    assert len(inbound_rows()) == 1 and inbound_rows()[0].outcome == result.outcome
    assert ingest_mail(raw).outcome == "duplicate"


def test_an_error_while_processing_quarantines_the_mail_and_leaves_nothing_half_done(app, make_mail):
    def explode(ticket, **data):
        raise RuntimeError("notification rendering broke")

    raw = make_mail(subject="Hit by a bug", attachments=[("a.txt", "text/plain", b"kept")])
    events.ticket_created.connect(explode)
    try:
        result = ingest_mail(raw)
    finally:
        events.ticket_created.disconnect(explode)
    assert result.outcome == "quarantined"
    assert result.reason == "processing failed: RuntimeError: notification rendering broke"
    assert (tickets(), count(Contact), count(Attachment)) == ([], 0, 0)
    [row] = inbound_rows()
    assert (row.outcome, row.message_id, row.sender, row.subject) == (
        "quarantined", result.message_id, "jane@customer.test", "Hit by a bug")
    assert not row.raw_key.startswith("spool:")
    assert quarantined_raw(row) == raw
    # Received again (a poller's rerun), it stays the one recorded outcome.
    assert ingest_mail(raw).outcome == "duplicate"
    # The next mail goes through.
    assert ingest_mail(make_mail(subject="Next")).outcome == "created"
    fixed = reprocess(row.id)
    assert fixed.outcome == "created"
    ticket = db.session.get(Ticket, fixed.ticket_id)
    assert (ticket.title, [a.filename for a in ticket.attachments]) == ("Hit by a bug", ["a.txt"])
    assert [r.outcome for r in inbound_rows()] == ["created", "created"]


def _break_store(app_config: dict, how: str, tmp_path: Path) -> None:
    if how == "folder-is-a-file":
        app_config["S3_ENDPOINT"] = None
        blocker = tmp_path / "blocked-attachments"
        blocker.write_text("not a folder")
        app_config["ATTACHMENT_FOLDER"] = str(blocker)
    else:
        import socket

        with socket.socket() as sock:  # a port nobody listens on once this socket closes
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app_config.update(S3_ENDPOINT=f"127.0.0.1:{port}", S3_ACCESS_KEY="k", S3_SECRET_KEY="s", S3_SECURE=False,
                          S3_BUCKET="hd-closed-port")


@pytest.mark.parametrize("how", ["folder-is-a-file", "s3-closed-port"])
def test_a_failing_attachment_store_quarantines_the_mail_keeps_its_bytes_and_lets_the_next_through(
        app_config, make_mail, tmp_path, how):
    _break_store(app_config, how, tmp_path)
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        raw = make_mail(subject="With a file", attachments=[("a.txt", "text/plain", b"precious")])
        result = ingest_mail(raw)
        assert result.outcome == "quarantined"
        assert result.reason.startswith("could not store the mail's files: ")
        assert "local spool" in result.reason
        assert (tickets(), count(Attachment), count(Contact)) == ([], 0, 0)
        plain = ingest_mail(make_mail(subject="No files"))
        assert plain.outcome == "created"
        row = db.session.get(InboundMail, result.inbound_id)
        assert row.raw_key.startswith("spool:") and quarantined_raw(row) == raw
        spooled = Path(app_config["ATTACHMENT_FOLDER"]).parent / "inbound-spool"
        assert spooled.is_dir()

        # The store works again: Reprocess makes the ticket with its file and drops the spooled copy.
        if how == "folder-is-a-file":
            Path(app_config["ATTACHMENT_FOLDER"]).unlink()
        else:
            app.config.update(S3_ENDPOINT=None, ATTACHMENT_FOLDER=str(tmp_path / "working-store"))
        app.extensions.pop("attachment_store", None)
        fixed = reprocess(row.id)
        assert fixed.outcome == "created"
        ticket = db.session.get(Ticket, fixed.ticket_id)
        assert [a.filename for a in ticket.attachments] == ["a.txt"]
        assert not any(p.is_file() for p in spooled.rglob("*"))
        db.session.remove()
        db.engine.dispose()


def test_reprocess_that_fails_again_keeps_the_one_quarantine_record(app, make_mail):
    def explode(ticket, **data):
        raise RuntimeError("still broken")

    raw = make_mail(subject="Stubborn")
    events.ticket_created.connect(explode)
    try:
        first = ingest_mail(raw)
        again = reprocess(first.inbound_id)
    finally:
        events.ticket_created.disconnect(explode)
    assert (again.outcome, again.inbound_id) == ("quarantined", first.inbound_id)
    [row] = inbound_rows()
    assert (row.outcome, row.reason, row.raw_key) == ("quarantined", "processing failed: RuntimeError: still broken",
                                                      db.session.get(InboundMail, first.inbound_id).raw_key)
    assert quarantined_raw(row) == raw and tickets() == []
    assert reprocess(row.id).outcome == "created"


def test_raw_bytes_nobody_could_keep_are_kept_when_the_mail_arrives_again(app_config, make_mail, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "attachments").write_text("a file where the store's folder should be")
    (broken / "inbound-spool").write_text("and one where the spool should be")
    app_config.update(S3_ENDPOINT=None, ATTACHMENT_FOLDER=str(broken / "attachments"))
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        raw = make_mail(subject="Unlucky timing", attachments=[("a.txt", "text/plain", b"x")])
        result = ingest_mail(raw)
        assert result.outcome == "quarantined" and "the raw mail could not be kept" in result.reason
        row = db.session.get(InboundMail, result.inbound_id)
        assert row.raw_key is None
        with pytest.raises(ReprocessError, match="not a quarantined mail with its raw bytes kept"):
            reprocess(row.id)
        (broken / "attachments").unlink()
        (broken / "inbound-spool").unlink()
        # The poller (or the MTA) hands the same mail over again: still one record, now with the bytes.
        assert ingest_mail(raw).outcome == "duplicate"
        db.session.refresh(row)
        assert row.raw_key and quarantined_raw(row) == raw
        assert reprocess(row.id).outcome == "created"
        db.session.remove()
        db.engine.dispose()


def test_reprocess_refuses_what_is_not_a_quarantined_mail(app, make_mail):
    created = ingest_mail(make_mail())
    with pytest.raises(ReprocessError, match="is created, not a quarantined mail"):
        reprocess(created.inbound_id)
    with pytest.raises(ReprocessError, match="no inbound mail #999"):
        reprocess(999)
