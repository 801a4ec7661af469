"""The outbox: every outgoing mail is written here first, then sent by a job; nothing is lost between.

The walk: `queue_mail` writes an `OutboundMessage` (status "queued") in the caller's
transaction and asks for it to be sent once that commits; a commit's mails all go to one
`jobs.mail.send_outbox(*ids)`. `send` claims the row with one conditional UPDATE (queued ->
sending), so two workers, or a retry that follows a success, can never both send it. While its
SMTP connection is open, a job also claims and sends the other fresh mails waiting in
the outbox: a burst (a reply to many tickets, a batch of SLA alerts) goes out over one
connection and one job instead of one each. If the server answers "try later", the
burst stops there; the rest wait, untried, for the job's retry or the sweep.

What a crash can do, honestly:
- between the commit of "queued" and the job (a lost job, a dead Redis): the row stays
  queued and `sweep` sends it a minute later. Nothing is lost.
- between the claim and the server's answer: the row stays "sending"; `sweep` puts it back
  to queued after `STUCK_AFTER` unless it has `sent_at`, and sends it again.
- between the server's 250 and our commit of "sent": the same as above, so the mail goes
  out twice. Results are committed after each mail, or every `RESULT_BATCH` mails within
  `RESULT_MAX_DELAY` in a burst, which bounds this at-least-once window.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email import policy as email_policy
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import Row, func, or_, true, update

from helpdesk.extensions import db
from helpdesk.mail import route, tokens
from helpdesk.mail.compose import OutgoingMail, compose, is_automatic_recipient_blocked
from helpdesk.mail.render import RenderedMail
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail.secrets import CredentialError
from helpdesk.mail.smtp import SmtpError, SmtpSession, SmtpSettings, needs_smtputf8
from helpdesk.models import Attachment, Comment, OutboundMessage, Ticket, TicketEvent
from helpdesk.models._time import utcnow
from helpdesk.services import background
from helpdesk.services.mail_settings import MailSettings, configured_sender
from helpdesk.services.mailboxes import own_addresses
from helpdesk.services.smtp_config import load_smtp_settings, sign_in_refused, signed_in
from helpdesk.storage import StorageError

log = logging.getLogger(__name__)

NOT_CONFIGURED = "SMTP is not configured: set it up under Admin → Settings → Email → Outbound (SMTP)."
# Fresh rows have a job on its way; the sweep only picks up what a job should have sent by now.
SWEEP_AFTER = timedelta(minutes=1)
# A send takes at most a few SMTP timeouts; a row "sending" this long lost its worker.
STUCK_AFTER = timedelta(minutes=10)
# After a transient failure the sweep waits 1, 2, 4, ... minutes, at most an hour, between tries.
MAX_BACKOFF = timedelta(hours=1)
BURST_LIMIT = 500  # mails claimed at once by a job or the sweep
RESULT_BATCH = 50
RESULT_MAX_DELAY = 0.5  # seconds
# Session-level failures that no retry fixes until an admin changes the settings.
_SETTINGS_KINDS = frozenset({"auth", "no_auth", "tls", "tls_cert", "wrong_security", "dns"})


class OutboxNotConfigured(Exception):
    """SMTP is not set up (or its password cannot be read); the mail waits in the outbox."""


@dataclass
class BurstResult:
    """What one send over one SMTP connection did."""

    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # permanently: the server refused the mail
    deferred: list[int] = field(default_factory=list)  # back to queued, to be tried again
    error: SmtpError | None = None  # the first failure that deferred mail


# --- queueing -----------------------------------------------------------------------------

def queue_mail(*, kind: str, to: Sequence[str], rendered: RenderedMail, ticket: Ticket | None = None,
               comment: Comment | None = None, automatic: bool = False, cc: Iterable[str] = (),
               attachments: Iterable[Attachment] = (), in_reply_to: str | None = None,
               references: Iterable[str] = (), from_address: str | None = None,
               from_name: str | None = None, find_thread: bool = True,
               settings: MailSettings | None = None) -> OutboundMessage | None:
    """Write a mail to the outbox and ask for it to be sent after commit; None when a loop guard stops it.

    `settings` are those a run of writes read once (a poll); None reads the sender and own addresses now.
    """
    recipients = [a.strip() for a in to if a and a.strip()]
    if not recipients:
        raise ValueError("A mail needs at least one recipient.")
    configured_from, configured_name = settings.sender if settings is not None else configured_sender()
    from_address = (from_address or configured_from).strip()
    from_name = configured_name if from_name is None else from_name

    if automatic:
        own = settings.own if settings is not None else own_addresses()
        reason = _automatic_block_reason(recipients, own | route.own_addresses([from_address]))
        if reason:
            _record_suppressed(kind, recipients, reason, ticket)
            return None

    subject = rendered.subject
    if ticket is not None:
        subject = tokens.tag_subject(subject, ticket.number)
        # Put under the customer's latest mail, unless the caller's threading is the whole thread
        # (`find_thread` False: a new ticket's confirmation, with no later mail to look for).
        if (find_thread and in_reply_to is None and ticket.contact is not None
                and ticket.contact.email in _lowered(recipients)):
            in_reply_to, references = _thread_with_customer(ticket, references)
    key = current_app.config["SECRET_KEY"].encode()
    message = OutboundMessage(
        ticket_id=ticket.id if ticket is not None else None,
        comment_id=comment.id if comment is not None else None,
        kind=kind, automatic=automatic, recipient=recipients[0].lower()[:254],
        to=", ".join(recipients), cc=", ".join(a.strip() for a in cc if a.strip()),
        from_address=from_address, from_name=from_name or "", subject=subject[:998],
        text_body=rendered.text, html_body=rendered.html or None,
        attachment_ids=json.dumps([a.id for a in attachments]),
        message_id=tokens.make_message_id(ticket.id if ticket is not None else None, key,
                                          _message_id_domain(from_address)),
        in_reply_to=in_reply_to, references=" ".join(references), status="queued")
    db.session.add(message)
    db.session.flush()  # the send job names it by its id
    # The transaction's mails commit together and go out as one send job, over one connection.
    background.send_outbox_after_commit(message.id)
    return message


def _automatic_block_reason(recipients: list[str], own: frozenset[str]) -> str | None:
    """Say why automatic mail must not go to `recipients` (`own`: every address that lands in our own mailboxes)."""
    limit = current_app.config.get("AUTO_MAILS_PER_HOUR", 10)
    for address in recipients:
        reason = is_automatic_recipient_blocked(address, own)
        if reason:
            return reason
        recent = db.session.scalar(
            db.select(func.count(OutboundMessage.id))
            .where(OutboundMessage.recipient == address.strip().lower(), OutboundMessage.automatic.is_(True),
                   OutboundMessage.created_at >= utcnow() - timedelta(hours=1)))
        if recent >= limit:
            return f"{address} already got {recent} automatic mails in the last hour (the limit is {limit})"
    return None


def _record_suppressed(kind: str, recipients: list[str], reason: str, ticket: Ticket | None) -> None:
    log.info("automatic %s mail to %s not sent: %s", kind, ", ".join(recipients), reason)
    if ticket is not None:
        db.session.add(TicketEvent(ticket_id=ticket.id, kind="notification-suppressed",
                                   detail=f"{kind} mail not sent: {reason}"))


def _lowered(addresses: Iterable[str]) -> set[str]:
    return {a.strip().lower() for a in addresses}


def _thread_with_customer(ticket: Ticket, references: Iterable[str]) -> tuple[str | None, list[str]]:
    """Return In-Reply-To and References that put our mail under the customer's latest mail."""
    latest = db.session.scalar(
        db.select(Comment.message_id)
        .where(Comment.ticket_id == ticket.id, Comment.author_contact_id.is_not(None),
               Comment.message_id.is_not(None))
        .order_by(Comment.created_at.desc(), Comment.id.desc()).limit(1))
    latest = latest or ticket.message_id
    if not latest:
        return None, list(references)
    # References lists the thread from its start: the mail that opened the ticket, then the latest.
    chain = [*references, ticket.message_id, latest]
    return latest, list(dict.fromkeys(i for i in chain if i))


