"""Large polls: helper processes fetch and parse, files upload early, one send job per batch; nothing lost."""
from __future__ import annotations

import email
import hashlib
import multiprocessing
import os
import threading
import time
import uuid
from email.policy import SMTP
from pathlib import Path

import pytest

from helpdesk.extensions import db
from helpdesk.mail import prefetch
from helpdesk.models import Attachment, Mailbox, OutboundMessage
from helpdesk.services import inbound, mailboxes
from helpdesk.services.attachments import attachment_store
from helpdesk.storage import LocalStore, StorageError, StoredObject

SEEN = b"\\Seen"


@pytest.fixture
def large_poll(monkeypatch):
    """Make every poll a "large" one (helpers, early uploads) in batches of 3."""
    monkeypatch.setattr(inbound, "PREFETCH_MIN", 1)
    monkeypatch.setattr(inbound, "BATCH", 3)
    monkeypatch.setattr(prefetch, "WAIT", 0.2)


@pytest.fixture
def ingested_with(monkeypatch):
    """Record, per UID, whether the poll handed ingest a parsed mail (the helpers' work) and early uploads."""
    seen: dict[int, tuple[bool, bool]] = {}
    real = inbound.ingest_mail

    def spy(raw, **kwargs):
        seen[kwargs["uid"]] = (kwargs.get("parsed") is not None, kwargs.get("uploads") is not None)
        return real(raw, **kwargs)

    monkeypatch.setattr(inbound, "ingest_mail", spy)
    return seen


def stored_objects() -> set[str]:
    """Return every key in the attachment store (a folder on the SQLite pass, S3 on the PostgreSQL one)."""
    store = attachment_store()
    if isinstance(store, LocalStore):
        root = Path(store.folder)
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    return {o.object_name for o in store.client.list_objects(store.bucket, recursive=True)}


def test_a_large_poll_is_parsed_by_helpers_and_gives_the_same_tickets(
        large_poll, ingested_with, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    files = {n: os.urandom(5_000 + n) for n in range(8)}
    uids = append(*(customer_mail(n, attachment=files[n]) for n in range(8)))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok, report.error
    assert (report.processed, dict(report.outcomes)) == (8, {"created": 8})
    assert ingested_with == {uid: (True, True) for uid in uids}
    tickets = read_tickets()
    assert [t.title.split(" (")[0] for t in tickets] == [f"Printer {n} is on fire" for n in range(8)]
    for n, ticket in enumerate(tickets):
        [attachment] = ticket.attachments
        assert attachment.sha256 == hashlib.sha256(files[n]).hexdigest()
        assert attachment_store().read(attachment.storage_key) == files[n]
    assert [row.uid for row in read_inbound()] == uids
    assert all(SEEN in flags for flags in server_state().values())
    db.session.expire_all()
    assert db.session.get(Mailbox, mailbox.id).last_uid == uids[-1]
    assert multiprocessing.active_children() == []


def test_a_helper_that_dies_stops_the_poll_and_the_rerun_loses_and_duplicates_nothing(
        large_poll, monkeypatch, make_mailbox, append, customer_mail, server_state, read_tickets, read_inbound):
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n) for n in range(9)))
    real_parse = prefetch.parse

    def dies_on_mail_4(raw):
        if b"Printer 4 is on fire" in raw:
            os._exit(3)  # the helper process is killed in the middle of its batch
        return real_parse(raw)

    monkeypatch.setattr(prefetch, "parse", dies_on_mail_4)  # the helpers are forked after this

    crashed = inbound.poll_mailbox(mailbox.id)

    assert not crashed.ok and "helper stopped unexpectedly" in crashed.error
    assert multiprocessing.active_children() == []
    # The mails before mail 4 that reached the poll (the dead helper's last ones may not have) went
    # in, in order, and are checkpointed; nothing from mail 4 on did.
    created = sorted(row.uid for row in read_inbound() if row.outcome == "created")
    assert created == uids[:len(created)] and len(created) <= 4
    assert len(read_tickets()) == len(created)
    db.session.expire_all()
    assert db.session.get(Mailbox, mailbox.id).last_uid == (created[-1] if created else 0)

    monkeypatch.setattr(prefetch, "parse", real_parse)
    rerun = inbound.poll_mailbox(mailbox.id)

    assert rerun.ok, rerun.error
    assert len(read_tickets()) == 9
    assert sorted(row.uid for row in read_inbound() if row.outcome == "created") == uids
    assert all(SEEN in flags for flags in server_state().values())


