"""Turn one raw inbound mail into a ticket, a comment, an ignored or a quarantined mail — exactly once.

The one pipeline behind IMAP polling and `flask email ingest`:
parse -> route -> contact/customer -> ticket or comment + attachments -> outcome row -> commit.
The outcome row (InboundMail) claims the mail's dedupe key first and is committed
in the same transaction as the ticket or comment, so a crash before the commit
leaves nothing behind and a rerun makes the ticket exactly once. Anything that
goes wrong with one mail rolls its transaction back and records it as
quarantined, raw bytes kept for Reprocess; nothing is raised to the caller.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import Select, bindparam, func, inspect, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from helpdesk import pipeline
from helpdesk.extensions import db
from helpdesk.mail import route, tokens
from helpdesk.mail.freemail import is_free_mail
from helpdesk.mail.html import sanitise
from helpdesk.mail.parse import ParsedAttachment, ParsedMail, parse
from helpdesk.mail.trim import trim_reply
from helpdesk.models import Comment, Contact, Customer, CustomerDomain, InboundMail, OutboundMessage, Ticket
from helpdesk.models._rows import insert_id, insert_row, loaded
from helpdesk.models._time import utcnow
from helpdesk.services import lookups, outbox
from helpdesk.services.attachments import attachment_store, link_attachment
from helpdesk.services.mailboxes import own_addresses
from helpdesk.services.tickets import add_comment, open_ticket
from helpdesk.storage import LocalStore, SharedPuts, StorageError, StoredObject, Uploads

log = logging.getLogger(__name__)

# Column widths of the tables written here: PostgreSQL refuses longer strings.
_ADDRESS_MAX, _NAME_MAX, _HEADER_MAX, _FILE_MAX = 254, 200, 998, 255
SPOOL_PREFIX = "spool:"
NextMail = Callable[[], "tuple[bytes, ParsedMail] | None"]  # the mail ingested next, parsed, if any


class ReprocessError(Exception):
    """A quarantined mail cannot be reprocessed; the message says why in plain words."""


@dataclass
class IngestResult:
    """What became of one mail."""

    outcome: str  # created | appended | ignored | quarantined | duplicate
    ticket_id: int | None = None
    comment_id: int | None = None
    message_id: str | None = None
    reason: str = ""
    # The outcome row; None only when not even the quarantine could be recorded (the database
    # is unreachable): the caller must then leave the mail where it is and try again later.
    inbound_id: int | None = None

    def summary(self) -> dict:
        """Return the fields `flask email ingest` prints for each mail."""
        return {"message_id": self.message_id, "outcome": self.outcome, "ticket_id": self.ticket_id,
                "reason": self.reason}


@dataclass(frozen=True)
class _Origin:
    channel: str
    mailbox_id: int | None
    uid: int | None
    uidvalidity: int | None


@dataclass(frozen=True)
class _Settings:
    token_key: bytes
    max_size: int
    create_contacts: bool
    loop_limit: int
    loop_window: int
    spool_folder: str


def ingest_mail(raw: bytes, *, channel: str = "cli", mailbox_id: int | None = None, uid: int | None = None,
                uidvalidity: int | None = None, own: frozenset[str] | None = None,
                parsed: ParsedMail | None = None, uploads: Uploads | None = None,
                then: NextMail | None = None) -> IngestResult:
    """Make a ticket or comment from one raw mail (or ignore or quarantine it), record the outcome, commit.

    Each mail is one transaction of its own: call this with no pending changes in the session.
    The same mail on the same channel a second time changes nothing and returns "duplicate".
    `own` is `own_addresses()` when the caller looked it up once for many mails (a poll);
    `parsed` is `parse(raw)` when the caller had it parsed already (a poll's helper process), and
    `uploads` the files a helper stored for it: used if the mail keeps its files, else removed.
    `then()` returns the (raw, parsed) mail the caller ingests next on this channel, or None: where
    the database can use it, this mail's commit brings back what that one's ingest asks first.
    """
    return _ingest(bytes(raw), _Origin(channel, mailbox_id, uid, uidvalidity), own=own, parsed=parsed,
                   early=uploads, then=then)


def early_files(mail: ParsedMail, max_size: int) -> list[tuple[bytes, str]] | None:
    """Return the (data, content type) a mail will likely keep, or None when that waits for routing.

    Automatic mail (bounces, out-of-office) and mail over the size limit rarely keep files.
    """
    if not mail.attachments or mail.auto_submitted or mail.is_bounce or mail.size > max_size:
        return None
    return [(part.data, _content_type(part)) for part in mail.attachments]


def early_uploader() -> Callable[[ParsedMail, int], list[StoredObject] | None]:
    """Return what a poll's helper process calls to store a parsed mail's files (None: it did not).

    It opens its own connection to the store on first use: a forked process must not share the
    parent's. Equal files of mails in the same batch of the poll (the second argument) are stored
    once; within `removals_gathered()`, a batch's removals spare the objects any of its mails kept.
    """
    parent = attachment_store()
    try:
        # Here, once, rather than in each helper: helpers racing to create a new bucket wait on each other.
        parent.ready()
    except StorageError:
        pass  # the helpers try for themselves, and the poll reports what fails
    max_size = _settings().max_size
    store: list[SharedPuts] = []
    opening = threading.Lock()

    def upload(mail: ParsedMail, batch: int) -> list[StoredObject] | None:
        files = early_files(mail, max_size)
        if not files:
            return None
        with opening:
            if not store:
                store.append(SharedPuts(parent.fresh()))
        stored: list[StoredObject] = []
        try:
            for data, content_type in files:
                stored.append(store[0].put(data, content_type=content_type, scope=batch))
            return stored
        except StorageError:
            return None  # the poll stores them itself, and says what failed if it fails again
        finally:
            if len(stored) < len(files):
                _give_back(store[0], stored)

    return upload


def _give_back(store: SharedPuts, stored: list[StoredObject]) -> None:
    """Give back what a helper stored for a mail whose other files failed (removed unless another mail has it)."""
    for obj in stored:
        try:
            store.give_back(obj)
        except StorageError:
            log.warning("could not remove stored object %s", obj.key, exc_info=True)  # only space lost


def reprocess(inbound_id: int) -> IngestResult:
    """Run a quarantined mail through the pipeline again, replacing its quarantine record."""
    inbound = db.session.get(InboundMail, inbound_id)
    if inbound is None:
        raise ReprocessError(f"There is no inbound mail #{inbound_id}.")
    if inbound.outcome != "quarantined" or not inbound.raw_key:
        raise ReprocessError(f"Inbound mail #{inbound_id} is {inbound.outcome}, not a quarantined mail with its "
                             "raw bytes kept: there is nothing to reprocess.")
    try:
        raw = quarantined_raw(inbound)
    except StorageError as exc:
        raise ReprocessError(f"The raw bytes of inbound mail #{inbound_id} cannot be read: {exc}") from exc
    old_key = inbound.raw_key
    origin = _Origin(inbound.channel, inbound.mailbox_id, inbound.uid, inbound.uidvalidity)
    # An admin asked for this mail: the loop guard that held it back must not hold it again.
    result = _ingest(raw, origin, replacing=inbound, loop_check=False)
    if result.inbound_id != inbound_id:
        _forget_raw(old_key)
    return result


def quarantined_raw(inbound: InboundMail) -> bytes:
    """Return the raw bytes kept for a quarantined mail; raise StorageError when they cannot be read."""
    if not inbound.raw_key:
        raise StorageError(f"Inbound mail #{inbound.id} has no raw bytes kept", kind="missing")
    if inbound.raw_key.startswith(SPOOL_PREFIX):
        return LocalStore(_settings().spool_folder).read(inbound.raw_key.removeprefix(SPOOL_PREFIX))
    return attachment_store().read(inbound.raw_key)


def dedupe_key(mail: ParsedMail, raw: bytes) -> str:
    """Return what identifies this mail among the ones already received: its Message-ID, else its hash."""
    if _usable_key(mail.message_id):
        return mail.message_id
    return _raw_key(raw)


def _raw_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------------------
# The transaction around one mail


def _ingest(raw: bytes, origin: _Origin, *, replacing: InboundMail | None = None,
            loop_check: bool = True, own: frozenset[str] | None = None,
            parsed: ParsedMail | None = None, early: Uploads | None = None,
            then: NextMail | None = None) -> IngestResult:
    started = time.perf_counter()
    mail: ParsedMail | None = None
    key = ""  # set from the parsed mail; hashing every raw mail up front would cost a pass over its bytes
    error: Exception | None = None
    # A second try only for a unique-key clash that is not our dedupe key: a concurrent
    # poller created the same new contact, which the second try then finds.
    for _attempt in range(2):
        # Whatever fails removes the early uploads with the rest; a second try uploads afresh.
        stored: list[str | Uploads] = [early] if early is not None else []
        try:
            mail = parsed if parsed is not None else parse(raw)
            key = dedupe_key(mail, raw)
            settings = _settings()
            recent: int | None = None
            if replacing is None:
                earlier, recent = _earlier_and_recent(origin.channel, key, mail, settings, loop_check)
                if earlier is not None:
                    _forget_uploads(stored)
                    if earlier.outcome == "quarantined" and not earlier.raw_key:
                        _keep_raw_late(earlier, raw)
                    return _duplicate(earlier, mail)
            else:
                db.session.delete(replacing)
                db.session.flush()
                if loop_check and mail.from_address:
                    recent = _recent_from_sender(mail, settings)
            return _process(raw, mail, key, origin, started, stored, settings, own, recent, early, then)
        except IntegrityError as exc:
            _undo(stored)
            early = None
            error = exc
            earlier = _recorded_quietly(origin.channel, key)
            if earlier is not None and (replacing is None or earlier.id != replacing.id):
                return _duplicate(earlier, mail)
        except Exception as exc:  # noqa: BLE001 - one bad mail is quarantined, never stops the mails after it
            _undo(stored)
            error = exc
            break
    assert error is not None
    return _quarantine(raw, mail, key or _raw_key(raw), origin, started, error, replacing)


def _process(raw: bytes, mail: ParsedMail, key: str, origin: _Origin, started: float, stored: list[str | Uploads],
             settings: _Settings, own: frozenset[str] | None, recent: int | None,
             early: Uploads | None, then: NextMail | None) -> IngestResult:
    decision = route.decide(mail, _context(mail, settings, own, recent))
    uploads = _start_uploads(mail, decision, stored, early)

    ticket: Ticket | None = None
    comment: Comment | None = None
    raw_key = None
    reason = _text(decision.reason)
    if decision.kind == "new_ticket":
        ticket = _open(mail, decision, origin, settings, uploads)
        outcome = "created"
    elif decision.kind == "comment":
        ticket = db.session.get(Ticket, decision.ticket_id)
        comment = _append(ticket, mail, decision, settings, uploads)
        outcome = "appended"
    elif decision.kind == "ignore":
        outcome = "ignored"
    else:
        outcome = "quarantined"
        raw_key, note = _keep_raw(raw, settings, stored)
        reason = f"{reason}{note}"
    if decision.bounce_of:
        _mark_bounced(decision.bounce_of, mail)
    # The outcome row goes last, with its final values: it claims the mail's dedupe key, so a
    # concurrent poller with the same mail waits for this commit (PostgreSQL) or fails at its
    # own, and ends as "duplicate" either way, its work rolled back.
    inbound_id = insert_id(InboundMail, dict(
        channel=origin.channel, mailbox_id=origin.mailbox_id, uid=origin.uid, uidvalidity=origin.uidvalidity,
        dedupe_key=key, message_id=_clip(mail.message_id, _HEADER_MAX),
        sender=_clip(mail.from_address, _ADDRESS_MAX) or "", subject=_clip(mail.subject, _HEADER_MAX) or "",
        size=len(raw), outcome=outcome, reason=reason, raw_key=raw_key,
        ticket_id=ticket.id if ticket else None, comment_id=comment.id if comment else None,
        processing_ms=_elapsed_ms(started)))
    result = IngestResult(outcome, ticket_id=ticket.id if ticket else None, comment_id=comment.id if comment else None,
                          message_id=mail.message_id, reason=reason, inbound_id=inbound_id)
    if then is not None:
        pipeline.query_after_commit(db.session.connection(), lambda: _next_lookup(origin.channel, then, settings))
    db.session.commit()
    if early is not None and uploads is not early:
        _forget_uploads([early])  # started in vain: this mail keeps no files
    elif early is not None:
        _kept(early)
    if result.outcome == "quarantined":
        log.warning("inbound mail %s quarantined: %s", mail.message_id or key, reason)
    return result


def _quarantine(raw: bytes, mail: ParsedMail | None, key: str, origin: _Origin, started: float,
                error: Exception, replacing: InboundMail | None) -> IngestResult:
    """Record a mail that failed as quarantined, in a transaction of its own, raw bytes kept."""
    message_id = mail.message_id if mail else None
    reason = _text(_diagnosis(error))
    log.error("inbound mail %s quarantined: %s", message_id or key, reason, exc_info=error)
    stored: list[str] = []
    try:
        settings = _settings()
        if replacing is not None:
            inbound = replacing  # reprocessing failed again: its raw bytes are still kept where they were
            note = ""
        else:
            inbound = InboundMail(channel=origin.channel, mailbox_id=origin.mailbox_id, uid=origin.uid,
                                  uidvalidity=origin.uidvalidity, dedupe_key=key)
            db.session.add(inbound)
            inbound.raw_key, note = _keep_raw(raw, settings, stored)
        inbound.message_id = _clip(message_id, _HEADER_MAX)
        inbound.sender = _clip(mail.from_address if mail else "", _ADDRESS_MAX) or ""
        inbound.subject = _clip(mail.subject if mail else "", _HEADER_MAX) or ""
        inbound.size = len(raw)
        inbound.outcome = "quarantined"
        inbound.reason = f"{reason}{note}"
        inbound.ticket_id = inbound.comment_id = None
        inbound.processing_ms = _elapsed_ms(started)
        db.session.commit()
        return IngestResult("quarantined", message_id=message_id, reason=inbound.reason, inbound_id=inbound.id)
    except IntegrityError:
        _undo(stored)
        earlier = _recorded_quietly(origin.channel, key)
        if earlier is not None and earlier is not replacing:  # a concurrent poller recorded the same mail
            return _duplicate(earlier, mail)
        log.exception("inbound mail %s: the quarantine could not be recorded", message_id or key)
    except Exception:  # noqa: BLE001 - the caller must keep going; it leaves the mail in place to retry
        _undo(stored)
        log.exception("inbound mail %s: the quarantine could not be recorded", message_id or key)
    return IngestResult("quarantined", message_id=message_id,
                        reason=f"{reason}; the outcome could not be recorded either, so the mail must be kept "
                               "where it is and tried again")


def _duplicate(earlier: InboundMail, mail: ParsedMail | None) -> IngestResult:
    return IngestResult("duplicate", ticket_id=earlier.ticket_id, comment_id=earlier.comment_id,
                        message_id=mail.message_id if mail else earlier.message_id,
                        reason=f"already received (inbound mail #{earlier.id}, {earlier.outcome})",
                        inbound_id=earlier.id)


def _recorded(channel: str, key: str) -> InboundMail | None:
    return db.session.scalar(db.select(InboundMail).filter_by(channel=channel, dedupe_key=key))


# Built once: a poll asks these for every mail, and building a statement costs more than running it.
_EARLIER_ID = select(InboundMail.id).where(InboundMail.channel == bindparam("channel"),
                                           InboundMail.dedupe_key == bindparam("key")).scalar_subquery()
# The (sender, created_at) index answers it from the sender's own recent rows.
_RECENT = select(func.count(InboundMail.id)).where(
    InboundMail.sender == bindparam("sender"), InboundMail.created_at >= bindparam("since")).scalar_subquery()
# The sender's contact and its customer, and the customer of the sender's domain: the columns the
# mail's ticket uses, so that a known sender's objects need no query of their own.
_CONTACT_COLUMNS = (Contact.id, Contact.name, Contact.customer_id)
_CUSTOMER_COLUMNS = (Customer.id, Customer.name)
_SENDER = (
    *(select(column).where(Contact.email == bindparam("sender")).scalar_subquery() for column in _CONTACT_COLUMNS),
    *(select(column).join(Contact, Contact.customer_id == Customer.id).where(Contact.email == bindparam("sender"))
      .scalar_subquery() for column in _CUSTOMER_COLUMNS),
    *(select(column).join(CustomerDomain, CustomerDomain.customer_id == Customer.id)
      .where(CustomerDomain.domain == bindparam("sender_domain")).scalar_subquery() for column in _CUSTOMER_COLUMNS))
# The confirmation's loop guard asks how many automatic mails the sender got lately: asked here too.
_EARLIER_AND_RECENT = select(_EARLIER_ID, _RECENT, outbox.RECENT_AUTOMATIC_TO, *_SENDER)
_EARLIER_ONLY = select(_EARLIER_ID, null(), outbox.RECENT_AUTOMATIC_TO, *_SENDER)
_RECENT_ONLY = select(_RECENT)


def _earlier_and_recent(channel: str, key: str, mail: ParsedMail, settings: _Settings,
                        loop_check: bool) -> tuple[InboundMail | None, int | None]:
    """Return the mail's earlier outcome row, if any, and how many mails its sender sent lately.

    One round trip for both, asked before this mail's own row exists, so the loop guard's
    count (None when not wanted) leaves the mail itself out.
    """
    lookup, statement, params = _lookup(channel, key, mail, settings, loop_check)
    # A Core query costs a fraction of an ORM one; the previous mail's commit may have brought it back already.
    earlier, count, automatic, *sender = pipeline.one_row(db.session.connection(), statement, params, key=lookup)
    # The same round trip found the sender's contact and customer, if any, and what the
    # confirmation's loop guard wants to know: none needs a query of its own.
    lookups.transaction_scratch()["sender_contact"] = (params["sender"], *_sender_rows(params["sender"], sender))
    outbox.counted_recent_automatic(params["sender"], automatic)
    return (db.session.get(InboundMail, earlier) if earlier is not None else None), count


def _sender_rows(address: str, values: list) -> tuple[dict | None, dict | None]:
    """Return the columns of the sender's contact and of its customer (without a contact: its domain's), if any."""
    # In `_SENDER`'s order: the contact's columns, its customer's, then the domain's customer's.
    contacts, customers = len(_CONTACT_COLUMNS), len(_CUSTOMER_COLUMNS)
    contact = _row(_CONTACT_COLUMNS, values[:contacts])
    if contact is not None:
        return {**contact, "email": address}, _row(_CUSTOMER_COLUMNS, values[contacts:contacts + customers])
    if is_free_mail(address.rpartition("@")[2]):  # anyone can have a gmail.com address: never a customer by domain
        return None, None
    return None, _row(_CUSTOMER_COLUMNS, values[contacts + customers:])


def _row(columns: tuple, values: list) -> dict | None:
    return {column.key: value for column, value in zip(columns, values)} if values[0] is not None else None


def _lookup(channel: str, key: str, mail: ParsedMail, settings: _Settings,
            loop_check: bool = True) -> tuple[tuple, Select, dict]:
    """Return what identifies the query `_earlier_and_recent` asks for this mail, the query and its parameters."""
    statement = _EARLIER_AND_RECENT if loop_check and mail.from_address else _EARLIER_ONLY
    params = {"channel": channel, "key": key, **_recent_params(mail, settings)}
    params["sender_domain"] = params["sender"].rpartition("@")[2]
    params.update(outbox.recent_automatic_params(params["sender"]))
    # Not the times: asked a moment before, the same query for the same mail.
    return (statement is _EARLIER_AND_RECENT, channel, key, params["sender"]), statement, params


def _next_lookup(channel: str, then: NextMail, settings: _Settings) -> tuple[tuple, Select, dict] | None:
    """Return `_lookup` of the mail the caller ingests next, if there is one."""
    try:
        following = then()
        if following is None:
            return None
        raw, mail = following
        return _lookup(channel, dedupe_key(mail, raw), mail, settings)
    except Exception:  # noqa: BLE001 - the next mail is no concern of this one: it asks for itself
        log.warning("could not prepare the next mail's query", exc_info=True)
        return None


def _recent_from_sender(mail: ParsedMail, settings: _Settings) -> int:
    """Return how many outcomes were recorded for the sender's mails within the loop window."""
    return db.session.connection().execute(_RECENT_ONLY, _recent_params(mail, settings)).scalar_one()


