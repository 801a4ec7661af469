"""Turn one raw inbound mail into a ticket, a comment, an ignored or a quarantined mail — exactly once.

The one pipeline behind IMAP polling and `flask email ingest`:
parse -> route -> contact/customer -> ticket or comment + attachments -> outcome row.
Each mail is written inside a savepoint of its caller's transaction: a poll writes a whole
IMAP batch in one transaction, `ingest_mail` alone commits each mail. The outcome row
(InboundMail) carries the mail's dedupe key under a unique constraint and commits with the
ticket or comment, so a crash before the commit leaves nothing behind and a rerun makes
the ticket exactly once. Anything that goes wrong with one mail rolls back to its
savepoint and is recorded as quarantined, raw bytes kept for Reprocess.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from helpdesk.extensions import begin_writing, db
from helpdesk.mail import route, tokens
from helpdesk.mail.html import sanitise
from helpdesk.mail.parse import ParsedAttachment, ParsedMail, parse
from helpdesk.mail.trim import trim_reply
from helpdesk.models import Comment, Contact, Customer, InboundMail, OutboundMessage, Ticket
from helpdesk.models._time import utcnow
from helpdesk.services.attachments import attachment_store, link_attachment
from helpdesk.services.contacts import customer_by_domain, find_or_create_contact
from helpdesk.services.mail_settings import MailSettings
from helpdesk.services.tickets import add_comment, open_ticket
from helpdesk.storage import LocalStore, StorageError, StoredObject

log = logging.getLogger(__name__)

# Column widths of the tables written here: PostgreSQL refuses longer strings.
_ADDRESS_MAX, _NAME_MAX, _HEADER_MAX, _FILE_MAX = 254, 200, 998, 255
SPOOL_PREFIX = "spool:"


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
class Origin:
    """Where a mail came from: its channel ("mailbox:<id>" or "cli") and, from a mailbox, its UID."""

    channel: str = "cli"
    mailbox_id: int | None = None
    uid: int | None = None
    uidvalidity: int | None = None


@dataclass
class Run:
    """What a run of mails (a poll, a command) reads once: settings, templates and our own addresses.

    A settings change made meanwhile applies from the next run.
    """

    token_key: bytes
    max_size: int
    create_contacts: bool
    loop_limit: int
    loop_window: int
    spool_folder: str
    settings: MailSettings  # templates, SLA targets, sender and own addresses, for the tickets it opens
    stored: set[str] = field(default_factory=set)  # the keys of the files this run stored: each once

    @classmethod
    def start(cls) -> Run:
        """Read the settings and our own addresses."""
        cfg = current_app.config
        return cls(token_key=cfg["SECRET_KEY"].encode(),
                   max_size=int(cfg.get("MAIL_MAX_SIZE", 25 * 1024 * 1024)),
                   create_contacts=bool(cfg.get("INBOUND_CREATE_CONTACTS", True)),
                   loop_limit=int(cfg.get("INBOUND_LOOP_LIMIT", 20)),
                   loop_window=int(cfg.get("INBOUND_LOOP_WINDOW", 600)),
                   spool_folder=spool_folder(), settings=MailSettings.read())


def spool_folder() -> str:
    """Return where raw quarantined mail waits when the attachment store is down."""
    cfg = current_app.config
    return cfg.get("INBOUND_SPOOL_FOLDER") or str(Path(cfg["ATTACHMENT_FOLDER"]).parent / "inbound-spool")


def ingest_mail(raw: bytes, *, channel: str = "cli", mailbox_id: int | None = None, uid: int | None = None,
                uidvalidity: int | None = None) -> IngestResult:
    """Make a ticket or comment from one raw mail (or ignore or quarantine it), record the outcome, commit.

    The same mail on the same channel a second time changes nothing and returns "duplicate".
    """
    run = Run.start()
    begin_writing()
    result = record(bytes(raw), Origin(channel, mailbox_id, uid, uidvalidity), run)
    if result.inbound_id is None:
        db.session.rollback()
    else:
        db.session.commit()
    return result


def record(raw: bytes, origin: Origin, run: Run, *, replacing: InboundMail | None = None) -> IngestResult:
    """Write what the mail becomes and its outcome row in the open transaction; the caller commits.

    Whatever fails is rolled back to the mail's savepoint and the mail recorded as quarantined;
    when even that fails (the database is gone), the result has no `inbound_id` and the
    transaction must be rolled back.
    """
    started = time.perf_counter()
    mail = parse(raw)  # never raises: what it cannot read becomes defects
    key = dedupe_key(mail, raw)
    error: Exception | None = None
    # A second try only for a unique-key clash that is not our dedupe key: a concurrent
    # poller created the same new contact, which the second try then finds.
    for _attempt in range(2):
        try:
            with db.session.begin_nested():
                return _write(raw, mail, key, origin, run, started, replacing)
        except IntegrityError as exc:
            error = exc
            earlier = _recorded(origin.channel, key)
            if earlier is not None and earlier is not replacing:
                if earlier.outcome == "quarantined" and not earlier.raw_key:
                    _keep_raw_late(earlier, raw, run)
                return _duplicate(earlier, mail)
        except Exception as exc:  # noqa: BLE001 - one bad mail is quarantined, never stops the mails after it
            error = exc
            break
    assert error is not None
    try:
        with db.session.begin_nested():
            return _quarantine(raw, mail, key, origin, run, started, error, replacing)
    except Exception:  # noqa: BLE001 - the caller keeps the mail where it is and tries again later
        log.exception("inbound mail %s: the quarantine could not be recorded", key)
        return IngestResult("quarantined", message_id=mail.message_id,
                            reason=f"{_diagnosis(error)}; the outcome could not be recorded either, so the mail "
                                   "must be kept where it is and tried again")


def reprocess(inbound_id: int) -> IngestResult:
    """Run a quarantined mail through the pipeline again, replacing its quarantine record; commit."""
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
    origin = Origin(inbound.channel, inbound.mailbox_id, inbound.uid, inbound.uidvalidity)
    run = Run.start()
    begin_writing()
    result = record(raw, origin, run, replacing=inbound)
    if result.inbound_id is None:
        db.session.rollback()
        return result
    db.session.commit()
    if result.inbound_id != inbound_id:  # the quarantine record was replaced: its raw bytes are no one's
        _forget_raw(old_key, run)
    return result


def quarantined_raw(inbound: InboundMail) -> bytes:
    """Return the raw bytes kept for a quarantined mail; raise StorageError when they cannot be read."""
    if not inbound.raw_key:
        raise StorageError(f"Inbound mail #{inbound.id} has no raw bytes kept", kind="missing")
    if inbound.raw_key.startswith(SPOOL_PREFIX):
        return LocalStore(spool_folder()).read(inbound.raw_key.removeprefix(SPOOL_PREFIX))
    return attachment_store().read(inbound.raw_key)


def dedupe_key(mail: ParsedMail, raw: bytes) -> str:
    """Return what identifies this mail among the ones already received: its Message-ID, else its hash."""
    if _usable_key(mail.message_id):
        return mail.message_id
    return _raw_key(raw)


def _raw_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------------------
# One mail, inside its savepoint


def _write(raw: bytes, mail: ParsedMail, key: str, origin: Origin, run: Run, started: float,
           replacing: InboundMail | None) -> IngestResult:
    """Claim the mail's dedupe key, route the mail, write what it becomes; return the result."""
    if replacing is not None:
        db.session.delete(replacing)
        db.session.flush()
    inbound = InboundMail(
        channel=origin.channel, mailbox_id=origin.mailbox_id, uid=origin.uid, uidvalidity=origin.uidvalidity,
        dedupe_key=key, message_id=_clip(mail.message_id, _HEADER_MAX),
        sender=_clip(mail.from_address, _ADDRESS_MAX) or "", subject=_clip(mail.subject, _HEADER_MAX) or "",
        size=len(raw), outcome="processing")
    db.session.add(inbound)
    # The claim comes first: a second copy of this mail (another poller, a rerun) stops at the
    # unique key (IntegrityError) or waits for this transaction, and ends as "duplicate". Being a
    # write, it also takes SQLite's write lock before anything is read.
    db.session.flush()
    # An admin asked for a reprocess: the loop guard that held the mail back must not hold it again.
    decision = route.decide(mail, _context(mail, run, inbound if replacing is None else None))
    ticket: Ticket | None = None
    comment: Comment | None = None
    reason = _text(decision.reason)
    if decision.kind == "new_ticket":
        ticket = _open(mail, decision, origin, run)
        outcome = "created"
    elif decision.kind == "comment":
        ticket = db.session.get(Ticket, decision.ticket_id)
        comment = _append(ticket, mail, decision, run)
        outcome = "appended"
    elif decision.kind == "ignore":
        outcome = "ignored"
    else:
        outcome = "quarantined"
        inbound.raw_key, note = _keep_raw(raw, run)
        reason = f"{reason}{note}"
        log.warning("inbound mail %s quarantined: %s", mail.message_id or key, reason)
    if decision.bounce_of:
        _mark_bounced(decision.bounce_of, mail)
    inbound.outcome, inbound.reason, inbound.ticket, inbound.comment = outcome, reason, ticket, comment
    inbound.processing_ms = _elapsed_ms(started)
    db.session.flush()
    return IngestResult(outcome, ticket_id=ticket.id if ticket else None, comment_id=comment.id if comment else None,
                        message_id=mail.message_id, reason=reason, inbound_id=inbound.id)


