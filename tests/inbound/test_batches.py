"""A poll writes each batch of mails in one transaction: what that means for the mails in it."""
from __future__ import annotations

import os
from datetime import timedelta

from helpdesk.extensions import db
from helpdesk.models import Attachment, Contact, InboundMail, OutboundMessage
from helpdesk.services import inbound, ingest, retention
from helpdesk.services.attachments import attachment_store
from helpdesk.services.outbox import NOT_CONFIGURED

SEEN = b"\\Seen"


def test_a_mail_that_fails_mid_batch_is_quarantined_and_the_mails_around_it_stand(
        monkeypatch, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    append(customer_mail(1), customer_mail(2, subject="boom"), customer_mail(3))
    real_open = ingest._open

    def open_or_fail(mail, *args, **kwargs):
        if mail.subject == "boom":
            raise RuntimeError("the database refused this one")
        return real_open(mail, *args, **kwargs)

    monkeypatch.setattr(ingest, "_open", open_or_fail)

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert dict(report.outcomes) == {"created": 2, "quarantined": 1}
    assert len(read_tickets()) == 2 and all(t.title != "boom" for t in read_tickets())
    quarantined = [row for row in read_inbound() if row.outcome == "quarantined"]
    assert len(quarantined) == 1 and "refused this one" in quarantined[0].reason and quarantined[0].raw_key
    assert all(SEEN in flags for flags in server_state().values())
    # The confirmations of the mails around it were handed to the send job once the batch committed
    # (no SMTP server is set up here, so the job leaves them queued and says why).
    confirmations = db.session.scalars(db.select(OutboundMessage)).all()
    assert len(confirmations) == 2 and all(NOT_CONFIGURED in m.last_error for m in confirmations)


def test_two_mails_of_a_new_sender_in_one_batch_make_one_contact(make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    append(customer_mail(1, sender="twice@example.org"), customer_mail(2, sender="twice@example.org"))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and dict(report.outcomes) == {"created": 2}
    assert db.session.scalar(db.select(db.func.count(Contact.id)).filter_by(email="twice@example.org")) == 1
    assert {t.contact.email for t in read_tickets()} == {"twice@example.org"}


def test_a_file_several_mails_carry_is_stored_once_and_each_ticket_keeps_it(
        make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    pdf = os.urandom(30_000)
    append(customer_mail(1, attachment=pdf), customer_mail(2, attachment=pdf))

    assert inbound.poll_mailbox(mailbox.id).ok
    attachments = [a for t in read_tickets() for a in t.attachments]

    assert len(attachments) == 2 and len({a.ticket_id for a in attachments}) == 2
    assert len({a.storage_key for a in attachments}) == 1
    assert attachment_store().read(attachments[0].storage_key) == pdf


def test_the_sweep_removes_only_files_no_row_names(make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    append(customer_mail(1, attachment=b"%PDF kept by its ticket"))
    assert inbound.poll_mailbox(mailbox.id).ok
    store = attachment_store()
    # A file stored for a mail whose transaction was then rolled back: no row names it.
    orphan = store.put(b"left behind by a rolled-back mail", content_type="application/pdf",
                       key="att/sha256/" + "0" * 64)
    [named] = [a.storage_key for t in read_tickets() for a in t.attachments]

    assert retention.sweep_unreferenced_files(grace=timedelta(days=1)) == 0  # too young to be sure
    assert retention.sweep_unreferenced_files(grace=timedelta(0)) == 1

    assert not store.exists(orphan.key)
    assert store.read(named) == b"%PDF kept by its ticket"


def test_a_poll_of_several_batches_makes_every_ticket_once(
        make_mailbox, append, customer_mail, server_state, read_inbound):
    mailbox = make_mailbox()
    count = 2 * inbound.BATCH + 7
    append(*(customer_mail(n) for n in range(count)))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert dict(report.outcomes) == {"created": count}
    assert sorted(row.uid for row in read_inbound()) == sorted(server_state())
    assert all(SEEN in flags for flags in server_state().values())
    assert inbound.poll_mailbox(mailbox.id).processed == 0
    assert db.session.scalar(db.select(db.func.count(InboundMail.id))) == count
    assert db.session.scalar(db.select(db.func.count(Attachment.id))) == 0