def test_early_uploads_of_mails_that_keep_no_files_are_removed_a_batch_at_a_time(
        large_poll, monkeypatch, make_mailbox, append, customer_mail, read_tickets, read_inbound):
    mailbox = make_mailbox()
    append(*(customer_mail(n, attachment=os.urandom(3_000)) for n in range(4)))
    assert inbound.poll_mailbox(mailbox.id).ok
    kept = stored_objects()
    assert len(kept) == 4
    # The server renumbers the folder: every mail comes again and is a duplicate, its early upload in vain.
    db.session.expire_all()
    row = db.session.get(Mailbox, mailbox.id)
    row.uidvalidity, row.last_uid = 1, 0
    db.session.commit()
    removals = []
    store_class = type(attachment_store())  # a folder on the SQLite pass, S3 on the PostgreSQL one
    real_delete_many = store_class.delete_many
    monkeypatch.setattr(store_class, "delete_many", lambda store, keys: (removals.append(list(keys)),
                                                                         real_delete_many(store, keys)))

    again = inbound.poll_mailbox(mailbox.id)

    assert again.ok and dict(again.outcomes) == {"duplicate": 4}
    assert stored_objects() == kept
    assert [len(keys) for keys in removals] == [3, 1]  # one removal per batch of 3, not one per mail
    assert len(read_tickets()) == 4
    assert db.session.scalar(db.select(db.func.count(Attachment.id))) == 4


def attachment_keys(tickets) -> list[str]:
    return [attachment.storage_key for ticket in tickets for attachment in ticket.attachments]


