"""Polling against the real Dovecot: mail becomes tickets once, is marked done only after, survives crashes."""
from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta

import pytest

from helpdesk.extensions import db
from helpdesk.mail import tokens
from helpdesk.mail.imap import ImapSession
from helpdesk.models import Mailbox
from helpdesk.models._time import utcnow
from helpdesk.services import inbound
from helpdesk.services.attachments import attachment_store

SEEN = b"\\Seen"


def fresh(mailbox_id: int) -> Mailbox:
    db.session.expire_all()
    return db.session.get(Mailbox, mailbox_id)


def test_mail_becomes_ticket_with_attachment_and_reply_becomes_comment(
        app, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    pdf = os.urandom(40_000)
    [uid] = append(customer_mail(1, attachment=pdf))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert (report.processed, dict(report.outcomes)) == (1, {"created": 1})
    [ticket] = read_tickets()
    assert ticket.title.startswith("Printer 1 is on fire")
    assert ticket.mailbox_id == mailbox.id
    [attachment] = ticket.attachments
    assert attachment.filename == "photo-1.pdf"
    assert attachment.sha256 == hashlib.sha256(pdf).hexdigest()
    # The bytes really are in the store (S3 on the PostgreSQL pass), not just described.
    assert attachment_store().read(attachment.storage_key) == pdf
    [row] = read_inbound()
    assert (row.outcome, row.uid, row.ticket_id, row.channel) == ("created", uid, ticket.id, f"mailbox:{mailbox.id}")
    assert SEEN in server_state()[uid]
    state = fresh(mailbox.id)
    assert (state.last_uid, state.last_poll_ok, state.last_poll_count, state.last_poll_error) == (uid, True, 1, "")
    assert state.uidvalidity and state.locked_until is None and state.locked_by == ""

    our_id = tokens.make_message_id(ticket.id, app.config["SECRET_KEY"].encode(), "example.test")
    reply = customer_mail(1, subject="Re: Printer 1", body="Thanks, it works again.\n",
                          headers={"In-Reply-To": our_id, "References": our_id})
    [reply_uid] = append(reply)

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and dict(report.outcomes) == {"appended": 1}
    [same] = read_tickets()
    assert same.id == ticket.id
    bodies = [c.body_text for c in same.comments if c.public]
    assert any("Thanks, it works again." in body for body in bodies)
    assert read_inbound()[-1].outcome == "appended"
    assert SEEN in server_state()[reply_uid]
    assert fresh(mailbox.id).last_uid == reply_uid


@pytest.mark.parametrize("mode", ["seen", "move", "delete"])
def test_after_processing_is_done_on_the_server(mode, imap, make_mailbox, folder, append, customer_mail,
                                                 server_state, read_tickets):
    done_folder = f"{folder}.done"
    mailbox = make_mailbox(after_processing=mode, move_to_folder=done_folder if mode == "move" else "")
    uids = append(*(customer_mail(n) for n in range(3)))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert len(read_tickets()) == 3
    left = server_state()
    if mode == "seen":
        assert set(left) == set(uids) and all(SEEN in flags for flags in left.values())
    else:
        assert left == {}
    with ImapSession(imap()) as session:
        moved_exists = done_folder in session.list_folders()
    assert moved_exists is (mode == "move")
    if mode == "move":
        assert len(server_state(done_folder)) == 3


def test_uidvalidity_change_rescans_without_duplicate_tickets(imap, folder, make_mailbox, append, customer_mail,
                                                              server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    mails = [customer_mail(n) for n in range(3)]
    append(*mails)
    assert inbound.poll_mailbox(mailbox.id).ok
    before = fresh(mailbox.id).uidvalidity
    assert len(read_tickets()) == 3

    # The server loses its UID state: the folder is recreated and the same mails come back, plus one new.
    with ImapSession(imap()) as session:
        session.delete_folder(folder)
        session.create_folder(folder)
    uids = append(*mails, customer_mail(9))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert report.uidvalidity_changed
    assert dict(report.outcomes) == {"duplicate": 3, "created": 1}
    assert len(read_tickets()) == 4
    assert len(read_inbound()) == 4
    state = fresh(mailbox.id)
    assert state.uidvalidity != before and state.last_uid == max(uids)
    # The duplicates are marked done too, so they do not come back on every poll.
    assert all(SEEN in flags for flags in server_state().values())


def test_two_pollers_at_once_process_each_mail_once(app, make_mailbox, append, customer_mail, read_tickets,
                                                    read_inbound):
    mailbox = make_mailbox()
    append(*(customer_mail(n) for n in range(12)))
    first_mail_in, second_done = threading.Event(), threading.Event()
    reports = {}

    def first():
        with app.app_context():
            def hold(uid, result):
                # The first poller is now inside its poll: let the second try, then carry on.
                first_mail_in.set()
                second_done.wait(30)
            reports["first"] = inbound.poll_mailbox(mailbox.id, on_result=hold)

    def second():
        first_mail_in.wait(30)
        with app.app_context():
            reports["second"] = inbound.poll_mailbox(mailbox.id)
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert reports["second"].skipped == inbound.BUSY and reports["second"].processed == 0
    assert reports["first"].ok and reports["first"].processed == 12
    assert len(read_tickets()) == 12
    assert len(read_inbound()) == 12


def test_poll_job_outside_any_request_makes_tickets(app, make_mailbox, append, customer_mail, read_tickets,
                                                     read_inbound):
    """A worker runs the job with an app context and no request (the test thread has a request pushed)."""
    from jobs.mail import poll_mailbox as poll_job

    mailbox = make_mailbox()
    append(customer_mail(1))

    def worker():
        with app.app_context():
            poll_job(mailbox.id)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()

    [row] = read_inbound()
    assert row.outcome == "created", row.reason
    assert len(read_tickets()) == 1


def test_racing_pollers_never_process_a_mail_twice(app, make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    append(*(customer_mail(n) for n in range(15)))
    start = threading.Barrier(3)
    reports = []

    def poll():
        with app.app_context():
            start.wait(30)
            reports.append(inbound.poll_mailbox(mailbox.id))

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.processed for r in reports) == 15
    assert sum(r.outcomes["duplicate"] for r in reports) == 0
    assert [r for r in reports if r.ok]
    assert all(r.ok or r.skipped == inbound.BUSY for r in reports)
    assert len(read_tickets()) == 15


def test_a_lock_held_by_another_worker_keeps_this_poll_out(make_mailbox, append, customer_mail, server_state,
                                                          read_tickets):
    mailbox = make_mailbox(locked_until=utcnow() + timedelta(minutes=4), locked_by="worker-on-another-machine")
    [uid] = append(customer_mail(1))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.skipped == inbound.BUSY and not report.ok
    assert "another poll is running" in report.summary
    assert read_tickets() == []
    assert SEEN not in server_state()[uid]
    assert fresh(mailbox.id).locked_by == "worker-on-another-machine"


def test_an_expired_lock_lets_the_next_poll_in(make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox(locked_until=utcnow() - timedelta(seconds=1), locked_by="worker-that-died")
    append(customer_mail(1))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert len(read_tickets()) == 1
    state = fresh(mailbox.id)
    assert state.locked_until is None and state.locked_by == ""


def test_crash_after_ingest_before_marking_done_loses_nothing_and_duplicates_nothing(
        monkeypatch, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n) for n in range(3)))
    real_mark = inbound.mark_processed
    calls = []

    def crash_once(session, box, done):
        calls.append(list(done))
        if len(calls) == 1:
            raise RuntimeError("worker killed between commit and flag")
        real_mark(session, box, done)

    monkeypatch.setattr(inbound, "mark_processed", crash_once)

    crashed = inbound.poll_mailbox(mailbox.id)

    assert not crashed.ok and "worker killed" in crashed.error
    assert len(read_tickets()) == 3  # the ingest had committed
    assert all(SEEN not in flags for flags in server_state().values())
    state = fresh(mailbox.id)
    assert state.last_uid == 0 and state.last_poll_ok is False and "worker killed" in state.last_poll_error
    assert state.locked_until is None  # the lock was released in spite of the crash

    rerun = inbound.poll_mailbox(mailbox.id)

    assert rerun.ok and dict(rerun.outcomes) == {"duplicate": 3}
    assert calls[-1] == uids
    assert len(read_tickets()) == 3 and len(read_inbound()) == 3
    assert all(SEEN in flags for flags in server_state().values())
    assert fresh(mailbox.id).last_uid == max(uids)
    assert fresh(mailbox.id).last_poll_error == ""


def test_crash_mid_batch_then_rerun_processes_every_mail_exactly_once(
        monkeypatch, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n) for n in range(5)))
    real_record = inbound.record
    seen = []

    def crash_on_third(raw, origin, *args, **kwargs):
        seen.append(origin.uid)
        if len(seen) == 3:
            raise RuntimeError("worker killed mid-batch")
        return real_record(raw, origin, *args, **kwargs)

    monkeypatch.setattr(inbound, "record", crash_on_third)

    crashed = inbound.poll_mailbox(mailbox.id)

    # The batch is one transaction: none of it stands, and nothing is marked done on the server.
    assert not crashed.ok and "mid-batch" in crashed.error
    assert read_tickets() == []
    assert fresh(mailbox.id).last_uid == 0
    assert not any(SEEN in flags for flags in server_state().values())

    rerun = inbound.poll_mailbox(mailbox.id)

    assert rerun.ok, rerun.error
    assert dict(rerun.outcomes) == {"created": 5}
    assert len(read_tickets()) == 5
    assert sorted(row.uid for row in read_inbound()) == uids
    assert all(SEEN in flags for flags in server_state().values())


