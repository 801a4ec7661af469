"""Polling support mailboxes: one poll per mailbox at a time, each mail ingested, then marked done.

The order is what keeps mail safe: a mail is marked seen/moved/deleted on the server only
after `ingest_mail` has committed its outcome, and the UID checkpoint moves only after
that. A crash anywhere leaves mail on the server that the next poll fetches again; the
ingest dedupe (channel + Message-ID, or a hash) turns the second pass into "duplicate".
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from flask import current_app
from sqlalchemy import or_, update

from helpdesk.extensions import db, durable_commit, group_commits, one_connection
from helpdesk.mail import prefetch
from helpdesk.mail.imap import ImapError, ImapSession
from helpdesk.mail.parse import ParsedMail, parse
from helpdesk.mail.secrets import CredentialError
from helpdesk.models import Mailbox
from helpdesk.models._time import utcnow
from helpdesk.services import lookups, mailboxes, sign_in
from helpdesk.services.ingest import (IngestResult, discard_uploads, early_uploader, ingest_mail,
                                      remove_gathered, removals_gathered)
from helpdesk.services.mailboxes import own_addresses
from helpdesk.storage import StoredObject, Uploads
import jobs

log = logging.getLogger(__name__)

BATCH = 50  # mails per FETCH; each batch is marked done with one command
LOCK_SECONDS = 300  # a poll that dies keeps its mailbox locked this long at most
BUSY = "another poll is running"

PREFETCH_MIN = 100  # new mails from which a helper process parses while this one stores
OnResult = Callable[[int, IngestResult], None]
Fetched = tuple[int, bytes, ParsedMail | None, "list[StoredObject] | None"]


@dataclass
class PollReport:
    """What one poll of a mailbox did."""

    mailbox_id: int
    ok: bool = False
    skipped: str = ""  # why the poll did not run (BUSY, no such mailbox)
    error: str = ""  # plain-words diagnosis when it failed
    error_kind: str = ""  # the ImapError kind, e.g. "auth" when the server refused the sign-in
    processed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    uidvalidity_changed: bool = False
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        """Say in one line what happened."""
        if self.skipped:
            return f"Not polled: {self.skipped}."
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        done = f"{self.processed} mail{'s' if self.processed != 1 else ''}" + (f" ({counts})" if counts else "")
        return f"Polled: {done}." if self.ok else f"Poll failed after {done}: {self.error}"


class MailboxBusy(Exception):
    """The mailbox lock was taken over by another worker (ours expired) mid-poll."""


class MailNotRecorded(Exception):
    """Ingest could not record a mail's outcome; it stays on the server for the next poll."""


def _lock_seconds() -> int:
    return int(current_app.config.get("MAILBOX_LOCK_SECONDS", LOCK_SECONDS))


