"""Retention of raw mail: the exact bytes of sent mail and of processed inbound mail are kept
for MAIL_RETENTION_DAYS, then dropped; the log rows stay, and quarantined mail keeps its bytes
until it is handled (reprocessing replaces its row)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice

from flask import current_app
from sqlalchemy import false, func, update

from helpdesk.extensions import db
from helpdesk.models import Attachment, InboundMail, OutboundMessage
from helpdesk.models._time import utcnow
from helpdesk.services.attachments import attachment_store
from helpdesk.storage import StorageError

log = logging.getLogger(__name__)
BATCH = 500
# Raw bytes a quarantined mail could not put in the store wait in the local spool under this prefix.
_SPOOL_PREFIX = "spool:"


@dataclass
class RawMailTotals:
    sent_count: int
    sent_bytes: int
    inbound_count: int
    inbound_bytes: int

    @property
    def count(self) -> int:
        return self.sent_count + self.inbound_count

    @property
    def bytes(self) -> int:
        return self.sent_bytes + self.inbound_bytes


@dataclass
class RetentionSummary:
    days: int
    cutoff: datetime
    kept: RawMailTotals  # everything kept now
    due: RawMailTotals  # what the next run removes
    quarantined: RawMailTotals  # kept until handled, whatever its age


def retention_days() -> int:
    return int(current_app.config.get("MAIL_RETENTION_DAYS", 90))


def cutoff(now: datetime | None = None) -> datetime:
    """Return the time before which raw mail is dropped."""
    return (now or utcnow()) - timedelta(days=retention_days())


def _sent(*conditions):
    return db.session.execute(db.select(func.count(), func.coalesce(func.sum(OutboundMessage.raw_size), 0))
                              .where(OutboundMessage.raw_size.is_not(None), *conditions)).one()


def _inbound(*conditions):
    return db.session.execute(db.select(func.count(), func.coalesce(func.sum(InboundMail.size), 0))
                              .where(InboundMail.raw_key.is_not(None), *conditions)).one()


def _totals(sent_conditions, inbound_conditions) -> RawMailTotals:
    sent_count, sent_bytes = _sent(*sent_conditions)
    inbound_count, inbound_bytes = _inbound(*inbound_conditions)
    return RawMailTotals(sent_count, int(sent_bytes), inbound_count, int(inbound_bytes))


def _due_sent(before: datetime):
    return (OutboundMessage.created_at < before,)


def _due_inbound(before: datetime):
    return (InboundMail.outcome != "quarantined", InboundMail.created_at < before)


def summary(now: datetime | None = None) -> RetentionSummary:
    """Return how much raw mail is kept and how much of it the next run removes."""
    before = cutoff(now)
    return RetentionSummary(
        days=retention_days(), cutoff=before,
        kept=_totals((), ()),
        due=_totals(_due_sent(before), _due_inbound(before)),
        quarantined=_totals((false(),), (InboundMail.outcome == "quarantined",)))


def drop_old_raw_mail(now: datetime | None = None) -> RawMailTotals:
    """Drop the raw bytes older than the retention time, in batches; return what was dropped."""
    before = cutoff(now)
    dropped = RawMailTotals(0, 0, 0, 0)
    while True:
        rows = db.session.execute(db.select(OutboundMessage.id, OutboundMessage.raw_size)
                                  .where(OutboundMessage.raw_size.is_not(None), *_due_sent(before))
                                  .limit(BATCH)).all()
        if not rows:
            break
        db.session.execute(update(OutboundMessage).where(OutboundMessage.id.in_([r[0] for r in rows]))
                           .values(raw_sent=None, raw_size=None).execution_options(synchronize_session=False))
        db.session.commit()
        dropped.sent_count += len(rows)
        dropped.sent_bytes += sum(r[1] or 0 for r in rows)
    while True:
        rows = db.session.execute(db.select(InboundMail.id, InboundMail.raw_key, InboundMail.size)
                                  .where(InboundMail.raw_key.is_not(None), *_due_inbound(before))
                                  .limit(BATCH)).all()
        if not rows:
            break
        db.session.execute(update(InboundMail).where(InboundMail.id.in_([r[0] for r in rows]))
                           .values(raw_key=None).execution_options(synchronize_session=False))
        keys = {r[1] for r in rows}
        # The same bytes may be kept for another row (a quarantined copy): those stay.
        still_used = set(db.session.scalars(db.select(InboundMail.raw_key).where(InboundMail.raw_key.in_(keys))))
        db.session.commit()
        _remove([k for k in keys - still_used if not k.startswith(_SPOOL_PREFIX)])
        dropped.inbound_count += len(rows)
        dropped.inbound_bytes += sum(r[2] or 0 for r in rows)
    if dropped.count:
        log.info("retention: dropped the raw bytes of %d sent and %d inbound mails (%d bytes)",
                 dropped.sent_count, dropped.inbound_count, dropped.bytes)
    return dropped


def _remove(keys: list[str]) -> None:
    if not keys:
        return
    try:
        attachment_store().delete_many(keys)
    except StorageError:
        log.warning("retention: some raw mails stay in the store (only space lost)", exc_info=True)


# Files are put in the store before the rows that name them commit; one whose mail or upload was
# rolled back names no row. Old enough, no transaction can still be about to name it.
UNREFERENCED_GRACE = timedelta(days=1)


def sweep_unreferenced_files(grace: timedelta = UNREFERENCED_GRACE) -> int:
    """Remove stored files older than `grace` that no attachment or kept raw mail names; return how many."""
    store = attachment_store()
    removed = 0
    keys = store.keys_older_than("att/", utcnow().replace(tzinfo=timezone.utc) - grace)
    while chunk := list(islice(keys, BATCH)):
        named = set(db.session.scalars(db.select(Attachment.storage_key).where(Attachment.storage_key.in_(chunk))))
        named |= set(db.session.scalars(db.select(InboundMail.raw_key).where(InboundMail.raw_key.in_(chunk))))
        db.session.rollback()  # a read: no transaction held open while the store works
        unnamed = [key for key in chunk if key not in named]
        _remove(unnamed)
        removed += len(unnamed)
    if removed:
        log.info("removed %d stored files that no attachment or raw mail names", removed)
    return removed