def _recent_params(mail: ParsedMail, settings: _Settings) -> dict:
    return {"since": utcnow() - timedelta(seconds=settings.loop_window),
            "sender": _clip(mail.from_address, _ADDRESS_MAX) or ""}


def _recorded_quietly(channel: str, key: str) -> InboundMail | None:
    try:
        return _recorded(channel, key)
    except Exception:  # noqa: BLE001 - called while handling another failure; that one is reported
        db.session.rollback()
        log.exception("cannot look up inbound mail %s on %s", key, channel)
        return None


def _undo(stored: list[str | Uploads]) -> None:
    """Roll the mail's transaction back and remove the attachments it had already stored."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - a dead connection: the session starts afresh next time
        log.exception("rollback failed")
    _forget_uploads(stored)


def discard_uploads(uploads: Uploads) -> None:
    """Remove what a helper stored for a mail that was not ingested after all."""
    _forget_uploads([uploads])


def _forget_uploads(stored: list[str | Uploads]) -> None:
    """Remove stored objects (waiting for uploads still running) that no committed row refers to."""
    for item in stored:
        for key in item.stored_keys() if isinstance(item, Uploads) else [item]:
            _forget_raw(key)
    stored.clear()


def _forget_raw(key: str | None) -> None:
    if not key:
        return
    gathered = db.session.info.get(_REMOVALS)
    if gathered is not None and not key.startswith(SPOOL_PREFIX):
        gathered.append(key)
        return
    try:
        if key.startswith(SPOOL_PREFIX):
            LocalStore(_settings().spool_folder).delete(key.removeprefix(SPOOL_PREFIX))
        else:
            attachment_store().delete(key)
    except StorageError:
        # An orphaned object costs only space; the mail's outcome is what matters.
        log.warning("could not remove stored object %s", key, exc_info=True)


_REMOVALS = "helpdesk_gathered_removals"
_KEPT = "helpdesk_kept_uploads"


def _kept(uploads: Uploads) -> None:
    """Note, within `removals_gathered()`, the objects a committed mail keeps: none of them is to be removed."""
    kept = db.session.info.get(_KEPT)
    if kept is not None:
        kept.update(uploads.stored_keys())


@contextmanager
def removals_gathered() -> Iterator[None]:
    """Inside the block, gather the stored objects no row keeps and remove them together, at the end and at each
    `remove_gathered()`.

    A poll's duplicates and quarantined mails leave early uploads behind: one request removes
    them all instead of one each, and the poll does not wait for each. An early upload may belong to
    several mails of one batch (`SharedPuts`): what a committed mail keeps is never removed.
    """
    session = db.session()
    if _REMOVALS in session.info:
        yield
        return
    session.info[_REMOVALS] = []
    session.info[_KEPT] = set()
    try:
        yield
    finally:
        remove_gathered()
        session.info.pop(_REMOVALS, None)
        session.info.pop(_KEPT, None)


def remove_gathered() -> None:
    """Remove the objects gathered so far in `removals_gathered()`."""
    keys = db.session.info.get(_REMOVALS)
    if not keys:
        return
    kept = db.session.info.get(_KEPT, ())
    batch = [key for key in dict.fromkeys(keys) if key not in kept]
    keys.clear()
    if not batch:
        return
    try:
        attachment_store().delete_many(batch)
    except StorageError:
        # An orphaned object costs only space; the mails' outcomes are what matter.
        log.warning("could not remove %d stored objects", len(batch), exc_info=True)


def _keep_raw(raw: bytes, settings: _Settings, stored: list[str]) -> tuple[str | None, str]:
    """Store a quarantined mail's raw bytes; fall back to a local spool when the store is down."""
    try:
        key = attachment_store().put(raw, content_type="message/rfc822").key
        stored.append(key)
        return key, ""
    except StorageError as exc:
        store_error = exc
    try:
        key = SPOOL_PREFIX + LocalStore(settings.spool_folder).put(raw, content_type="message/rfc822").key
        stored.append(key)
        return key, f" (the raw mail is kept in the local spool {settings.spool_folder}: the attachment store " \
                    f"failed: {store_error})"
    except StorageError as exc:
        return None, f" (the raw mail could not be kept: {store_error}; {exc})"