def _quarantine(raw: bytes, mail: ParsedMail, key: str, origin: Origin, run: Run, started: float,
                error: Exception, replacing: InboundMail | None) -> IngestResult:
    """Record a mail that failed as quarantined, raw bytes kept."""
    message_id = mail.message_id
    reason = _text(_diagnosis(error))
    log.error("inbound mail %s quarantined: %s", message_id or key, reason, exc_info=error)
    if replacing is not None:
        inbound = replacing  # reprocessing failed again: its raw bytes are still kept where they were
        note = ""
    else:
        inbound = InboundMail(channel=origin.channel, mailbox_id=origin.mailbox_id, uid=origin.uid,
                              uidvalidity=origin.uidvalidity, dedupe_key=key)
        db.session.add(inbound)
        inbound.raw_key, note = _keep_raw(raw, run)
    inbound.message_id = _clip(message_id, _HEADER_MAX)
    inbound.sender = _clip(mail.from_address, _ADDRESS_MAX) or ""
    inbound.subject = _clip(mail.subject, _HEADER_MAX) or ""
    inbound.size = len(raw)
    inbound.outcome = "quarantined"
    inbound.reason = f"{reason}{note}"
    inbound.ticket_id = inbound.comment_id = None
    inbound.processing_ms = _elapsed_ms(started)
    db.session.flush()
    return IngestResult("quarantined", message_id=message_id, reason=inbound.reason, inbound_id=inbound.id)