def _message_id_domain(from_address: str) -> str:
    domain = from_address.rpartition("@")[2].strip()
    if domain:
        return domain
    # Not configured yet: the helpdesk's own host name still makes a unique, valid id.
    return urlsplit(current_app.config.get("PUBLIC_BASE_URL", "")).hostname or "localhost"


# --- sending ------------------------------------------------------------------------------

def send(outbound_id: int, *more_ids: int) -> str:
    """Send queued mails (and other fresh ones on the same connection); return the first one's status.

    Raises the SmtpError of a transient failure so the job retries it later.
    """
    ids = list(dict.fromkeys((outbound_id, *more_ids)))
    queued = list(db.session.scalars(db.select(OutboundMessage.id).where(
        OutboundMessage.id.in_(ids), OutboundMessage.status == "queued")))
    if not queued:
        # Sent already (a retry after a success, or an earlier job's burst took it), failed, or gone.
        log.info("outbox mail %s not sent by this job: it is %s", outbound_id, _status(outbound_id))
        return _status(outbound_id)
    try:
        settings = _smtp_settings()
    except OutboxNotConfigured as exc:
        _note_not_sendable(queued, str(exc))
        return _status(outbound_id)
    claimed = claim(queued)
    if not claimed:
        log.info("outbox mail %s not sent by this job: it is %s", outbound_id, _status(outbound_id))
        return _status(outbound_id)
    result = send_claimed(claimed, settings, drain=True)
    if set(ids) & set(result.deferred) and result.error is not None and result.error.transient:
        raise result.error
    return _status(outbound_id)


