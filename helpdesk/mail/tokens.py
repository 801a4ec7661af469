"""Threading marks on outgoing mail: signed reply tokens, our Message-IDs, the [#1042] subject tag.

A reply is matched to its ticket first by the token in the Message-ID it
answers (signed, so a sender cannot attach mail to someone else's ticket by
guessing), and only then by the subject tag, which any mail can carry.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

# A PostgreSQL bigint: larger ids cannot name a ticket, so no token is made for them.
MAX_TICKET_ID = 2**63 - 1
SIGNATURE_CHARS = 16  # 80 bits of base32: guessing is hopeless, the Message-ID stays short

_TOKEN = re.compile(rf"t([1-9][0-9]{{0,18}})-([a-z2-7]{{{SIGNATURE_CHARS}}})")
_ANGLE_IDS = re.compile(r"<([^<>]*)>")
# Our Message-ID local part: "hd." then, for ticket mail, the token, then a random part.
_OUR_ID = re.compile(rf"hd\.(t[0-9]+-[a-z2-7]{{{SIGNATURE_CHARS}}})\.[a-z0-9]+@", re.IGNORECASE)
_DOMAIN = re.compile(r"(?a:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)")

_TAG = re.compile(r"\[#([1-9][0-9]{0,17})\]")
# Reply and forward prefixes in the languages mail clients commonly write,
# with optional counters ("Re[2]:", "Re(2):") and a space before the colon (French).
_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd|fw|aw|wg|sv|vs|antw|rif|r|tr)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[#\d+\])",
    re.IGNORECASE,
)


def reply_token(ticket_id: int, key: bytes) -> str:
    """Return the signed token naming `ticket_id`, e.g. "t1042-k3f9...": the id plus an HMAC."""
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int) or not 0 < ticket_id <= MAX_TICKET_ID:
        raise ValueError(f"A reply token needs a ticket id between 1 and {MAX_TICKET_ID}, not {ticket_id!r}.")
    return f"t{ticket_id}-{_signature(ticket_id, key)}"


def verify_reply_token(token: str, key: bytes) -> int | None:
    """Return the ticket id a token names if its signature is ours, else None."""
    # Some servers and clients change case; base32 in lower case survives that.
    match = _TOKEN.fullmatch(token.strip().lower()) if isinstance(token, str) else None
    if match is None:
        return None
    ticket_id = int(match.group(1))
    if ticket_id > MAX_TICKET_ID:
        return None
    if not hmac.compare_digest(match.group(2), _signature(ticket_id, key)):
        return None
    return ticket_id


def make_message_id(ticket_id: int | None, key: bytes, domain: str) -> str:
    """Return a fresh Message-ID for our mail, carrying the ticket's reply token when there is one."""
    domain_ascii = _message_id_domain(domain)
    # The random part makes each mail's id unique even for one ticket.
    random_part = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    if ticket_id is None:
        return f"<hd.{random_part}@{domain_ascii}>"
    return f"<hd.{reply_token(ticket_id, key)}.{random_part}@{domain_ascii}>"


def may_be_our_message_id(message_id: str) -> bool:
    """Tell whether a Message-ID has the form make_message_id gives ours (a cheap check before a lookup)."""
    return message_id.strip().lower().startswith("<hd.")


def ticket_id_from_message_ids(ids: Iterable[str], key: bytes) -> int | None:
    """Return the ticket id from the first of our Message-IDs with a valid token, else None."""
    for value in ids:
        if not isinstance(value, str):
            continue
        # Accept single ids and whole References headers alike.
        candidates = _ANGLE_IDS.findall(value) or [value.strip()]
        for candidate in candidates:
            match = _OUR_ID.match(candidate.strip())
            if match is None:
                continue
            ticket_id = verify_reply_token(match.group(1), key)
            if ticket_id is not None:
                return ticket_id
    return None


def subject_tag(number: int) -> str:
    """Return the subject tag for a ticket number, e.g. "[#1042]"."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"A ticket number is a positive whole number, not {number!r}.")
    return f"[#{number}]"


def tag_subject(subject: str, number: int) -> str:
    """Return `subject` with the ticket's tag in front, unless it already carries it."""
    tag = subject_tag(number)
    if tag in subject:
        return subject
    rest = subject.strip()
    return f"{tag} {rest}" if rest else tag


def ticket_number_from_subject(subject: str) -> int | None:
    """Return the ticket number from the first [#n] tag in a subject, else None."""
    match = _TAG.search(subject)
    return int(match.group(1)) if match else None


def normalise_subject(subject: str) -> str:
    """Return a subject without reply/forward prefixes and our tags, for comparing."""
    previous = None
    text = subject
    while text != previous:
        previous = text
        text = _PREFIX.sub("", text, count=1)
    text = _TAG.sub(" ", text)
    return " ".join(text.split()).casefold()


def _signature(ticket_id: int, key: bytes) -> str:
    if not key:
        raise ValueError("The reply token key is empty; set a secret key for the helpdesk.")
    # HMAC pads short keys with zero bytes, so b"k" and b"k\0" would sign alike;
    # hashing the key first makes every distinct key a distinct 32-byte key.
    # The purpose prefix keeps this HMAC from matching one made with the same key elsewhere.
    digest = hmac.new(hashlib.sha256(key).digest(), b"helpdesk-reply-token:%d" % ticket_id,
                      hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:SIGNATURE_CHARS]


def _message_id_domain(domain: str) -> str:
    name = domain.strip().rstrip(".")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"{domain!r} cannot be used as the domain of a Message-ID.") from exc
    if not _DOMAIN.fullmatch(ascii_name):
        raise ValueError(f"{domain!r} cannot be used as the domain of a Message-ID.")
    return ascii_name