def _keep_raw_late(inbound: InboundMail, raw: bytes) -> None:
    """Keep the raw bytes of a mail quarantined when no store worked, now that it arrives again."""
    stored: list[str] = []
    try:
        key, _note = _keep_raw(raw, _settings(), stored)
        if key is not None:
            inbound.raw_key = key
            inbound.reason += " — the raw mail was kept when it arrived again"
            db.session.commit()
    except Exception:  # noqa: BLE001 - the duplicate answer stands; the next arrival tries again
        _undo(stored)
        log.exception("inbound mail %s: raw bytes still cannot be kept", inbound.message_id or inbound.dedupe_key)


def _diagnosis(error: Exception) -> str:
    if isinstance(error, StorageError):
        return f"could not store the mail's files: {error}"
    if isinstance(error, IntegrityError):
        return f"the database refused the mail's records: {error.orig}"
    return f"processing failed: {type(error).__name__}: {error}"


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


# ---------------------------------------------------------------------------
# What routing needs to know


def _settings() -> _Settings:
    cfg = current_app.config
    spool = cfg.get("INBOUND_SPOOL_FOLDER") or str(Path(cfg["ATTACHMENT_FOLDER"]).parent / "inbound-spool")
    return _Settings(
        token_key=cfg["SECRET_KEY"].encode(),
        max_size=int(cfg.get("MAIL_MAX_SIZE", 25 * 1024 * 1024)),
        create_contacts=bool(cfg.get("INBOUND_CREATE_CONTACTS", True)),
        loop_limit=int(cfg.get("INBOUND_LOOP_LIMIT", 20)),
        loop_window=int(cfg.get("INBOUND_LOOP_WINDOW", 600)),
        spool_folder=spool,
    )