def _status(outbound_id: int) -> str:
    return db.session.scalar(db.select(OutboundMessage.status).filter_by(id=outbound_id)) or "gone"


def claim(ids: Iterable[int]) -> list[int]:
    """Mark queued mails as sending, atomically, and return the ids this caller won."""
    ids = list(ids)
    if not ids:
        return []
    # One conditional UPDATE: a row already claimed, sent or failed is not matched, and a
    # concurrent claimer waits for our commit and then sees it is no longer queued.
    claimed = list(db.session.scalars(
        update(OutboundMessage)
        .where(OutboundMessage.id.in_(ids), OutboundMessage.status == "queued")
        .values(status="sending", attempts=OutboundMessage.attempts + 1, updated_at=utcnow())
        .returning(OutboundMessage.id)
        .execution_options(synchronize_session=False)))
    db.session.commit()
    return sorted(claimed)


def send_claimed(ids: list[int], settings: tuple[SmtpSettings, str, str], *, drain: bool = False) -> BurstResult:
    """Send mails already claimed by this caller over one SMTP connection; record each result."""
    smtp_settings, from_address, from_name = settings
    result = BurstResult()
    recorder = _ResultRecorder()
    session = SmtpSession(smtp_settings)
    opened = False
    loaded: dict[int, Row] = {}
    queue = list(ids)
    try:
        while queue or drain:
            if not queue:
                recorder.commit()  # the claim commits as well; the results written so far go first
                queue = _claim_fresh()
                if not queue:
                    break
            outbound_id = queue.pop(0)
            if outbound_id not in loaded:
                # One SELECT for the rows ahead, not one per mail; plain rows, as nothing here
                # needs an ORM object and a burst would build hundreds.
                loaded.update((r.id, r) for r in db.session.execute(
                    db.select(*_SEND_COLUMNS).where(OutboundMessage.id.in_([outbound_id, *queue[:RESULT_BATCH]]))))
            message = loaded.pop(outbound_id, None)
            if message is None:
                continue
            changes: dict = {"id": message.id}
            try:
                raw, envelope_from, recipients = _wire_mail(message, from_address, from_name, changes)
            except (ValueError, StorageError) as exc:
                if isinstance(exc, StorageError) and exc.kind not in ("missing", "invalid_key"):
                    _defer(message, changes, f"An attachment could not be read: {exc}", result, None)
                else:
                    _fail(message, changes, f"The mail cannot be built: {exc}", "", result)
                recorder.record(changes)
                continue
            try:
                if not opened:
                    session.open()
                    opened = True
                    signed_in()
                reply = session.send_bytes(raw, envelope_from, recipients)
            except SmtpError as exc:
                if not opened and exc.kind == "auth":
                    sign_in_refused(_describe(exc))
                session_failed = not opened or exc.code is None
                if exc.transient or (session_failed and exc.kind in _SETTINGS_KINDS) or exc.kind == "timeout":
                    _defer(message, changes, _describe(exc), result, exc)
                    # The connection (or the settings) failed, not this mail: the rest wait too.
                    _release(queue, _describe(exc), result)
                    queue, drain = [], False
                else:
                    _fail(message, changes, _describe(exc), exc.server_reply, result)
                recorder.record(changes)
                continue
            _mark_sent(changes, raw, reply, result)
            recorder.record(changes)
            if recorder.due(burst=len(result.sent) + len(queue) > 1):
                recorder.commit()
    finally:
        recorder.commit()
        if opened:
            session.close()
    return result