def test_mail_arriving_while_nobody_polls_is_picked_up_next_time(make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    assert inbound.poll_mailbox(mailbox.id).processed == 0
    append(customer_mail(1))
    assert inbound.poll_mailbox(mailbox.id).processed == 1
    # The helpdesk is "down" while two more arrive.
    append(customer_mail(2), customer_mail(3))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.processed == 2
    assert [t.title.split(" is")[0] for t in read_tickets()] == ["Printer 1", "Printer 2", "Printer 3"]


def test_batches_larger_than_one_fetch_are_all_processed(monkeypatch, make_mailbox, append, customer_mail,
                                                         read_tickets):
    monkeypatch.setattr(inbound, "BATCH", 4)
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n) for n in range(10)))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.processed == 10
    assert len(read_tickets()) == 10
    assert fresh(mailbox.id).last_uid == max(uids)


def test_a_poll_ignores_mail_from_our_own_addresses_and_quarantines_a_loop(
        app, make_mailbox, append, customer_mail, read_tickets, read_inbound):
    # The own addresses are looked up once per poll and the loop guard counts in the dedupe
    # query: both must still hold for every mail of a batch, the first as much as the last.
    app.config["INBOUND_LOOP_LIMIT"] = 3
    mailbox = make_mailbox(reply_from_address="helpdesk-replies@example.test")
    append(customer_mail(1, sender="helpdesk-replies@example.test"), customer_mail(2),
           *(customer_mail(n, sender="robot@example.org") for n in range(3, 8)),
           customer_mail(8, sender="SUPPORT@example.test"))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.processed == 8
    rows = read_inbound()
    assert [row.outcome for row in rows] == ["ignored", "created", "created", "created", "created", "quarantined",
                                             "quarantined", "ignored"]
    assert rows[0].sender == "helpdesk-replies@example.test" and rows[-1].sender == "support@example.test"
    assert rows[1].sender.startswith("customer2.")
    assert {row.sender for row in rows[2:7]} == {"robot@example.org"}
    assert "suspected mail loop" in rows[5].reason
    assert [t.title.split(" is")[0] for t in read_tickets()] == ["Printer 2", "Printer 3", "Printer 4", "Printer 5"]