def _context(mail: ParsedMail, settings: _Settings, own: frozenset[str] | None,
             recent: int | None) -> route.RoutingContext:
    token_ticket = _existing_ticket_id(route.reply_token_ticket_id(mail, settings.token_key))
    tagged = None
    number = route.tagged_ticket_number(mail)
    if token_ticket is None and number is not None:
        ticket_id = Ticket.id_from_number(number)
        ticket = db.session.get(Ticket, ticket_id) if ticket_id >= 1 else None
        if ticket is not None:
            tagged = route.TaggedTicket(ticket.id, ticket.contact.email if ticket.contact else None, ticket.title)
    bounced_ticket, outbox_ids = None, []
    if mail.is_bounce and mail.bounced_message_ids:
        # Only our own Message-IDs can be in the outbox: a bounce of someone else's mail needs no query.
        wanted = [i for i in mail.bounced_message_ids[:50] if _usable_key(i) and tokens.may_be_our_message_id(i)]
        outbox_ids = list(db.session.scalars(db.select(OutboundMessage.message_id).where(
            OutboundMessage.message_id.in_(wanted)))) if wanted else []
        bounced_ticket = _existing_ticket_id(route.bounced_ticket_id(mail, settings.token_key))
    return route.RoutingContext(
        own_addresses=lookups.cached("own_addresses", own_addresses) if own is None else own,
        ticket_id_by_token=token_ticket,
        ticket_by_subject_tag=tagged,
        bounced_ticket_id=bounced_ticket, bounced_outbox_ids=outbox_ids, recent_count_from_sender=recent or 0,
        loop_limit=settings.loop_limit, loop_window_seconds=settings.loop_window,
        max_size=settings.max_size)