class _ResultRecorder:
    """Write send results after every mail, or in small batches while a burst runs."""

    def __init__(self) -> None:
        self.pending: list[dict] = []
        self.since = time.monotonic()

    def record(self, changes: dict) -> None:
        self.pending.append(changes)

    def due(self, burst: bool) -> bool:
        if not burst:
            return True
        return len(self.pending) >= RESULT_BATCH or time.monotonic() - self.since >= RESULT_MAX_DELAY

    def commit(self) -> None:
        if self.pending:
            # ORM bulk UPDATE by primary key: one executemany per set of changed columns.
            db.session.execute(update(OutboundMessage), self.pending)
            db.session.commit()
        self.pending = []
        self.since = time.monotonic()


def _claim_fresh() -> list[int]:
    """Claim mails queued and never tried, to send them on the connection already open."""
    candidates = db.session.scalars(
        db.select(OutboundMessage.id)
        .where(OutboundMessage.status == "queued", OutboundMessage.attempts == 0)
        .order_by(OutboundMessage.id).limit(BURST_LIMIT))
    return claim(list(candidates))


# What a send reads from an outbox row.
_SEND_COLUMNS = (
    OutboundMessage.id, OutboundMessage.comment_id, OutboundMessage.automatic, OutboundMessage.to,
    OutboundMessage.cc, OutboundMessage.from_address, OutboundMessage.from_name, OutboundMessage.subject,
    OutboundMessage.text_body, OutboundMessage.html_body, OutboundMessage.headers,
    OutboundMessage.attachment_ids, OutboundMessage.message_id, OutboundMessage.in_reply_to,
    OutboundMessage.references, OutboundMessage.attempts,
)


def _wire_mail(message: Row, from_address: str, from_name: str, changes: dict) -> tuple[bytes, str, list[str]]:
    """Return the mail's bytes as they go on the wire, its envelope sender and its recipients.

    The bytes are flattened once: they are what the server receives and what the log keeps.
    """
    sender, name = message.from_address, message.from_name
    if not sender:
        # Queued before SMTP was configured: it goes out from the From Address set since.
        sender, name = from_address, name or from_name
        changes.update(from_address=sender, from_name=name)
    to = _split(message.to)
    cc = _split(message.cc)
    mail = OutgoingMail(
        to=to, cc=cc, subject=message.subject, text=message.text_body, html=message.html_body,
        from_address=sender, from_name=name, message_id=message.message_id,
        in_reply_to=message.in_reply_to, references=message.references.split(),
        headers=json.loads(message.headers or "{}"), attachments=_attachment_parts(message, changes),
        auto_submitted=message.automatic,
    )
    recipients = to + cc
    # compose() builds on policy.SMTP (CRLF); a non-ASCII address needs its SMTPUTF8 twin.
    policy = email_policy.SMTPUTF8 if needs_smtputf8(sender, recipients) else email_policy.SMTP
    return compose(mail).as_bytes(policy=policy), sender, recipients


def _attachment_parts(message: Row, changes: dict) -> list[tuple[str, str, bytes]]:
    """Return the files to attach: those named on the row, and the files of the reply it announces."""
    ids = list(json.loads(message.attachment_ids or "[]"))
    if message.comment_id is not None:
        # The reply's files are stored after the reply itself (and after this row was queued).
        ids += db.session.scalars(db.select(Attachment.id).filter_by(comment_id=message.comment_id)
                                  .order_by(Attachment.id))
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    from helpdesk.services.attachments import attachment_store

    store = attachment_store()
    attachments = db.session.scalars(db.select(Attachment).where(Attachment.id.in_(ids))
                                     .order_by(Attachment.id)).all()
    changes["attachment_ids"] = json.dumps([a.id for a in attachments])
    return [(a.filename, a.content_type, store.read(a.storage_key)) for a in attachments]


def _split(addresses: str) -> list[str]:
    return [a.strip() for a in (addresses or "").split(",") if a.strip()]


def _mark_sent(changes: dict, raw: bytes, reply: str, result: BurstResult) -> None:
    now = utcnow()
    changes.update(status="sent", raw_sent=raw, raw_size=len(raw), sent_at=now, server_reply=reply, last_error="",
                   updated_at=now)
    result.sent.append(changes["id"])


def _fail(message: Row, changes: dict, error: str, server_reply: str, result: BurstResult) -> None:
    log.warning("outbox mail %s (%s) failed for good: %s", message.id, message.message_id, error)
    changes.update(status="failed", last_error=error, server_reply=server_reply, updated_at=utcnow())
    result.failed.append(message.id)