def test_equal_files_of_mails_in_one_batch_are_stored_once_and_each_mail_keeps_them(
        large_poll, make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    logo, other = os.urandom(4_000), os.urandom(4_000)
    # Batches of 3; a helper takes every other mail: mails 0 and 2 are the same helper's, in the
    # first batch; mail 3 is in the second.
    append(*(customer_mail(n, attachment=logo if n != 1 else other) for n in range(4)))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and dict(report.outcomes) == {"created": 4}
    keys = attachment_keys(read_tickets())
    assert keys[0] == keys[2]
    assert len(set(keys)) == 3 and len(stored_objects()) == 3
    assert [attachment_store().read(key) for key in keys] == [logo, other, logo, logo]


def test_a_file_shared_with_a_mail_that_keeps_it_is_not_removed_with_a_duplicate(
        large_poll, make_mailbox, append, customer_mail, read_tickets, read_inbound):
    mailbox = make_mailbox()
    logo = os.urandom(4_000)
    earlier = customer_mail(0, attachment=logo)
    append(earlier)
    assert inbound.poll_mailbox(mailbox.id).ok
    kept_before = stored_objects()
    # The same helper, the same batch: first a duplicate of the mail above (its early upload in
    # vain), then a new mail with the same file, then a duplicate of that one.
    fresh = customer_mail(2, attachment=logo)
    append(earlier, customer_mail(1), fresh, fresh)

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and dict(report.outcomes) == {"duplicate": 2, "created": 2}
    tickets = read_tickets()
    new_key = tickets[-1].attachments[0].storage_key
    assert [t.title.split(" (")[0] for t in tickets] == ["Printer 0 is on fire", "Printer 1 is on fire",
                                                           "Printer 2 is on fire"]
    assert stored_objects() == kept_before | {new_key}
    assert attachment_store().read(new_key) == logo


def with_file(raw: bytes, data: bytes) -> bytes:
    """Return the mail `raw` with `data` attached as one more file."""
    mail = email.message_from_bytes(raw, policy=SMTP)
    mail.add_attachment(data, maintype="application", subtype="octet-stream", filename="second.bin")
    return mail.as_bytes(policy=SMTP)


def test_a_helper_whose_upload_fails_part_way_leaves_no_file_that_no_mail_keeps(
        large_poll, monkeypatch, make_mailbox, append, customer_mail, read_tickets):
    mailbox = make_mailbox()
    logo, own, refused = os.urandom(4_000), os.urandom(4_000), os.urandom(4_000)
    # One helper takes mails 0, 2 and 4. In the first batch, mails 0 and 2 both carry the logo;
    # mail 2 and mail 4 (the second batch) also carry a file the helper cannot store. The poll
    # then stores those two mails' files itself.
    append(customer_mail(0, attachment=logo), customer_mail(1), with_file(customer_mail(2, attachment=logo), refused),
           customer_mail(3), with_file(customer_mail(4, attachment=own), refused))
    poller = os.getpid()
    store_class = type(attachment_store())  # a folder on the SQLite pass, S3 on the PostgreSQL one
    real_put = store_class.put

    def put(store, data, **kwargs):
        if data == refused and os.getpid() != poller:
            raise StorageError("The S3 server refused this file")
        return real_put(store, data, **kwargs)

    monkeypatch.setattr(store_class, "put", put)

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and dict(report.outcomes) == {"created": 5}
    tickets = read_tickets()
    store = attachment_store()
    assert [[store.read(a.storage_key) for a in t.attachments] for t in tickets] == [
        [logo], [], [logo, refused], [], [own, refused]]
    # The helper's copy of mail 4's own file is gone; the logo stays while mail 0 keeps it.
    assert stored_objects() == set(attachment_keys(tickets))


@pytest.fixture
def unread_redis_queue(app_config, services):
    """Send jobs to a Redis database of this test's own that no worker reads."""
    from redis import Redis

    url = services["HELPDESK_TEST_REDIS_URL"].rsplit("/", 1)[0] + f"/{uuid.uuid4().int % 14 + 2}"
    app_config.update(JOBS_INLINE=False, REDIS_URL=url)
    redis = Redis.from_url(url)
    redis.flushdb()
    yield redis
    redis.flushdb()
    redis.close()


def test_a_batch_of_confirmations_goes_to_the_workers_as_one_send_job(large_poll, unread_redis_queue, request):
    # Fetched only now: pytest-flask's autouse fixture would build `app` before the config changed.
    app = request.getfixturevalue("app")
    from jobs import rq_queue

    make_mailbox, append, customer_mail = (request.getfixturevalue(name)
                                           for name in ("make_mailbox", "append", "customer_mail"))
    try:
        mailbox = make_mailbox()
        append(*(customer_mail(n) for n in range(7)))

        report = inbound.poll_mailbox(mailbox.id)

        assert report.ok and dict(report.outcomes) == {"created": 7}
        confirmations = sorted(db.session.scalars(db.select(OutboundMessage.id).filter_by(kind="new_ticket")))
        assert len(confirmations) == 7
        queue = rq_queue(app)
        jobs = [queue.fetch_job(i) for i in queue.job_ids]
        # Batches of 3, 3 and 1: one job each, naming every confirmation of its batch.
        assert [job.func_name for job in jobs] == ["jobs.mail.send_outbox"] * 3
        assert sorted(i for job in jobs for i in job.args) == confirmations
        assert sorted(len(job.args) for job in jobs) == [1, 3, 3]
    finally:
        if "redis" in app.extensions:
            app.extensions["redis"].close()


def wait_for_handed_over(helper: prefetch.Prefetcher, count: int) -> None:
    """Wait (30 s at most) until the helper has put `count` messages in its queue."""
    for _ in range(300):
        if helper._queues[0].qsize() >= count:
            return
        time.sleep(0.1)


def test_a_helper_gets_only_as_far_ahead_as_its_byte_budget(monkeypatch, make_mailbox, append, customer_mail):
    # Each mail (about 7 KB) takes 7 units of 1 KB; 20 units hold two mails, not three.
    monkeypatch.setattr(prefetch, "AHEAD_UNIT", 1024)
    monkeypatch.setattr(prefetch, "AHEAD_BYTES", 20 * 1024)
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n, attachment=os.urandom(5_000)) for n in range(6)))

    helper = prefetch.Prefetcher(mailboxes.imap_settings(mailbox), mailbox.folder, uids, batch=6, helpers=1)
    try:
        wait_for_handed_over(helper, 2)  # what its budget allows
        time.sleep(0.5)  # time enough to hand over more, were it allowed to
        assert helper._queues[0].qsize() == 2
        assert [item.uid for item in helper] == uids  # taking them lets it go on to the end
    finally:
        helper.close()
    assert multiprocessing.active_children() == []