def _existing_ticket_id(ticket_id: int | None) -> int | None:
    if ticket_id is None:
        return None
    return ticket_id if db.session.get(Ticket, ticket_id) is not None else None


# ---------------------------------------------------------------------------
# Writing the ticket or comment


# Written with the ticket's other rows (`pipeline.later`): its updated_at stays the time it was opened.
_SET_DESCRIPTION_HTML = update(Ticket).where(Ticket.id == bindparam("ticket")).values(
    description_html=bindparam("html"), updated_at=Ticket.updated_at)
_CONTACT_BY_EMAIL = select(Contact).where(Contact.email == bindparam("email"))


def _contact_for(mail: ParsedMail, settings: _Settings) -> tuple[Contact | None, Customer | None]:
    """Return the sender's contact (made when new) and customer, by address, then by customer domain."""
    address = mail.from_address
    if not address or "@" not in address or not _usable_key(address, _ADDRESS_MAX):
        return None, None
    known = lookups.transaction_scratch().get("sender_contact")
    if known is not None and known[0] == address:
        contact, customer = _known_sender(known[1], known[2])
    else:
        contact = db.session.scalars(_CONTACT_BY_EMAIL, {"email": address}).first()
        customer = contact.customer if contact is not None else _domain_customer(address.rpartition("@")[2])
    if contact is not None:
        if not contact.name and mail.from_name:
            contact.name = _clip(_text(mail.from_name), _NAME_MAX)
        return contact, customer
    if customer is None and not settings.create_contacts:
        return None, None
    contact = insert_row(Contact, {"email": address.strip().lower(), "name": _clip(_text(mail.from_name), _NAME_MAX) or "",
                                   "customer_id": customer.id if customer else None})
    return contact, customer


