"""Decide what an inbound mail becomes: a new ticket, a comment on one, ignored or quarantined.

Plain data in, plain data out: the ingest service looks up what the rules need
(the ticket a reply token names, the ticket a subject tag names and its
contact, our own addresses, how much this sender wrote lately) and fills a
RoutingContext; `decide` only applies the rules, so each rule can be read and
tested without a database.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from helpdesk.mail import tokens
from helpdesk.mail.parse import ParsedMail

DecisionKind = Literal["new_ticket", "comment", "ignore", "quarantine"]


@dataclass(frozen=True)
class TaggedTicket:
    """The ticket a subject tag names, with what the routing rules compare against."""

    ticket_id: int
    contact_email: str | None
    title: str


@dataclass
class RoutingContext:
    """What the routing rules need to know beyond the mail itself."""

    own_addresses: frozenset[str] = frozenset()
    # The existing ticket named by a valid reply token in In-Reply-To/References.
    ticket_id_by_token: int | None = None
    # The existing ticket named by a [#n] tag in the subject.
    ticket_by_subject_tag: TaggedTicket | None = None
    # The existing ticket named by a valid token in the Message-IDs a bounce reports.
    bounced_ticket_id: int | None = None
    # Which of the Message-IDs a bounce reports are in our outbox.
    bounced_outbox_ids: list[str] = field(default_factory=list)
    # Mails already recorded from this sender within the loop window.
    recent_count_from_sender: int = 0
    loop_limit: int = 20
    loop_window_seconds: int = 600
    max_size: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class Decision:
    """The routing verdict: what to make of the mail and why, in words an admin understands."""

    kind: DecisionKind
    reason: str
    ticket_id: int | None = None
    # Automatic mail never gets an automatic answer, nor reopens a ticket by itself.
    automatic: bool = False
    # The comment is an internal note (bounces of our mail), not a public reply.
    internal: bool = False
    # Our outbox Message-IDs this mail reports as undeliverable.
    bounce_of: tuple[str, ...] = ()
    # Over the size limit: keep the text, leave the attachments out with a note.
    too_large: bool = False


def reply_token_ticket_id(mail: ParsedMail, key: bytes) -> int | None:
    """Return the ticket id a valid reply token in In-Reply-To/References names, else None."""
    return tokens.ticket_id_from_message_ids([*mail.in_reply_to, *mail.references], key)


def bounced_ticket_id(mail: ParsedMail, key: bytes) -> int | None:
    """Return the ticket id named by a valid token in the Message-IDs a bounce reports, else None."""
    return tokens.ticket_id_from_message_ids(mail.bounced_message_ids, key) if mail.is_bounce else None


def tagged_ticket_number(mail: ParsedMail) -> int | None:
    """Return the ticket number of the [#n] tag in the subject, else None."""
    return tokens.ticket_number_from_subject(mail.subject)


def own_addresses(addresses: Iterable[str | None]) -> frozenset[str]:
    """Return the usable addresses among `addresses`, lowercased, for comparing with senders."""
    return frozenset(a.strip().lower() for a in addresses if a and "@" in a)


def decide(mail: ParsedMail, ctx: RoutingContext) -> Decision:
    """Apply the routing rules to a parsed mail."""
    sender = mail.from_address
    too_large = mail.size > ctx.max_size
    automatic = mail.auto_submitted or mail.is_bounce
    if not sender and not (mail.subject.strip() or mail.text.strip() or mail.html or mail.attachments):
        return Decision("ignore", "empty mail: no sender and no content", automatic=True)
    if sender and sender in ctx.own_addresses:
        # Our own mail coming back (a forward rule, a CC to the mailbox) would start a loop.
        return Decision("ignore", f"sent from our own address {sender}", automatic=True)
    if mail.is_bounce:
        return _bounce(mail, ctx, too_large)
    if sender and ctx.recent_count_from_sender >= ctx.loop_limit:
        minutes = max(1, round(ctx.loop_window_seconds / 60))
        return Decision("quarantine", f"suspected mail loop: more than {ctx.loop_limit} mails from {sender} "
                                      f"within {minutes} minutes", automatic=True, too_large=too_large)
    why_automatic = f" (automatic mail: {mail.auto_reason}; no automatic reply)" if automatic else ""
    if ctx.ticket_id_by_token is not None:
        return Decision("comment", "reply to our mail (reply token in In-Reply-To/References)" + why_automatic,
                        ticket_id=ctx.ticket_id_by_token, automatic=automatic, too_large=too_large)
    tagged = ctx.ticket_by_subject_tag
    if tagged is not None and sender and sender == (tagged.contact_email or "").lower():
        same = tokens.normalise_subject(mail.subject) == tokens.normalise_subject(tagged.title)
        detail = "same subject" if same else "subject changed"
        return Decision("comment", f"subject tag of the ticket, from its contact ({detail})" + why_automatic,
                        ticket_id=tagged.ticket_id, automatic=automatic, too_large=too_large)
    if not sender:
        return Decision("new_ticket", "new mail without a sender address: nobody to confirm to", automatic=True,
                        too_large=too_large)
    reason = "new mail"
    if tagged is not None:
        reason = "new mail: it carries a ticket's subject tag but is not from that ticket's contact"
    return Decision("new_ticket", reason + why_automatic, automatic=automatic, too_large=too_large)


def _bounce(mail: ParsedMail, ctx: RoutingContext, too_large: bool) -> Decision:
    what = mail.auto_reason or "delivery status notification"
    ours = tuple(ctx.bounced_outbox_ids)
    if ctx.bounced_ticket_id is not None:
        return Decision("comment", f"bounce of our mail ({what}): kept as an internal note",
                        ticket_id=ctx.bounced_ticket_id, automatic=True, internal=True, bounce_of=ours,
                        too_large=too_large)
    if ours:
        return Decision("ignore", f"bounce of our mail {ours[0]} ({what}), which belongs to no ticket",
                        automatic=True, bounce_of=ours)
    return Decision("ignore", f"bounce of a mail we did not send ({what})", automatic=True)