def _duplicate(earlier: InboundMail, mail: ParsedMail) -> IngestResult:
    return IngestResult("duplicate", ticket_id=earlier.ticket_id, comment_id=earlier.comment_id,
                        message_id=mail.message_id or earlier.message_id,
                        reason=f"already received (inbound mail #{earlier.id}, {earlier.outcome})",
                        inbound_id=earlier.id)


def _recorded(channel: str, key: str) -> InboundMail | None:
    return db.session.scalars(select(InboundMail).filter_by(channel=channel, dedupe_key=key)).first()


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


def _context(mail: ParsedMail, run: Run, claim: InboundMail | None) -> route.RoutingContext:
    """Look up what the routing rules need; `claim` is the mail's own outcome row, None to skip the loop guard."""
    token_ticket = _existing_ticket_id(route.reply_token_ticket_id(mail, run.token_key))
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
        outbox_ids = list(db.session.scalars(select(OutboundMessage.message_id).where(
            OutboundMessage.message_id.in_(wanted)))) if wanted else []
        bounced_ticket = _existing_ticket_id(route.bounced_ticket_id(mail, run.token_key))
    return route.RoutingContext(
        own_addresses=run.settings.own, ticket_id_by_token=token_ticket, ticket_by_subject_tag=tagged,
        bounced_ticket_id=bounced_ticket, bounced_outbox_ids=outbox_ids,
        recent_count_from_sender=_recent_from_sender(claim, run) if claim is not None else 0,
        loop_limit=run.loop_limit, loop_window_seconds=run.loop_window, max_size=run.max_size)