def _known_sender(contact_row: dict | None, customer_row: dict | None) -> tuple[Contact | None, Customer | None]:
    """Return the sender's contact and customer from the lookup's rows, as the queries would."""
    customer = loaded(Customer, customer_row) if customer_row is not None else None
    if contact_row is None:
        return None, customer
    contact = loaded(Contact, contact_row)
    if "customer" in inspect(contact).unloaded:
        set_committed_value(contact, "customer", customer)
    return contact, contact.customer  # the session's, should it have had the contact loaded already


def _domain_customer(domain: str) -> Customer | None:
    """Return the customer whose Customer Domain `domain` is, if any (never for a free-mail domain)."""
    if is_free_mail(domain):
        return None
    customer_id = lookups.cached(f"customer_domain:{domain}", lambda: db.session.connection().execute(
        db.select(CustomerDomain.customer_id).where(CustomerDomain.domain == domain)).scalar())
    return db.session.get(Customer, customer_id) if customer_id is not None else None


def _open(mail: ParsedMail, decision: route.Decision, origin: _Origin, settings: _Settings,
          uploads: Uploads | None) -> Ticket:
    with db.session.no_autoflush:
        contact, customer = _contact_for(mail, settings)
    # Without inline images the HTML needs no attachment ids: written with the ticket, not after.
    early_html = mail.html is not None and not any(part.content_id for part in mail.attachments)
    ticket = open_ticket(
        title=_text(mail.subject).strip() or "(no subject)", description=_text(mail.text), contact=contact,
        customer=customer, source="email", message_id=_clip(mail.message_id, _HEADER_MAX),
        mailbox_id=origin.mailbox_id, notify=not decision.automatic,
        description_html=sanitise(_text(mail.html), {}) if early_html else None)
    cid_urls = _store_attachments(ticket, None, mail, decision, settings, uploads)
    if mail.html is not None and not early_html:
        # The inline images' URLs name their attachments, written after the ticket: a Core UPDATE,
        # and the object told the value is stored (an ORM flush of one attribute costs several times more).
        html = sanitise(_text(mail.html), cid_urls)
        pipeline.later(db.session.connection(), _SET_DESCRIPTION_HTML, {"ticket": ticket.id, "html": html})
        set_committed_value(ticket, "description_html", html)
    return ticket