def _defer(message: Row, changes: dict, error: str, result: BurstResult, exc: SmtpError | None) -> None:
    max_attempts = current_app.config.get("OUTBOX_MAX_ATTEMPTS", 20)
    if message.attempts >= max_attempts:
        _fail(message, changes, f"Gave up after {message.attempts} attempts. Last error: {error}", "", result)
        return
    log.warning("outbox mail %s (%s) will be tried again: %s", message.id, message.message_id, error)
    changes.update(status="queued", last_error=error, updated_at=utcnow())
    if exc is not None:
        changes["server_reply"] = exc.server_reply
    result.deferred.append(message.id)
    if result.error is None:
        result.error = exc


def _release(ids: list[int], error: str, result: BurstResult) -> None:
    """Give claimed mails that were never tried back to the queue, uncounted."""
    if not ids:
        return
    db.session.execute(
        update(OutboundMessage).where(OutboundMessage.id.in_(ids), OutboundMessage.status == "sending")
        .values(status="queued", attempts=OutboundMessage.attempts - 1, last_error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False))
    result.deferred.extend(ids)


def _describe(exc: SmtpError) -> str:
    return f"{exc.diagnosis} Server reply: {exc.server_reply}" if exc.server_reply else exc.diagnosis


def _smtp_settings() -> tuple[SmtpSettings, str, str]:
    try:
        loaded = load_smtp_settings()
    except CredentialError as exc:
        raise OutboxNotConfigured(str(exc)) from exc
    except OAuthError as exc:
        if exc.needs_reconnect:
            sign_in_refused(exc.diagnosis)
        raise OutboxNotConfigured(exc.diagnosis) from exc
    if loaded is None:
        raise OutboxNotConfigured(NOT_CONFIGURED)
    return loaded


def _note_not_sendable(ids: list[int], reason: str) -> None:
    """Say on waiting mails why they wait; they stay queued and go out once SMTP works."""
    log.warning("outbox mails %s wait: %s", ids or "queued", reason)
    condition = OutboundMessage.id.in_(ids) if ids else true()
    db.session.execute(
        update(OutboundMessage).where(condition, OutboundMessage.status == "queued",
                                      OutboundMessage.last_error != reason)
        .values(last_error=reason).execution_options(synchronize_session=False))
    db.session.commit()


# --- the sweep and the admin's resend ---------------------------------------------------------

def sweep() -> BurstResult:
    """Requeue mails a dead worker left "sending", then send every due queued mail over one connection."""
    now = utcnow()
    stuck = db.session.scalars(
        update(OutboundMessage)
        .where(OutboundMessage.status == "sending", OutboundMessage.updated_at < now - STUCK_AFTER,
               OutboundMessage.sent_at.is_(None), OutboundMessage.raw_sent.is_(None))
        .values(status="queued", last_error="The worker sending this mail stopped; sending again.",
                updated_at=now)
        .returning(OutboundMessage.id).execution_options(synchronize_session=False)).all()
    db.session.commit()
    if stuck:
        log.warning("outbox mails %s were left sending by a worker that stopped; queued again", stuck)
    try:
        settings = _smtp_settings()
    except OutboxNotConfigured as exc:
        _note_not_sendable([], str(exc))
        return BurstResult()
    # The requeued ones are due at once: they already waited STUCK_AFTER.
    return send_claimed(claim([*stuck, *due_ids(now)]), settings)


def due_ids(now=None, limit: int = BURST_LIMIT) -> list[int]:
    """Return queued mails whose job should have sent them by now, or whose retry wait is over."""
    now = now or utcnow()
    rows = db.session.execute(
        db.select(OutboundMessage.id, OutboundMessage.attempts, OutboundMessage.updated_at)
        .where(OutboundMessage.status == "queued",
               or_(OutboundMessage.created_at <= now - SWEEP_AFTER, OutboundMessage.attempts > 0))
        .order_by(OutboundMessage.id).limit(limit * 4)).all()
    due = [row.id for row in rows if row.updated_at <= now - _backoff(row.attempts)]
    return due[:limit]


def _backoff(attempts: int) -> timedelta:
    if attempts <= 0:
        return SWEEP_AFTER
    return min(SWEEP_AFTER * 2 ** (attempts - 1), MAX_BACKOFF)


def resend(outbound_id: int) -> bool:
    """Put a failed (or bounced) mail back in the queue and ask for it to be sent; False if it is not failed."""
    changed = db.session.execute(
        update(OutboundMessage)
        .where(OutboundMessage.id == outbound_id, OutboundMessage.status.in_(("failed", "bounced")))
        # Attempts count from the admin's resend, so an old give-up does not stop the new try.
        .values(status="queued", attempts=0, raw_sent=None, raw_size=None, sent_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if not changed:
        return False
    db.session.expire_all()
    background.send_outbox_after_commit(outbound_id)
    return True