def _existing_ticket_id(ticket_id: int | None) -> int | None:
    if ticket_id is None:
        return None
    return ticket_id if db.session.get(Ticket, ticket_id) is not None else None


def _recent_from_sender(claim: InboundMail, run: Run) -> int:
    """Return how many other mails of the claim's sender were recorded within the loop window."""
    if not claim.sender:
        return 0
    # The (sender, created_at) index answers this from the sender's own recent rows.
    return db.session.scalar(select(func.count(InboundMail.id)).where(
        InboundMail.sender == claim.sender, InboundMail.id != claim.id,
        InboundMail.created_at >= utcnow() - timedelta(seconds=run.loop_window)))


# ---------------------------------------------------------------------------
# Writing the ticket or comment


def _sender(mail: ParsedMail, run: Run) -> tuple[Contact | None, Customer | None]:
    """Return the sender's contact (made when new, as the settings allow) and customer."""
    address = mail.from_address
    if not address or not _usable_key(address, _ADDRESS_MAX):
        return None, None
    # Without contacts for unknown senders, a sender of a customer's domain still gets one.
    create = run.create_contacts or customer_by_domain(address) is not None
    contact = find_or_create_contact(address, mail.from_name or "", create=create)
    return contact, contact.customer if contact is not None else None


def _open(mail: ParsedMail, decision: route.Decision, origin: Origin, run: Run) -> Ticket:
    contact, customer = _sender(mail, run)
    stored = _store_files(mail, decision, run)
    ticket = open_ticket(
        title=_text(mail.subject).strip() or "(no subject)", description=_text(mail.text), contact=contact,
        customer=customer, source="email", message_id=_clip(mail.message_id, _HEADER_MAX),
        mailbox_id=origin.mailbox_id, notify=not decision.automatic, settings=run.settings)
    cid_urls = _link_files(ticket, None, mail, decision, run, stored)
    if mail.html is not None:
        ticket.description_html = sanitise(_text(mail.html), cid_urls)
    return ticket


def _append(ticket: Ticket, mail: ParsedMail, decision: route.Decision, run: Run) -> Comment:
    full_text = _text(mail.text)
    message_id = _clip(mail.message_id, _HEADER_MAX)
    trimmed = False
    stored = _store_files(mail, decision, run)
    if decision.internal:
        comment = add_comment(ticket, _bounce_note(mail, decision), public=False, source="email",
                              full_text=full_text, message_id=message_id)
    else:
        contact, _customer = _sender(mail, run)
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
    cid_urls = _link_files(ticket, comment, mail, decision, run, stored)
    # The page shows the HTML instead of the text when there is some, and quoted history
    # cannot be cut from HTML yet: a trimmed reply shows its trimmed text (the full
    # original stays one click away), an untrimmed one keeps its formatting.
    if mail.html is not None and not decision.internal and not trimmed:
        comment.body_html = sanitise(_text(mail.html), cid_urls)
    return comment