def _append(ticket: Ticket, mail: ParsedMail, decision: route.Decision, settings: _Settings,
            uploads: Uploads | None) -> Comment:
    full_text = _text(mail.text)
    message_id = _clip(mail.message_id, _HEADER_MAX)
    trimmed = False
    if decision.internal:
        comment = add_comment(ticket, _bounce_note(mail, decision), public=False, source="email",
                              full_text=full_text, message_id=message_id)
    else:
        contact, _customer = _contact_for(mail, settings)
        visible, _elided = trim_reply(full_text)
        # A reply that is all quote (or has only attachments) still needs a body to show.
        if visible.strip():
            body = visible
            trimmed = visible.strip() != full_text.strip()
        elif full_text.strip():
            body = full_text
        else:
            body = "(no text; see the attachments)" if mail.attachments else "(empty mail)"
        if decision.automatic:
            # An out-of-office answer to our "resolved" mail must not reopen the ticket:
            # add it without the contact (which reopens), then name its author.
            comment = add_comment(ticket, body, public=True, source="email", full_text=full_text,
                                  message_id=message_id)
            comment.author_contact = contact
        else:
            comment = add_comment(ticket, body, public=True, contact=contact, source="email",
                                  full_text=full_text, message_id=message_id)
    cid_urls = _store_attachments(ticket, comment, mail, decision, settings, uploads)
    # The page shows the HTML instead of the text when there is some, and quoted history
    # cannot be cut from HTML yet: a trimmed reply shows its trimmed text (the full
    # original stays one click away), an untrimmed one keeps its formatting.
    if mail.html is not None and not decision.internal and not trimmed:
        comment.body_html = sanitise(_text(mail.html), cid_urls)
    return comment