def worker_name() -> str:
    """Return a lock owner name unique to this poll, readable in the status panel."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire_lock(mailbox_id: int, owner: str) -> bool:
    """Take the mailbox's poll lock unless another live poll holds it; commit."""
    now = utcnow()
    # One conditional UPDATE: the database serialises concurrent ones (row lock on PostgreSQL,
    # the write lock on SQLite), so exactly one worker sees a row changed.
    result = db.session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id, or_(Mailbox.locked_until.is_(None), Mailbox.locked_until < now))
        .values(locked_until=now + timedelta(seconds=_lock_seconds()), locked_by=owner)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def renew_lock(mailbox_id: int, owner: str) -> None:
    """Push our lock's expiry forward; raise MailboxBusy when it is no longer ours; commit."""
    result = db.session.execute(
        update(Mailbox).where(Mailbox.id == mailbox_id, Mailbox.locked_by == owner)
        .values(locked_until=utcnow() + timedelta(seconds=_lock_seconds()))
        .execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount != 1:
        raise MailboxBusy("the poll lock expired and another worker took the mailbox over")


def release_lock(mailbox_id: int, owner: str) -> None:
    """Give the lock back if it is still ours; commit."""
    db.session.execute(
        update(Mailbox).where(Mailbox.id == mailbox_id, Mailbox.locked_by == owner)
        .values(locked_until=None, locked_by="")
        .execution_options(synchronize_session=False))
    db.session.commit()


def mark_processed(session: ImapSession, mailbox: Mailbox, uids: list[int]) -> None:
    """Mark ingested mails done on the server as the mailbox says: seen, moved or deleted."""
    session.mark_done(uids, mailbox.after_processing, mailbox.move_to_folder or None)


def poll_mailbox(mailbox_id: int, *, on_result: OnResult | None = None) -> PollReport:
    """Fetch the mailbox's new mail, ingest each mail, mark it done; never raise."""
    report = PollReport(mailbox_id)
    started = time.monotonic()
    owner = worker_name()
    try:
        if db.session.get(Mailbox, mailbox_id) is None:
            report.skipped = "no such mailbox"
            return report
        if not acquire_lock(mailbox_id, owner):
            report.skipped = BUSY
            return report
    except Exception:
        db.session.rollback()
        log.exception("mailbox %s: cannot take the poll lock", mailbox_id)
        report.error = "The database refused the poll lock; see the server log."
        return report
    try:
        with one_connection():
            _poll(mailbox_id, owner, report, on_result)
        report.ok = True
    except ImapError as exc:
        report.error = exc.diagnosis + (f" Server said: {exc.server_reply}" if exc.server_reply else "")
        report.error_kind = exc.kind
    except CredentialError as exc:
        report.error = str(exc)
    except MailboxBusy as exc:
        report.error = f"Stopped: {exc}."
    except MailNotRecorded as exc:
        report.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a job must record its failure, not vanish
        log.exception("mailbox %s: poll failed", mailbox_id)
        report.error = f"Unexpected error ({type(exc).__name__}: {exc}); see the server log."
    finally:
        report.seconds = time.monotonic() - started
        _finish(mailbox_id, owner, report)
    return report


def _poll(mailbox_id: int, owner: str, report: PollReport, on_result: OnResult | None) -> None:
    mailbox = db.session.get(Mailbox, mailbox_id)
    if not mailbox.host:
        raise ImapError("config", "No IMAP host is set for this mailbox: fill in the settings and save.")
    with ImapSession(mailboxes.imap_settings(mailbox)) as session:
        state = session.select(mailbox.folder)
        if mailbox.uidvalidity != state.uidvalidity:
            # The server renumbered the folder (or this is the first poll): start over; the
            # ingest dedupe makes mails seen before come back as "duplicate", not as new tickets.
            report.uidvalidity_changed = mailbox.uidvalidity is not None
            if report.uidvalidity_changed:
                log.warning("mailbox %s: UIDVALIDITY %s -> %s, re-scanning", mailbox.id, mailbox.uidvalidity,
                            state.uidvalidity)
            mailbox.uidvalidity = state.uidvalidity
            mailbox.last_uid = 0
            db.session.commit()
        uids = session.search_uids_since(mailbox.last_uid)
        if uids:
            # Settings (own addresses, templates, SLA targets) are read once per poll, not per
            # mail: a change applies from the next poll.
            # Each mail is committed on its own, without waiting for the disk; one durable commit
            # per batch makes them all durable before the server hears they are done.
            with lookups.shared(), group_commits(), removals_gathered(), _fetcher(session, mailbox, uids) as fetched:
                _ingest_all(session, mailbox_id, owner, uids, fetched, state.uidvalidity, report, on_result)


@contextmanager
def _fetcher(session: ImapSession, mailbox: Mailbox, uids: list[int]) -> Iterator[Iterator[Fetched]]:
    """Yield the new mails in UID order: parsed by a helper process when there are many, else fetched here."""
    if len(uids) >= PREFETCH_MIN and prefetch.available():
        # The helpers' batches are `_ingest_all`'s: a file they store once for several mails of a
        # batch is removed, if at all, only once the whole batch is in.
        helper = prefetch.Prefetcher(mailboxes.imap_settings(mailbox), mailbox.folder, uids, BATCH,
                                     upload=early_uploader())
        try:
            yield ((item.uid, item.raw, item.mail, item.stored) for item in helper)
        finally:
            for stored in helper.close():  # files the helpers stored for mails the poll never took
                discard_uploads(Uploads.completed(stored))
    else:
        yield ((uid, raw, None, None) for uid, raw in session.fetch_uids(uids, batch=BATCH))


def _ingest_all(session: ImapSession, mailbox_id: int, owner: str, uids: list[int], fetched: Iterator[Fetched],
                uidvalidity: int, report: PollReport, on_result: OnResult | None) -> None:
    """Ingest the new mails batch by batch: each mail committed, then the batch marked done and checkpointed."""
    channel = f"mailbox:{mailbox_id}"
    own = lookups.cached("own_addresses", own_addresses)
    ahead = _Ahead(fetched)
    try:
        for start in range(0, len(uids), BATCH):
            chunk = uids[start:start + BATCH]
            done: list[int] = []
            failed = ""
            # The batch's confirmation mails go to the workers as one send job, not one per mail.
            with jobs.gathered():
                while (item := ahead.take(up_to_uid=chunk[-1])) is not None:
                    uid, raw, parsed, uploads = item
                    result = ingest_mail(raw, channel=channel, mailbox_id=mailbox_id, uid=uid,
                                         uidvalidity=uidvalidity, own=own, parsed=parsed, uploads=uploads,
                                         then=partial(ahead.next_parsed, up_to_uid=chunk[-1]))
                    report.processed += 1
                    report.outcomes[result.outcome] += 1
                    if on_result is not None:
                        on_result(uid, result)
                    if result.outcome != "duplicate" and result.inbound_id is None:
                        # Nothing durable was recorded (the database failed): leave this mail and the
                        # ones after it on the server for the next poll.
                        failed = f"Mail UID {uid} could not be recorded ({result.reason}); it stays on the server."
                        break
                    done.append(uid)
                with durable_commit():
                    renew_lock(mailbox_id, owner)
                mailbox = db.session.get(Mailbox, mailbox_id)
                if done:
                    mark_processed(session, mailbox, done)
                # Mails missing from the FETCH were expunged by someone else meanwhile: nothing to keep.
                # After a failure, though, the ones not taken are still to do.
                stopped = ahead.failure
                checkpoint = max(done, default=mailbox.last_uid) if failed or stopped else chunk[-1]
                mailbox.last_uid = max(mailbox.last_uid, checkpoint)
                db.session.commit()
                remove_gathered()  # what the batch's mails did not keep
                if failed:
                    raise MailNotRecorded(failed)
                if stopped is not None:
                    raise stopped
    finally:
        ahead.discard()  # the poll stopped before those mails


Ahead = tuple[int, bytes, ParsedMail | None, Uploads | None]


class _Ahead:
    """The next few mails, taken from the fetcher (with the files their helper stored).

    A failure to fetch is kept in line and reported when it is due, so the mails before it are
    still ingested and marked done.
    """

    DEPTH = 4

    def __init__(self, fetched: Iterator[Fetched]) -> None:
        self._fetched = fetched
        self._items: deque[Ahead | ImapError] = deque()
        self._ended = False
        self._fill()

    def take(self, *, up_to_uid: int) -> Ahead | None:
        """Return the next mail if its UID is at most `up_to_uid`, else None."""
        if not self._due(up_to_uid):
            return None
        item = self._items.popleft()
        self._fill()
        return item

    def next_parsed(self, *, up_to_uid: int) -> tuple[bytes, ParsedMail] | None:
        """Return the next mail's (raw, parsed) if its UID is at most `up_to_uid`, parsing it now if no helper did."""
        if not self._due(up_to_uid):
            return None
        uid, raw, parsed, uploads = self._items[0]
        if parsed is None:
            # Should parsing fail, the caller (ingest) goes on without it, and this mail's own ingest
            # parses it again and quarantines it.
            parsed = parse(raw)
            self._items[0] = (uid, raw, parsed, uploads)  # parsed once: its ingest takes this
        return raw, parsed

    def _due(self, up_to_uid: int) -> bool:
        """Tell whether a mail stands next in line (not a fetch failure) with its UID at most `up_to_uid`."""
        return bool(self._items) and not isinstance(self._items[0], ImapError) and self._items[0][0] <= up_to_uid

    @property
    def failure(self) -> ImapError | None:
        """The fetch failure that stands next in line, if any."""
        return self._items[0] if self._items and isinstance(self._items[0], ImapError) else None

    def discard(self) -> None:
        """Remove what was uploaded for mails never ingested."""
        for item in self._items:
            if isinstance(item, tuple) and item[3] is not None:
                discard_uploads(item[3])
        self._items.clear()

    def _fill(self) -> None:
        while not self._ended and len(self._items) < self.DEPTH:
            try:
                item = next(self._fetched, None)
            except ImapError as exc:
                self._items.append(exc)
                self._ended = True
                return
            if item is None:
                self._ended = True
                return
            uid, raw, parsed, stored = item
            # Files a helper stored already; otherwise ingest stores them once routing wants them.
            self._items.append((uid, raw, parsed, Uploads.completed(stored) if stored is not None else None))


def _finish(mailbox_id: int, owner: str, report: PollReport) -> None:
    """Record the poll's status and release the lock, whatever happened before."""
    try:
        db.session.rollback()
        mailbox = db.session.get(Mailbox, mailbox_id)
        if mailbox is not None:
            mailbox.last_poll_at = utcnow()
            mailbox.last_poll_ok = report.ok
            mailbox.last_poll_error = "" if report.ok else report.error
            mailbox.last_poll_count = report.processed
            sign_in.record_poll(mailbox, report.ok, report.error_kind, report.error)
        db.session.commit()
        release_lock(mailbox_id, owner)
    except Exception:
        db.session.rollback()
        log.exception("mailbox %s: cannot record the poll status; the lock expires by itself", mailbox_id)


def queue_due_polls() -> list[int]:
    """Queue a poll job for each enabled mailbox whose interval has passed; return their ids."""
    from jobs import enqueue
    from jobs.mail import poll_mailbox as poll_job

    now = utcnow()
    due = []
    for mailbox in db.session.scalars(db.select(Mailbox).where(Mailbox.enabled.is_(True)).order_by(Mailbox.id)):
        if mailbox.locked_until is not None and mailbox.locked_until > now:
            continue  # a poll is running; its end sets last_poll_at
        if mailbox.last_poll_at is None or mailbox.last_poll_at + timedelta(seconds=mailbox.poll_interval) <= now:
            enqueue(poll_job, mailbox.id)
            due.append(mailbox.id)
    db.session.commit()  # enqueue dispatches after the commit
    return due
