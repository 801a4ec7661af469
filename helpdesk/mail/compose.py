"""Outgoing messages: headers for threading and loop prevention, text+HTML bodies, attachments."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from helpdesk.mail.addresses import plain_parts

# Headers compose() writes itself; an extra header must not repeat or override them.
_OWN_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
    "references", "auto-submitted", "x-auto-response-suppress", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition",
})
# RFC 5322 field name: printable ASCII except colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_MSG_ID = re.compile(r"<?([^<>\s@]+@[^<>\s@]+)>?")

_MAILER_DAEMONS = frozenset({"mailer-daemon", "mailerdaemon", "postmaster"})
# Compared with separators removed, so "no-reply", "no_reply" and "no.reply" all match.
_NO_REPLY_PREFIXES = ("noreply", "donotreply", "bounce")


@dataclass(kw_only=True)
class OutgoingMail:
    """Everything needed to build one outgoing message."""

    to: list[str]
    subject: str
    text: str
    from_address: str
    message_id: str
    html: str | None = None
    cc: list[str] = field(default_factory=list)
    from_name: str = ""
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # filename, type, data
    auto_submitted: bool = False


def _one_line(value: str) -> str:
    """Fold any line break into a space, so free text cannot start a new header."""
    # splitlines() knows every separator the email policy refuses (CR, LF, VT, FF, U+2028, ...).
    return " ".join(part.strip() for part in value.splitlines()).strip()


def _address(value: str, role: str, display_name: str = "") -> Address:
    if value != _one_line(value) or not value:
        raise ValueError(f"{role} address {value!r} is not a single email address")
    try:
        address = Address(display_name=_one_line(display_name), addr_spec=value)
    except (ValueError, HeaderParseError, IndexError) as exc:
        raise ValueError(f"{role} address {value!r} is not a valid email address") from exc
    if not address.username or not address.domain:
        raise ValueError(f"{role} address {value!r} is not a valid email address")
    return address


def _msg_id(value: str) -> str | None:
    match = _MSG_ID.fullmatch(value.strip())
    return f"<{match.group(1)}>" if match and value.isascii() else None


class _MessageIds(str):
    """A header of message ids that folds between ids and never encodes them.

    The stock policy treats In-Reply-To/References as free text and RFC 2047-encodes any id
    longer than a line, which breaks threading in every mail client. The email policy accepts
    an object with `name` and `fold()` as a ready-made header, so this one folds the ids itself.
    """

    name: str

    def __new__(cls, name: str, ids: list[str]) -> _MessageIds:
        header = super().__new__(cls, " ".join(ids))
        header.name = name
        return header

    def fold(self, *, policy: policy.Policy) -> str:
        limit = policy.max_line_length or 998
        lines = [f"{self.name}:"]
        for msg_id in self.split():
            if len(lines[-1]) + 1 + len(msg_id) > limit and lines[-1] != f"{self.name}:":
                lines.append("")
            lines[-1] += f" {msg_id}"
        return policy.linesep.join(lines) + policy.linesep


def compose(mail: OutgoingMail) -> EmailMessage:
    """Build the message to send: threading headers, text (+HTML) body, attachments."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address(mail.from_address, "From", mail.from_name)
    msg["To"] = [_address(a, "To") for a in mail.to]
    if mail.cc:
        msg["Cc"] = [_address(a, "Cc") for a in mail.cc]
    msg["Subject"] = _one_line(mail.subject)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    message_id = _msg_id(mail.message_id)
    if message_id is None:
        raise ValueError(f"Message-ID {mail.message_id!r} is not a message id like <id@host>")
    msg["Message-ID"] = _MessageIds("Message-ID", [message_id])
    # These ids come from other people's mail: a malformed one is left out rather than
    # stopping the reply, and it can never carry a line break into the header block.
    in_reply_to = _msg_id(mail.in_reply_to or "")
    if in_reply_to:
        msg["In-Reply-To"] = _MessageIds("In-Reply-To", [in_reply_to])
    references = [i for i in map(_msg_id, mail.references) if i]
    if references:
        msg["References"] = _MessageIds("References", references)
    if mail.auto_submitted:
        # RFC 3834 for well-behaved autoresponders; the second header is what Exchange honours.
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
    for name, value in mail.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"header {name} is set by compose(), not as an extra header")
        msg[name] = _one_line(value)

    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    for filename, content_type, data in mail.attachments:
        if not _CONTENT_TYPE.fullmatch(content_type) or content_type.lower().startswith(
            ("multipart/", "message/")
        ):
            # Container types would need a parsed body; the bytes still arrive intact this way.
            content_type = "application/octet-stream"
        maintype, _, subtype = content_type.lower().partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype,
                           filename=_one_line(filename) or "attachment")
    return msg


def is_automatic_recipient_blocked(address: str, own_addresses: Iterable[str]) -> str | None:
    """Return why an automatic mail must not go to this address, or None when it may."""
    address = (address or "").strip()
    if not address:
        return "the address is empty"
    parts = plain_parts(address)
    if parts is None:
        try:
            parsed = _address(address, "Recipient")
        except ValueError:
            return f"{address!r} is not a valid email address"
        parts = parsed.username, parsed.domain
    local = parts[0].lower()
    domain = parts[1].lower().rstrip(".")
    base = local.split("+", 1)[0]

    for own in own_addresses:
        own_local, _, own_domain = own.strip().lower().rpartition("@")
        if own_domain.rstrip(".") == domain and own_local.split("+", 1)[0] == base:
            # Plus-tagged variants (reply tokens) land in our own mailbox too: a mail loop.
            return f"{address} is one of our own addresses"
    if base in _MAILER_DAEMONS:
        return f"{address} is a mail system address ({base}); nobody reads replies there"
    squeezed = re.sub(r"[-_.]", "", base)
    if squeezed.startswith(_NO_REPLY_PREFIXES):
        return f"{address} is a no-reply or bounce address"
    return None