def test_imap_errors_are_recorded_in_plain_words(make_mailbox, read_tickets):
    mailbox = make_mailbox(password="not-the-password")

    report = inbound.poll_mailbox(mailbox.id)

    assert not report.ok
    state = fresh(mailbox.id)
    assert state.last_poll_ok is False and "refused the login" in state.last_poll_error
    assert "not-the-password" not in state.last_poll_error
    assert state.locked_until is None


def test_missing_folder_and_missing_host_are_diagnosed(make_mailbox):
    missing = make_mailbox(folder="INBOX.no-such-folder-here")
    report = inbound.poll_mailbox(missing.id)
    assert not report.ok and "cannot be opened" in fresh(missing.id).last_poll_error

    blank = make_mailbox(host="")
    report = inbound.poll_mailbox(blank.id)
    assert not report.ok and "No IMAP host" in report.error


def test_queue_due_polls_polls_enabled_mailboxes_whose_interval_passed(make_mailbox, append, customer_mail,
                                                                       read_tickets):
    due = make_mailbox(name="Due")
    recent = make_mailbox(name="Recent", last_poll_at=utcnow() - timedelta(seconds=30), poll_interval=120)
    disabled = make_mailbox(name="Off", enabled=False)
    append(customer_mail(1))

    queued = inbound.queue_due_polls()

    assert queued == [due.id]
    assert fresh(due.id).last_poll_at is not None  # the job ran (JOBS_INLINE) after the commit
    assert fresh(recent.id).last_poll_count == 0 and fresh(disabled.id).last_poll_at is None
    assert len(read_tickets()) == 1