def _store_files(mail: ParsedMail, decision: route.Decision, run: Run) -> list[StoredObject]:
    """Put the mail's files in the store, each under its content's key: an equal file is stored once.

    They are in the store before the rows that name them commit. A file whose mail is rolled back
    afterwards stays unnamed until the periodic sweep removes it.
    """
    if not mail.attachments or decision.too_large:
        return []
    stored = []
    for part in mail.attachments:
        digest = hashlib.sha256(part.data).hexdigest()
        obj = StoredObject(key=f"att/sha256/{digest}", size=len(part.data), sha256=digest)
        if obj.key not in run.stored:
            attachment_store().put(part.data, content_type=_content_type(part), key=obj.key, sha256=digest)
            run.stored.add(obj.key)
        stored.append(obj)
    return stored


def _link_files(ticket: Ticket, comment: Comment | None, mail: ParsedMail, decision: route.Decision,
                run: Run, stored: list[StoredObject]) -> dict[str, str]:
    """Link the mail's stored files to the ticket; return the URLs its cid: images are shown from."""
    if not mail.attachments:
        return {}
    if decision.too_large:
        _note_not_stored(ticket, mail, run)
        return {}
    attachments = []
    for part, obj in zip(mail.attachments, stored):
        filename = _text(part.filename)
        if part.content_type == "message/rfc822" and not filename.lower().endswith(".eml"):
            filename += ".eml"  # so a download opens in a mail program
        attachments.append(link_attachment(
            ticket, obj, filename=filename, content_type=_content_type(part), comment=comment,
            content_id=_clip(_text(part.content_id or ""), _FILE_MAX) or None, inline=part.inline))
    if not any(a.content_id for a in attachments):
        return {}
    db.session.flush()  # the inline images' URLs name their attachments
    return {a.content_id: f"/attachments/{a.id}?inline=1" for a in attachments if a.content_id}


def _content_type(part: ParsedAttachment) -> str:
    return _clip(_text(part.content_type), _FILE_MAX) or "application/octet-stream"


def _note_not_stored(ticket: Ticket, mail: ParsedMail, run: Run) -> None:
    lines = [f"This mail is {_size(mail.size)}, over the {_size(run.max_size)} limit for incoming "
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
    for message in db.session.scalars(select(OutboundMessage).where(OutboundMessage.message_id.in_(message_ids))):
        message.status = "bounced"
        message.last_error = _text(f"Bounced: {mail.auto_reason or 'delivery failure'} (reported by "
                                   f"{mail.from_address or 'the mail system'}, {mail.message_id or 'no Message-ID'})")


# ---------------------------------------------------------------------------
# Raw bytes of quarantined mail


def _keep_raw(raw: bytes, run: Run) -> tuple[str | None, str]:
    """Store a quarantined mail's raw bytes; fall back to a local spool when the store is down."""
    try:
        return attachment_store().put(raw, content_type="message/rfc822").key, ""
    except StorageError as exc:
        store_error = exc
    try:
        key = SPOOL_PREFIX + LocalStore(run.spool_folder).put(raw, content_type="message/rfc822").key
        return key, f" (the raw mail is kept in the local spool {run.spool_folder}: the attachment store " \
                    f"failed: {store_error})"
    except StorageError as exc:
        return None, f" (the raw mail could not be kept: {store_error}; {exc})"


def _keep_raw_late(inbound: InboundMail, raw: bytes, run: Run) -> None:
    """Keep the raw bytes of a mail quarantined when no store worked, now that it arrives again."""
    key, _note = _keep_raw(raw, run)
    if key is not None:
        inbound.raw_key = key
        inbound.reason += " — the raw mail was kept when it arrived again"


def _forget_raw(key: str | None, run: Run) -> None:
    if not key:
        return
    try:
        if key.startswith(SPOOL_PREFIX):
            LocalStore(run.spool_folder).delete(key.removeprefix(SPOOL_PREFIX))
        else:
            attachment_store().delete(key)
    except StorageError:
        # An orphaned object costs only space; the mail's outcome is what matters.
        log.warning("could not remove stored object %s", key, exc_info=True)


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