def test_stopping_the_helpers_mid_hand_over_returns_and_leaves_no_helper(make_mailbox, append, customer_mail):
    mailbox = make_mailbox()
    # Together more than a pipe holds (64 KB): the helper is still writing when it is stopped.
    uids = append(*(customer_mail(n, attachment=os.urandom(40_000)) for n in range(6)))
    helper = prefetch.Prefetcher(mailboxes.imap_settings(mailbox), mailbox.folder, uids, batch=6, helpers=1)
    first = next(iter(helper))
    wait_for_handed_over(helper, 5)

    closing = threading.Thread(target=helper.close, daemon=True)
    closing.start()
    closing.join(60)  # not a speed limit: without a bound, a hang would stall the whole run

    assert first.uid == uids[0]
    assert not closing.is_alive(), "close() hung on half a message left in the pipe"
    assert multiprocessing.active_children() == []


def test_a_helper_stores_files_itself_while_the_poll_has_its_mails_to_take_and_its_store_is_fast(
        monkeypatch, make_mailbox, append, customer_mail):
    monkeypatch.setattr(prefetch, "SLOW_UPLOAD", 0.3)
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n, attachment=os.urandom(100)) for n in range(12)))
    slow = {"Printer 6 ", "Printer 7 ", "Printer 8 "}  # three slow ones of the last five find the store slow

    def upload(mail, batch):
        if mail.subject[:10] in slow:
            time.sleep(0.5)
        return [StoredObject(key=threading.current_thread().name, size=100, sha256="0" * 64)]

    helper = prefetch.Prefetcher(mailboxes.imap_settings(mailbox), mailbox.folder, uids, batch=12, helpers=1,
                                 upload=upload)
    try:
        wait_for_handed_over(helper, 12)  # the poll takes nothing meanwhile: from the sixth on, two wait for it
        stored_on = [(item.uid, item.stored[0].key) for item in helper]
    finally:
        helper.close()

    assert [uid for uid, _ in stored_on] == uids  # in order, each with its files
    threads = [thread for _, thread in stored_on]
    assert threads[0].startswith("prefetch-upload"), threads  # the poll was waiting for this one
    assert threads[5:9] == ["MainThread"] * 4, threads
    assert all(thread.startswith("prefetch-upload") for thread in threads[9:]), threads  # the store is slow now


def test_helpers_share_the_mails_one_by_one_and_skip_those_expunged_meanwhile(make_mailbox, append, customer_mail):
    mailbox = make_mailbox()
    uids = append(*(customer_mail(n) for n in range(7)))
    # UIDs found by the SEARCH, then gone before the helpers FETCH them: one in the middle, one at the end.
    asked = uids[:3] + [uids[-1] + 50] + uids[3:] + [uids[-1] + 100]

    helper = prefetch.Prefetcher(mailboxes.imap_settings(mailbox), mailbox.folder, asked, batch=2, helpers=2)
    try:
        taken = [(item.uid, item.mail.subject) for item in helper]
    finally:
        helper.close()

    assert [uid for uid, _ in taken] == uids
    assert [subject.split(" (")[0] for _, subject in taken] == [f"Printer {n} is on fire" for n in range(7)]
    assert multiprocessing.active_children() == []