def _start_uploads(mail: ParsedMail, decision: route.Decision, stored: list[str | Uploads],
                   early: Uploads | None) -> Uploads | None:
    """Start storing the mail's files now (unless the poll did), so the uploads run while the ticket is written."""
    if decision.kind not in ("new_ticket", "comment") or not mail.attachments or decision.too_large:
        return None
    if early is not None:
        return early
    uploads = Uploads(attachment_store(), [(part.data, _content_type(part)) for part in mail.attachments])
    stored.append(uploads)  # removed again if the mail's transaction fails
    return uploads


def _store_attachments(ticket: Ticket, comment: Comment | None, mail: ParsedMail, decision: route.Decision,
                       settings: _Settings, uploads: Uploads | None) -> dict[str, str]:
    """Link the mail's stored files to the ticket; return the URLs its cid: images are shown from."""
    if not mail.attachments:
        return {}
    if decision.too_large:
        _note_not_stored(ticket, mail, settings)
        return {}
    assert uploads is not None
    attachments = []
    for part, stored in zip(mail.attachments, uploads.results()):
        filename = _text(part.filename)
        if part.content_type == "message/rfc822" and not filename.lower().endswith(".eml"):
            filename += ".eml"  # so a download opens in a mail program
        attachments.append(link_attachment(
            ticket, stored, filename=filename, content_type=_content_type(part), comment=comment,
            content_id=_clip(_text(part.content_id or ""), _FILE_MAX) or None, inline=part.inline))
    return {a.content_id: f"/attachments/{a.id}?inline=1" for a in attachments if a.content_id}


def _content_type(part: ParsedAttachment) -> str:
    return _clip(_text(part.content_type), _FILE_MAX) or "application/octet-stream"


def _note_not_stored(ticket: Ticket, mail: ParsedMail, settings: _Settings) -> None:
    lines = [f"This mail is {_size(mail.size)}, over the {_size(settings.max_size)} limit for incoming "
             f"mail, so its {len(mail.attachments)} attachment(s) were not stored:"]
    lines += [f"- {_text(a.filename)} ({a.content_type}, {_size(a.size)})" for a in mail.attachments]
    lines.append("Ask the sender for them another way (a download link, or several smaller mails).")
    add_comment(ticket, _text("\n".join(lines)), public=False, source="email")


def _bounce_note(mail: ParsedMail, decision: route.Decision) -> str:
    which = ", ".join(decision.bounce_of or mail.bounced_message_ids[:3]) or "one of our mails"
    summary = f"Delivery failure ({mail.auto_reason or 'bounce'}): {which} could not be delivered."
    details = "\n".join(_text(mail.text).strip().splitlines()[:30])
    return _text(f"{summary}\nFrom: {mail.from_address or 'unknown'}\nSubject: {mail.subject}\n\n{details}".strip())


def _mark_bounced(message_ids: tuple[str, ...], mail: ParsedMail) -> None:
    for message in db.session.scalars(db.select(OutboundMessage).where(OutboundMessage.message_id.in_(message_ids))):
        message.status = "bounced"
        message.last_error = _text(f"Bounced: {mail.auto_reason or 'delivery failure'} (reported by "
                                   f"{mail.from_address or 'the mail system'}, {mail.message_id or 'no Message-ID'})")


# ---------------------------------------------------------------------------
# Strings the database accepts


def _text(value: str | None) -> str:
    """Return `value` as text every database stores: no NUL characters, no lone surrogates."""
    if not value:
        return ""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _usable_key(value: str | None, limit: int = _HEADER_MAX) -> bool:
    """Tell whether a Message-ID or address can be looked up as it is (fits, no control characters)."""
    return bool(value) and len(value) <= limit and value.isprintable() and _text(value) == value


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return _text(value)[:limit]


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
