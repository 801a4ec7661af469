"""Polling support mailboxes: one poll per mailbox at a time, its mails ingested batch by batch, then marked done.

The order is what keeps mail safe: a batch's mails are written in one transaction, and
marked seen/moved/deleted on the server only after it has committed; the UID checkpoint
moves only after that. A crash anywhere leaves mail on the server that the next poll
fetches again; the ingest dedupe (channel + Message-ID, or a hash) turns the second pass
into "duplicate".
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, update

from helpdesk.extensions import begin_writing, db
from helpdesk.mail.imap import ImapError, ImapSession
from helpdesk.mail.secrets import CredentialError
from helpdesk.models import Mailbox
from helpdesk.models._time import utcnow
from helpdesk.services import background, mailboxes, sign_in
from helpdesk.services.ingest import IngestResult, Origin, Run, record

log = logging.getLogger(__name__)

BATCH = 50  # mails per FETCH; each batch is written in one transaction and marked done with one command
LOCK_SECONDS = 300  # a poll that dies keeps its mailbox locked this long at most
BUSY = "another poll is running"

OnResult = Callable[[int, IngestResult], None]


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


def renew_lock(mailbox_id: int, owner: str, *, commit: bool = True) -> None:
    """Push our lock's expiry forward; raise MailboxBusy when it is no longer ours; commit unless told not to."""
    result = db.session.execute(
        update(Mailbox).where(Mailbox.id == mailbox_id, Mailbox.locked_by == owner)
        .values(locked_until=utcnow() + timedelta(seconds=_lock_seconds()))
        .execution_options(synchronize_session=False))
    if commit:
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
        # Settings and own addresses are read once per poll: a change applies from the next.
        run = Run.start() if uids else None
        for start in range(0, len(uids), BATCH):
            _ingest_batch(session, mailbox_id, owner, uids[start:start + BATCH], state.uidvalidity, run, report,
                          on_result)


def _ingest_batch(session: ImapSession, mailbox_id: int, owner: str, uids: list[int], uidvalidity: int, run: Run,
                  report: PollReport, on_result: OnResult | None) -> None:
    """Fetch a batch, write its mails in one transaction, then mark them done and move the checkpoint."""
    fetched: list[tuple[int, bytes]] = []
    fetch_failure: ImapError | None = None
    try:
        fetched.extend(session.fetch_uids(uids, batch=BATCH))
    except ImapError as exc:  # the mails fetched before it are still ingested and marked done
        fetch_failure = exc
    channel = f"mailbox:{mailbox_id}"
    done: list[int] = []
    results: list[tuple[int, IngestResult]] = []
    not_recorded = ""
    begin_writing()
    renew_lock(mailbox_id, owner, commit=False)
    for uid, raw in fetched:
        result = record(raw, Origin(channel, mailbox_id, uid, uidvalidity), run)
        if result.inbound_id is None:
            # Nothing durable could be recorded (the database failed): leave this mail and the
            # ones after it on the server for the next poll.
            not_recorded = f"Mail UID {uid} could not be recorded ({result.reason}); it stays on the server."
            break
        results.append((uid, result))
        done.append(uid)
    if not_recorded:
        db.session.rollback()
        raise MailNotRecorded(not_recorded)
    db.session.commit()  # durable before the server hears the mails are done
    for uid, result in results:
        report.processed += 1
        report.outcomes[result.outcome] += 1
        if on_result is not None:
            on_result(uid, result)
    mailbox = db.session.get(Mailbox, mailbox_id)
    if done:
        mark_processed(session, mailbox, done)
    # Mails missing from the FETCH were expunged by someone else meanwhile: nothing to keep.
    # After a fetch failure, though, the ones not fetched are still to do.
    checkpoint = max(done, default=mailbox.last_uid) if fetch_failure else uids[-1]
    mailbox.last_uid = max(mailbox.last_uid, checkpoint)
    db.session.commit()
    if fetch_failure is not None:
        raise fetch_failure


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
    now = utcnow()
    due = []
    for mailbox in db.session.scalars(db.select(Mailbox).where(Mailbox.enabled.is_(True)).order_by(Mailbox.id)):
        if mailbox.locked_until is not None and mailbox.locked_until > now:
            continue  # a poll is running; its end sets last_poll_at
        if mailbox.last_poll_at is None or mailbox.last_poll_at + timedelta(seconds=mailbox.poll_interval) <= now:
            background.poll_mailbox_after_commit(mailbox.id)
            due.append(mailbox.id)
    db.session.commit()  # enqueue dispatches after the commit
    return due
