"""Turn the raw bytes of an inbound mail into a ParsedMail, whatever shape the bytes are in."""
from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import hashlib
import io
import logging
import mimetypes
import quopri
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.feedparser import BytesFeedParser
from email.parser import BytesParser
from email.policy import EmailPolicy

from helpdesk.mail.addresses import ATOM, PLAIN_ADDR_SPEC
from helpdesk.mail.html import html_to_text

log = logging.getLogger(__name__)

# Deeper nesting than this is an attack or a loop, not a mail anyone wrote.
MAX_DEPTH = 40
MAX_PARTS = 2000
MAX_BOUNDARY_LINES = 5000
NOT_A_MESSAGE = "not a mail message: binary data without header fields"
_TOO_DEEP = "too deeply nested or too many parts; the rest was ignored"
# Shown at the end of the mail's text, so whoever reads the ticket knows part of it is missing.
TOO_DEEP_NOTE = (f"[This mail is nested more than {MAX_DEPTH} levels deep; "
                 "the parts below that depth were not read.]")
# A Content-Type line that opens a nesting level: a multipart or an embedded message.
_NESTING_HEADER = re.compile(rb"(?im)^content-type:[ \t]*(?:\r?\n[ \t]+)*(?:multipart|message)/")

# Built-in tables only: the system's /etc/mime.types differs between machines,
# and a filename we invent must not change with the host.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
_PREFERRED_EXT = {
    "image/jpeg": ".jpg", "text/plain": ".txt", "application/octet-stream": ".bin",
    "message/rfc822": ".eml", "text/calendar": ".ics", "image/tiff": ".tif",
    "message/delivery-status": ".txt", "text/rfc822-headers": ".txt", "message/feedback-report": ".txt",
    "message/disposition-notification": ".txt", "application/pgp-signature": ".asc",
}

# Charset labels mail programs write that Python does not know, or knows by a
# narrower name than what the sender meant (browsers make the same substitutions).
_CHARSET_ALIASES = {
    "utf8": "utf-8", "utf-8": "utf-8", "unicode-1-1-utf-8": "utf-8", "x-unicode20utf8": "utf-8",
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "ansi_x3.4-1968": "cp1252", "iso-8859-8-i": "iso-8859-8",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext", "tis-620": "cp874", "iso-8859-11": "cp874", "big5": "big5hkscs",
    "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
}
# Declared single-byte charsets under which valid UTF-8 is far more likely a lie than real text.
_SINGLE_BYTE = re.compile(r"^(cp125\d|iso-?8859-\d+|windows-125\d|latin-?\d|us-ascii|ascii|mac_roman|cp1252)$")

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_ENCODED_WORD_GAP = re.compile(r"(\?=)[ \t\r\n]+(?==\?)")
# Whitespace is allowed inside: folding splits long ids, and it is removed afterwards.
_MSGID_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_MAILER_DAEMON = re.compile(
    r"^(mailer-daemon|postmaster|post_master|mail-daemon|mailer_daemon|mail-delivery-subsystem|"
    r"mdaemon|double-bounce|bounce|bounces|mail\.delivery\.system|maildelivery|deliverystatus)$",
    re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|returning message|delivery (status )?(notification|failure|failed|report|"
    r"has failed|problem)|mail delivery failed|failure notice|failed delivery|delivery failure|"
    r"non[- ]?delivery|could not (be )?deliver|message (delivery )?(failed|not delivered)|"
    r"mail system error|warning: could not send|could not send mail|delayed mail|"
    r"delivery (delayed|notification)|unzustellbar|nicht zustellbar|non remis|"
    r"mail failure|rejected|undelivered|returned to sender|delivery status|notificaci[oó]n de estado|"
    r"\bdelayed\b|\bfail(s|ed|ure)?\b|エラー通知|配信エラー|配送エラー|不達|未達|送信できません",
    re.I)
_NOREPLY = re.compile(r"^(no-?reply|do-?not-?reply|donotreply)([-+._].*)?$", re.I)
# Addresses a mailing-list manager writes its own notices from (RFC 2142 conventions).
_LIST_MANAGER = re.compile(r"^(.+-(admin|owner|request|bounces?)|owner-.+|listserv|majordomo|mailman|sympa|ezmlm)$",
                           re.I)
_LIST_HEADERS = ("mailing-list", "x-mlserver", "list-id", "list-subscribe", "list-unsubscribe", "x-ml-name")
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office( reply| autoreply)?|"
    r"abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica|"
    r"risposta automatica|resposta autom[áa]tica|automatisch antwoord|autosvar|自動応答|自动回复)\b\s*[:：]",
    re.I)
_SNS_NOTIFICATION = re.compile(r'"notificationType"\s*:\s*"(Bounce|Complaint|Delivery)"')
_COMPLAINT_SUBJECT = re.compile(r"^\s*complaint about message from\b", re.I)
_BOUNCE_BODY = re.compile(
    r"(could not be delivered|couldn't be delivered|was not delivered|delivery (has )?failed|"
    r"permanent (fatal )?error|undeliverable|unable to deliver|delivery to the following recipients? failed|"
    r"user unknown|mailbox (is )?(full|unavailable|not found)|no such (user|recipient|mailbox)|"
    r"recipient address rejected|the following address(es)? (had|failed)|returned to sender|"
    r"message (was|has been) (rejected|returned|blocked)|host unknown|\b5\.\d{1,3}\.\d{1,3}\b|"
    r"\b550[ -]|rejected your message|delivery status notification|this is the mail system at host|"
    r"i'm sorry to have to inform you|retry time(out)? exceeded|could not deliver|not delivered to|"
    r"delivery to the following recipient|failed recipient|unknown recipient)",
    re.I)
_QUOTED_MESSAGE_ID = re.compile(r"^\s*>?\s*(?:X-Original-)?Message-I[Dd]\s*:\s*(<[^<>\s]+>|\S+@\S+)", re.I | re.M)


# Header objects of the modern policy, by (name, raw value). Building one costs far more
# than the lookup, and the parser and our walk ask for each part's Content-Type many times.
# Content-* values recur across mails and stay cached; the others (From is read twice) only
# for the mail being parsed, so a mail parsed again pays again. Header objects are immutable,
# and a parse in another thread clearing the per-mail entries only costs a rebuild.
_CONTENT_HEADERS: dict[tuple[str, str], object] = {}
_MAIL_HEADERS: dict[tuple[str, str], object] = {}
_HEADER_CACHE_SIZE = 4096
_HEADER_CACHE_MAX_VALUE = 2048


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, creating each header class once instead of on every header."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        lname = name.lower()
        cls = self._classes.get(lname)
        if cls is None:
            cls = self._classes[lname] = super().__getitem__(lname)
        return cls


class _CachedHeaderPolicy(EmailPolicy):
    """The modern policy (policy.default), building each distinct header object only once."""

    def header_fetch_parse(self, name: str, value: str):  # noqa: ANN201 - an email.headerregistry header
        """Return the header object for a stored header, from the cache when it was built before."""
        if hasattr(value, "name") or len(value) > _HEADER_CACHE_MAX_VALUE:
            return super().header_fetch_parse(name, value)
        cache = _CONTENT_HEADERS if name[:8].lower() == "content-" else _MAIL_HEADERS
        key = (name, value)
        header = cache.get(key)
        if header is None:
            header = super().header_fetch_parse(name, value)
            if len(cache) >= _HEADER_CACHE_SIZE:
                cache.clear()
            cache[key] = header
        return header


_MODERN = _CachedHeaderPolicy(header_factory=_HeaderClasses())


def clear_header_cache() -> None:
    """Forget the header objects kept between mails (a benchmark starts each run cold)."""
    _CONTENT_HEADERS.clear()
    _MAIL_HEADERS.clear()


@dataclass
class ParsedAttachment:
    """One file carried by a mail: a real attachment, an inline image or an embedded message."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        """Return the size of the decoded data in bytes."""
        return len(self.data)

    @property
    def sha256(self) -> str:
        """Return the hex SHA-256 of the decoded data."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class ParsedMail:
    """What the helpdesk needs from an inbound mail, decoded and normalised."""

    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    reply_to_address: str = ""
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None
    text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    auto_submitted: bool = False
    is_bounce: bool = False
    auto_reason: str | None = None
    bounced_message_ids: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    size: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # An ARF spam complaint: also counted as a bounce so nobody answers it.
    is_complaint: bool = False


# ---------------------------------------------------------------------------
# Text decoding


def _codec_for(charset: str | None) -> str | None:
    """Return a Python codec name for a declared charset, or None when unusable."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes with the declared charset, falling back to UTF-8 then Windows-1252."""
    codec = _codec_for(charset)
    if codec and _SINGLE_BYTE.match(codec) and not data.isascii():
        # Mail programs often label UTF-8 as Latin-1 or ASCII; valid multi-byte
        # UTF-8 sequences almost never occur by chance in real Latin-1 text.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _to_bytes(value: str) -> bytes:
    """Return the original bytes of a header the parser read as ASCII with surrogate escapes."""
    # Real characters (already decoded upstream) come back as UTF-8, escapes as their byte.
    return value.encode("utf-8", "surrogateescape")


def _decode_encoded_word(charset: str, encoding: str, text: str) -> bytes | None:
    """Return the bytes an RFC 2047 encoded word carries, or None when it is not decodable."""
    try:
        if encoding.lower() == "b":
            text = text.rstrip("=")
            text += "=" * (-len(text) % 4)
            return base64.b64decode(text, validate=False)
        return quopri.decodestring(text.replace("_", " ").encode("ascii", "surrogateescape"), header=False)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def decode_header_text(raw: str) -> str:
    """Decode a raw header value: RFC 2047 words, stray 8-bit bytes, folding."""
    unfolded = re.sub(r"\r?\n[ \t]*", " ", raw)
    # Whitespace between adjacent encoded words is not part of the text (RFC 2047 section 6.2).
    unfolded = _ENCODED_WORD_GAP.sub(r"\1", unfolded)
    pieces: list[str] = []
    pending: bytes = b""
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            pieces.append(decode_bytes(pending, pending_charset))
        pending, pending_charset = b"", None

    for match in _ENCODED_WORD.finditer(unfolded):
        plain = unfolded[pos:match.start()]
        charset, encoding, text = match.groups()
        charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
        data = _decode_encoded_word(charset, encoding, text)
        if plain:
            flush()
            pieces.append(decode_bytes(_to_bytes(plain), "utf-8"))
        if data is None:
            flush()
            pieces.append(match.group(0))
        else:
            # Adjacent words in one charset are joined as bytes first: senders split
            # multi-byte characters across words.
            if pending and pending_charset != charset:
                flush()
            pending += data
            pending_charset = charset
        pos = match.end()
    flush()
    tail = unfolded[pos:]
    if tail:
        pieces.append(decode_bytes(_to_bytes(tail), "utf-8"))
    return _fold_whitespace("".join(pieces))


def _fold_whitespace(text: str) -> str:
    """Return text on one line with runs of whitespace collapsed."""
    return " ".join(text.replace("\x00", "").split())


# ---------------------------------------------------------------------------
# Header access that survives broken headers


def _raw_header(msg: Message, name: str) -> str | None:
    """Return the first raw value of a header, as the parser stored it."""
    lname = name.lower()
    try:
        for key, value in msg.raw_items():
            if str(key).lower() == lname:
                return str(value)
    except (AttributeError, TypeError, ValueError):
        return None
    return None


# Headers whose modern value is rebuilt from what was parsed out of them (addresses, dates, MIME
# parameters). Any other header's value is its own text with encoded words decoded (the parse
# tree of Subject, Message-ID and unstructured headers gives back the text it was built from).
_REBUILT_HEADERS = frozenset((
    "date", "resent-date", "orig-date", "sender", "resent-sender", "to", "resent-to", "cc", "resent-cc",
    "bcc", "resent-bcc", "from", "resent-from", "reply-to", "mime-version", "content-type", "content-disposition",
    "content-transfer-encoding"))


def _header(msg: Message, name: str, defects: list[str]) -> str | None:
    """Return a decoded header value on one line, or None when the header is absent."""
    raw = _raw_header(msg, name)
    if raw is None:
        return None
    if name.lower() not in _REBUILT_HEADERS and raw.isascii() and "=?" not in raw:
        return _fold_whitespace(raw)  # ASCII without encoded words: the header parser gives it back as it is
    try:
        header = msg.get(name, "")
        value = str(header)
    except Exception as exc:  # noqa: BLE001 - the modern header parser raises many kinds on bad input
        defects.append(f"{name}: unparsable header ({type(exc).__name__})")
        return decode_header_text(raw)
    if not hasattr(header, "defects"):
        return decode_header_text(raw)  # parsed under compat32: the value is still encoded
    if "\ufffd" in value or not raw.isascii() or _has_surrogates(value):
        # The modern parser replaced undecodable bytes; our own decoder guesses the charset.
        return decode_header_text(raw)
    return _fold_whitespace(value)


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _addresses(msg: Message, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """Return (display name, lowercased address) pairs of an address header."""
    raw = _raw_header(msg, name)
    if raw is None:
        return []
    simple = _simple_addresses(raw)
    if simple is not None:
        return simple
    pairs: list[tuple[str, str]] = []
    try:
        header = msg.get(name)
        addresses = getattr(header, "addresses", None)
        if addresses is not None and not any(getattr(header, "defects", ())) and raw.isascii():
            for addr in addresses:
                name, address = _fold_whitespace(addr.display_name or ""), _clean_address(addr.addr_spec)
                # "From: Whomever" names a person without an address; keep the name.
                pairs.append((name or ("" if address else addr.addr_spec.strip()), address))
            if pairs:
                return [p for p in pairs if p[0] or p[1]]
    except Exception as exc:  # noqa: BLE001 - the modern address parser raises many kinds on bad input
        defects.append(f"{name}: unparsable address header ({type(exc).__name__})")
    return _addresses_from_raw(raw)


_FWS = r"[ \t\r\n]*"
_BARE_ADDRESS = re.compile(rf"{_FWS}(?P<addr>{PLAIN_ADDR_SPEC}){_FWS}")
_NAMED_ADDRESS = re.compile(rf'{_FWS}(?:(?P<phrase>{ATOM}(?:[ \t\r\n]+{ATOM})*){_FWS}|"(?P<quoted>[^"\\]*)"{_FWS})?'
                            rf"<(?P<addr>{PLAIN_ADDR_SPEC})>{_FWS}")
_COMMA_OUTSIDE_QUOTES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')


def _simple_addresses(raw: str) -> list[tuple[str, str]] | None:
    """Return the pairs of a plain ASCII address list (most mail), or None when it needs the full parser.

    Same result as the modern parser for these forms, at a fraction of its cost.
    """
    if not raw.isascii() or "=?" in raw or "(" in raw:
        return None
    pairs = []
    for piece in _COMMA_OUTSIDE_QUOTES.split(raw) if '"' in raw else raw.split(","):
        found = _BARE_ADDRESS.fullmatch(piece)
        if found is not None:
            pairs.append(("", found["addr"].lower()))
            continue
        found = _NAMED_ADDRESS.fullmatch(piece)
        if found is None:
            return None
        pairs.append((_fold_whitespace(found["phrase"] or found["quoted"] or ""), found["addr"].lower()))
    return pairs


def _addresses_from_raw(raw: str) -> list[tuple[str, str]]:
    """Parse an address list with the forgiving compat32 helpers."""
    unfolded = re.sub(r"\r?\n[ \t]*", " ", raw)
    decoded = decode_bytes(_to_bytes(unfolded), "utf-8")
    pairs = []
    try:
        parsed = email.utils.getaddresses([decoded])
    except (ValueError, IndexError, TypeError):
        parsed = []
    for name, addr in parsed:
        name = decode_header_text(name) if name else ""
        address = _clean_address(addr)
        if not address and not name:
            name = addr or ""
        if not address and not name:
            continue
        if not address and "@" in name and " " not in name.strip():
            name, address = "", _clean_address(name)
        pairs.append((name.strip().strip('"').strip(), address))
    return pairs


def _clean_address(addr: str | None) -> str:
    """Return an address lowercased, or "" when it has no domain to send to."""
    if not addr:
        return ""
    addr = addr.strip().strip("<>").strip().lower()
    if "@" not in addr or addr.startswith("@") or addr.endswith("@") or any(c.isspace() for c in addr):
        return ""
    return addr


def normalise_message_id(value: str) -> str | None:
    """Return a Message-ID in the form <id@host>, or None when there is none."""
    if not value:
        return None
    value = value.strip()
    match = _MSGID_IN_BRACKETS.search(value)
    if match:
        inner = match.group(1)
    else:
        tokens = value.split()
        inner = tokens[0] if tokens else ""
    inner = inner.strip().strip("<>").strip()
    inner = "".join(inner.split())
    if not inner:
        return None
    return f"<{inner}>"


def parse_message_id_list(value: str) -> list[str]:
    """Return the Message-IDs in a References or In-Reply-To value, in order, without duplicates."""
    if not value:
        return []
    found = _MSGID_IN_BRACKETS.findall(value)
    if not found:
        # Broken senders drop the brackets; keep tokens that look like ids.
        found = [tok for tok in re.split(r"[\s,]+", value) if "@" in tok]
    result: list[str] = []
    for token in found:
        normalised = normalise_message_id(f"<{token.strip('<>')}>")
        if normalised and normalised not in result and normalised != "<>":
            result.append(normalised)
    return result


def _date(msg: Message, defects: list[str]) -> datetime | None:
    raw = _raw_header(msg, "date")
    if raw is None:
        return None
    value: datetime | None = None
    try:
        # What the modern policy's Date header does with the value, without rendering it back to text.
        value = email.utils.parsedate_to_datetime(raw.replace("\r", "").replace("\n", ""))
    except Exception:  # noqa: BLE001 - the date parser raises many kinds on bad input
        value = None
    if value is None:
        try:
            value = email.utils.parsedate_to_datetime(_fold_whitespace(raw))
        except (TypeError, ValueError, IndexError, OverflowError):
            defects.append("date: unparsable")
            return None
    if value.tzinfo is None:
        # "-0000" means the zone is unknown; UTC is the honest reading (RFC 5322 3.3).
        value = value.replace(tzinfo=timezone.utc)
    return value


# ---------------------------------------------------------------------------
# MIME structure


_MEDIA_TYPE = re.compile(r"^\s*([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)")
_BOUNDARY = re.compile(r"boundary\s*=\s*(?:\"([^\"]+)\"|([^\s;]+))", re.I)


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:  # noqa: BLE001 - broken Content-Type parameters raise from deep inside email
        ctype = (_raw_header(part, "content-type") or "").split(";", 1)[0]
    # A missing ";" glues parameters onto the type ("multipart/mixed\tboundary=...").
    match = _MEDIA_TYPE.match((ctype or "").lower())
    return match.group(1) if match else "application/octet-stream"


FEED_SLICE = 64 * 1024


def _message_from(data: bytes, parse_policy: policy.Policy) -> Message:
    """Parse a mail's bytes, fed to the email package a slice at a time.

    Its `parsebytes` turns the whole mail into one str, then into a StringIO of four bytes a
    character: a 30 MB mail cost 160 MB before the parser began.
    """
    parser = BytesFeedParser(policy=parse_policy)
    view = memoryview(data)
    for start in range(0, len(view), FEED_SLICE):
        parser.feed(bytes(view[start:start + FEED_SLICE]))
    return parser.close()


def _parts_after_close(part: Message) -> list[Message]:
    """Return parts that follow a premature closing delimiter (a nested part reused our boundary)."""
    epilogue = getattr(part, "epilogue", None)
    boundary = _param(part, "boundary")
    if not epilogue or not boundary or f"--{boundary}" not in epilogue:
        return []
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode("ascii", "replace")
    recovered = _message_from(head + _to_bytes(epilogue), part.policy)
    payload = recovered.get_payload() if recovered.is_multipart() else []
    return [p for p in payload if isinstance(p, Message)]


def _reparse_multipart(part: Message, ctype: str) -> Message | None:
    """Return a multipart the parser missed because of a malformed Content-Type, or None."""
    raw = _raw_header(part, "content-type") or ""
    match = _BOUNDARY.search(raw)
    if not match:
        return None
    boundary = match.group(1) or match.group(2)
    try:
        payload = part.get_payload()
    except Exception:  # noqa: BLE001 - a broken tree is not repairable
        return None
    if not isinstance(payload, str) or f"--{boundary}" not in payload:
        return None
    head = f'Content-Type: {ctype}; boundary="{boundary}"\r\n\r\n'.encode("ascii", "replace")
    repaired = _message_from(head + _to_bytes(payload), _MODERN)
    return repaired if repaired.is_multipart() else None


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
    try:
        value = part.get_param(name, header=header)
    except Exception:  # noqa: BLE001 - broken parameters raise from deep inside email
        return None
    if value is None:
        return None
    try:
        value = email.utils.collapse_rfc2231_value(value)
    except (LookupError, ValueError, TypeError):
        value = value[2] if isinstance(value, tuple) else str(value)
    return str(value)


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:  # noqa: BLE001 - broken Content-Disposition raises from deep inside email
        raw = _raw_header(part, "content-disposition") or ""
        value = raw.split(";", 1)[0].strip().lower() or None
    return value


def _filename(part: Message) -> str | None:
    """Return the decoded filename a part declares, or None."""
    name = None
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - broken RFC 2231 parameters raise from deep inside email
        name = None
    if not name:
        name = _param(part, "name")
    if not name:
        return None
    if isinstance(name, bytes):
        name = decode_bytes(name, "utf-8")
    name = str(name)
    if not name.isascii():
        name = decode_bytes(_to_bytes(name), "utf-8") if _has_surrogates(name) else name
    name = decode_header_text(name)  # many clients put RFC 2047 words in parameters
    return clean_filename(name)


def clean_filename(name: str) -> str | None:
    """Return the last part of a filename with no path, control characters or leading/trailing dots; None if empty.

    A filename is a name, not a path: a path in it is a traversal risk downstream (a mail client
    saving it, the store, the mail that carries it on).
    """
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name or None


def _content_id(part: Message) -> str | None:
    raw = _raw_header(part, "content-id")
    if not raw:
        return None
    value = decode_header_text(raw).strip()
    match = _MSGID_IN_BRACKETS.search(value)
    value = match.group(1) if match else value.strip("<>")
    return value.strip() or None


def _payload_bytes(part: Message, defects: list[str]) -> bytes:
    """Return the transfer-decoded payload of a leaf part."""
    data = _base64_payload(part)
    if data is not None:
        return data
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # noqa: BLE001 - broken transfer encodings raise from deep inside email
        defects.append(f"payload: undecodable ({type(exc).__name__})")
        data = None
    if isinstance(data, bytes):
        return data
    try:
        payload = part.get_payload()
    except Exception:  # noqa: BLE001 - as above
        return b""
    if isinstance(payload, str):
        return _to_bytes(payload) if not payload.isascii() else payload.encode("ascii")
    if isinstance(payload, list):
        return b"".join(_message_bytes(p, defects) for p in payload if isinstance(p, Message))
    return b""


def _base64_payload(part: Message) -> bytes | None:
    """Return a well-formed base64 payload decoded straight from its text, or None to leave it to the email package.

    Its own decoding keeps the text, its bytes and its lines joined again at once: three copies
    of a large attachment before the decoded one.
    """
    if part.get("content-transfer-encoding", "").strip().lower() != "base64":
        return None
    payload = part.get_payload()
    if not isinstance(payload, str) or not payload.isascii():
        return None
    try:
        return binascii.a2b_base64(payload)  # skips the line breaks; bad padding raises
    except (binascii.Error, ValueError):
        return None


def _message_bytes(msg: Message, defects: list[str], linesep: str = "\n") -> bytes:
    """Return the bytes of an embedded message, serialised as close to the original as possible."""
    try:
        headerless = not msg.keys()
        payload = msg.get_payload() if headerless else None
    except Exception:  # noqa: BLE001 - a broken tree is serialised below
        headerless, payload = False, None
    if headerless and isinstance(payload, str):
        # Not a message at all (no header): keep the text as sent, no invented blank line.
        return _to_bytes(payload)
    buffer = io.BytesIO()
    try:
        # compat32 without a line limit writes stored header values back untouched.
        generator_policy = policy.compat32.clone(max_line_length=None, linesep=linesep)
        BytesGenerator(buffer, mangle_from_=False, policy=generator_policy).flatten(msg)
    except Exception as exc:  # noqa: BLE001 - the generator raises many kinds on broken trees
        defects.append(f"embedded message: not serialisable ({type(exc).__name__})")
        try:
            return msg.as_string(policy=policy.compat32).encode("utf-8", "surrogateescape")
        except Exception:  # noqa: BLE001 - as above
            return b""
    return buffer.getvalue()


def _extension(ctype: str) -> str:
    if ctype in _PREFERRED_EXT:
        return _PREFERRED_EXT[ctype]
    guessed = _MIME_TYPES.guess_extension(ctype, strict=False)
    return guessed or (".txt" if ctype.startswith("text/") else ".bin")


def _raw_payload(part: Message) -> bytes:
    try:
        payload = part.get_payload()
    except Exception:  # noqa: BLE001 - a broken tree has no payload
        return b""
    return _to_bytes(payload).strip() if isinstance(payload, str) else b""


def _looks_like_garbage(part: Message, data: bytes) -> bool:
    """Tell whether a text part's base64 was broken badly enough to yield binary noise."""
    broken = any("Base64" in type(d).__name__ for d in getattr(part, "defects", ()))
    if not broken:
        return False
    codec = _codec_for(_param(part, "charset")) or "utf-8"
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return True
    return any(ord(ch) < 32 and ch not in "\t\r\n\f" for ch in text)


@dataclass
class _Alternative:
    """Which body kinds one multipart/alternative group has already given."""

    seen: set[str] = field(default_factory=set)


class _Walker:
    """Collect bodies, attachments and report parts from a MIME tree."""

    def __init__(self, defects: list[str]) -> None:
        self.defects = defects
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedAttachment] = []
        self.report_types: list[str] = []
        self.bounced_ids: list[str] = []
        self.has_delivery_status = False
        self.has_feedback_report = False
        self.parts = 0
        self.root: Message | None = None
        self.linesep = "\n"
        self.pasted_ids: list[str] = []
        self.too_deep = False

    def visit(self, part: Message, depth: int, alternative: _Alternative | None, position: int) -> None:
        self.parts += 1
        if depth > MAX_DEPTH:
            self.too_deep = True
        if depth > MAX_DEPTH or self.parts > MAX_PARTS:
            if _TOO_DEEP not in self.defects:
                self.defects.append(_TOO_DEEP)
            return
        ctype = _content_type(part)
        try:
            is_multipart = part.is_multipart()
        except Exception:  # noqa: BLE001 - a broken tree is treated as a leaf
            is_multipart = False
        if ctype.startswith("multipart/") and not is_multipart:
            repaired = _reparse_multipart(part, ctype)
            if repaired is not None:
                self.defects.append(f"{ctype}: malformed Content-Type repaired")
                self._visit_multipart(repaired, ctype, depth, alternative)
                return
            # No usable boundary: RFC 2046 says to read the content as plain text.
            ctype = "text/plain"
        if ctype.startswith("multipart/") and is_multipart:
            self._visit_multipart(part, ctype, depth, alternative)
        elif ctype in ("message/delivery-status", "message/global-delivery-status"):
            self._visit_delivery_status(part, ctype)
        elif ctype in ("message/rfc822", "message/global") or (is_multipart and ctype.startswith("message/")):
            self._visit_message(part, ctype)
        else:
            self._visit_leaf(part, ctype, alternative, position)

    def _children(self, part: Message) -> list[Message]:
        try:
            payload = part.get_payload()
        except Exception:  # noqa: BLE001 - a broken tree is treated as empty
            return []
        return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []

    def _visit_multipart(self, part: Message, ctype: str, depth: int, alternative: _Alternative | None) -> None:
        children = self._children(part)
        if ctype == "multipart/alternative":
            group = alternative or _Alternative()
            # Senders order alternatives from plainest to richest; the first of each kind wins.
            for index, child in enumerate(children):
                self.visit(child, depth + 1, group, index)
            return
        if ctype == "multipart/report":
            report_type = (_param(part, "report-type") or "").lower()
            self.report_types.append(report_type)
            for index, child in enumerate(children):
                self.visit(child, depth + 1, alternative, index)
            return
        if ctype == "multipart/related":
            start = _param(part, "start")
            root_index = 0
            if start:
                wanted = normalise_message_id(start)
                for index, child in enumerate(children):
                    cid = _content_id(child)
                    if cid and f"<{cid}>" == wanted:
                        root_index = index
                        break
            if children:
                self.visit(children[root_index], depth + 1, alternative, 0)
            for index, child in enumerate(children):
                if index != root_index:
                    # Related resources are never bodies, only things the root refers to.
                    self._visit_resource(child, depth + 1)
            return
        for index, child in enumerate(children):
            self.visit(child, depth + 1, alternative, index)
        for index, child in enumerate(_parts_after_close(part), start=len(children)):
            self.visit(child, depth + 1, alternative, index)

    def _visit_resource(self, part: Message, depth: int) -> None:
        ctype = _content_type(part)
        if ctype.startswith("multipart/") or ctype in ("message/rfc822", "message/global"):
            self.visit(part, depth, None, 1)
            return
        self._add_attachment(part, ctype, _payload_bytes(part, self.defects), inline_default=True)

    def _visit_delivery_status(self, part: Message, ctype: str) -> None:
        """Keep a DSN's status fields as one text attachment, and the original's id if quoted in it."""
        self.has_delivery_status = True
        children = self._children(part)
        if children:
            # The parser splits the fields into per-recipient blocks; they belong together.
            data = b"\n".join(_message_bytes(child, self.defects).strip(b"\r\n") for child in children) + b"\n"
        else:
            data = _payload_bytes(part, self.defects)
        self._collect_bounced_ids_from_text(decode_bytes(data[:65536], "utf-8"))
        self._add_attachment(part, ctype, data)

    def _visit_message(self, part: Message, ctype: str) -> None:
        children = self._children(part)
        if children:
            data = _message_bytes(children[0], self.defects, self.linesep)
            if not self._collect_bounced_id(children[0]):
                self._collect_bounced_ids_from_text(decode_bytes(data[:65536], "utf-8"))
        else:
            data = _payload_bytes(part, self.defects)
            self._collect_bounced_ids_from_text(decode_bytes(data, "utf-8"))
        self._add_attachment(part, "message/rfc822" if ctype == "message/global" else ctype, data)

    def _visit_leaf(self, part: Message, ctype: str, alternative: _Alternative | None, position: int) -> None:
        disposition = _disposition(part)
        filename = _filename(part)
        data = _payload_bytes(part, self.defects)
        if part is not self.root:
            # A MIME part with a Message-ID is a pasted message (some bounces glue the
            # original's header onto a part); remember it in case this is a bounce.
            own_id = _raw_header(part, "message-id")
            if own_id:
                self.pasted_ids.append(own_id)
            if ctype.startswith("text/") and (disposition == "attachment" or filename):
                self.pasted_ids.extend(m.group(1) for m in _QUOTED_MESSAGE_ID.finditer(
                    decode_bytes(data[:65536], "utf-8")))
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.has_delivery_status = True
            self._collect_bounced_ids_from_text(decode_bytes(data[:65536], "utf-8"))
        elif ctype == "message/feedback-report":
            self.has_feedback_report = True
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            self._collect_bounced_ids_from_text(decode_bytes(data, "utf-8"))
        kind = {"text/plain": "plain", "text/html": "html"}.get(ctype)
        is_body = (kind is not None and disposition != "attachment"
                   and (not filename or position == 0 or alternative is not None))
        if is_body and kind and _looks_like_garbage(part, data):
            # Keep what was sent rather than the noise a broken base64 decodes to.
            is_body, data = False, _raw_payload(part)
        if is_body and kind:
            if alternative is not None and kind in alternative.seen:
                return  # a second rendering of the same kind adds nothing
            text = decode_bytes(data, _param(part, "charset"))
            if alternative is not None:
                alternative.seen.add(kind)
            (self.texts if kind == "plain" else self.htmls).append(text)
            return
        if alternative is not None and ctype in ("text/enriched", "text/richtext") and not filename:
            return  # another rendering of the body we already have
        self._add_attachment(part, ctype, data, disposition=disposition, filename=filename)

    def _add_attachment(self, part: Message, ctype: str, data: bytes, *, inline_default: bool = False,
                        disposition: str | None = None, filename: str | None = None) -> None:
        disposition = disposition if disposition is not None else _disposition(part)
        filename = filename or _filename(part)
        if not data and not filename:
            return  # an empty unnamed part carries nothing worth keeping
        content_id = _content_id(part)
        if not filename:
            if ctype.startswith("message/rfc822"):
                filename = "message.eml"
            else:
                filename = f"attachment-{len(self.attachments) + 1}{_extension(ctype)}"
        # Only pictures shown by the HTML are "inline"; a zip with a Content-ID is still a file.
        inline = disposition != "attachment" and (inline_default or (
            content_id is not None and ctype.startswith(("image/", "video/", "audio/"))))
        self.attachments.append(ParsedAttachment(filename=filename, content_type=ctype, data=data,
                                                 content_id=content_id, inline=inline))

    def _collect_bounced_id(self, embedded: Message) -> bool:
        raw = _raw_header(embedded, "message-id")
        if raw:
            self._add_bounced_id(raw)
        return bool(raw)

    def _collect_bounced_ids_from_text(self, text: str) -> None:
        for match in _QUOTED_MESSAGE_ID.finditer(text):
            self._add_bounced_id(match.group(1))

    def _add_bounced_id(self, value: str) -> None:
        normalised = normalise_message_id(decode_header_text(value))
        if normalised and "@" in normalised and normalised not in self.bounced_ids:
            self.bounced_ids.append(normalised)


# ---------------------------------------------------------------------------
# Automatic mail


_AUTO_HEADERS = ("auto-submitted", "precedence", "x-autoreply", "x-autorespond", "list-id", "return-path",
                 "x-auto-response-suppress", "x-autogenerated", "x-failed-recipients", "x-apple-action",
                 "x-loop", "list-unsubscribe", "list-subscribe", "mailing-list", "x-mlserver", "x-ml-name",
                 "feedback-id", "from")


def _classify(mail: ParsedMail, walker: _Walker) -> None:
    """Set auto_submitted, is_bounce and auto_reason from headers, MIME structure and body."""
    headers = mail.headers
    local_part = mail.from_address.split("@", 1)[0]
    raw_from = headers.get("from", "")
    # "MAILER-DAEMON" without a domain is not an address we keep, but it still names the sender.
    from_daemon = bool(_MAILER_DAEMON.match(local_part)) or bool(
        re.search(r"<\s*(mailer-daemon|postmaster)\s*(@[^>]*)?>|^\s*(mailer-daemon|postmaster)\s*$", raw_from,
                  re.I))
    return_path = headers.get("return-path")
    null_sender = (return_path is not None and return_path.strip().strip("<>").strip() == "") or (
        "<>" in raw_from.replace(" ", "") and not mail.from_address)
    machine_sender = from_daemon or null_sender or bool(_NOREPLY.match(local_part))
    sns = _SNS_NOTIFICATION.search(mail.text[:5000]) if "amazonaws.com" in mail.from_address else None

    report_types = walker.report_types
    if "feedback-report" in report_types or walker.has_feedback_report:
        mail.is_bounce = mail.is_complaint = True
        mail.auto_reason = "spam complaint (ARF feedback report)"
    elif "delivery-status" in report_types or walker.has_delivery_status:
        mail.is_bounce = True
        mail.auto_reason = "delivery status notification"
    elif headers.get("x-failed-recipients"):
        mail.is_bounce = True
        mail.auto_reason = "delivery failure (X-Failed-Recipients)"
    elif machine_sender and (_BOUNCE_SUBJECT.search(mail.subject) or _BOUNCE_BODY.search(mail.text[:20000])):
        mail.is_bounce = True
        mail.auto_reason = "delivery failure notice"
    elif sns and sns.group(1) in ("Bounce", "Complaint"):
        # Amazon SES reports relayed through an SNS e-mail subscription: JSON in the body.
        mail.is_bounce = True
        mail.is_complaint = sns.group(1) == "Complaint"
        mail.auto_reason = f"Amazon SES {sns.group(1).lower()} notification"
    elif _COMPLAINT_SUBJECT.match(mail.subject) and any(
            a.content_type == "message/rfc822" for a in mail.attachments):
        # Hotmail's pre-ARF complaint format: the reported mail attached under a fixed subject.
        mail.is_bounce = mail.is_complaint = True
        mail.auto_reason = "spam complaint"

    if mail.is_bounce:
        mail.auto_submitted = True
        return

    auto = headers.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    precedence = headers.get("precedence", "").strip().lower()
    if auto and auto != "no":
        reason = f"Auto-Submitted: {auto}"
    elif "x-autoreply" in headers or "x-autorespond" in headers:
        reason = "X-Autoreply header" if "x-autoreply" in headers else "X-Autorespond header"
    elif headers.get("x-autogenerated", "").strip().lower() == "reply":
        reason = "X-AutoGenerated: reply"
    elif headers.get("x-apple-action", "").strip().lower() == "vacation":
        reason = "X-Apple-Action: vacation"
    elif precedence in ("bulk", "junk", "list", "auto_reply"):
        reason = f"Precedence: {precedence}"
    elif _AUTO_REPLY_SUBJECT.match(mail.subject):
        reason = "auto-reply subject"
    elif sns:
        reason = "Amazon SES notification"
    elif _LIST_MANAGER.match(local_part) and any(name in headers for name in _LIST_HEADERS):
        reason = "mailing-list manager notice"
    elif "disposition-notification" in report_types:
        reason = "read receipt (MDN)"
    elif null_sender:
        reason = "null return path (MAIL FROM:<>)"
    elif from_daemon:
        reason = f"sent by {local_part or 'mailer-daemon'}"
    else:
        return
    mail.auto_submitted = True
    mail.auto_reason = reason


# ---------------------------------------------------------------------------
# Entry point


def parse(raw: bytes) -> ParsedMail:
    """Parse raw mail bytes into a ParsedMail; never raise, record problems in defects."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    try:
        raw = bytes(raw)
    except (TypeError, ValueError):
        return ParsedMail(defects=[f"not bytes: {type(raw).__name__}"])
    try:
        return _parse(raw)
    except Exception as exc:  # noqa: BLE001 - one bad mail must never stop the mailbox
        log.warning("mail parse failed, keeping raw text: %s: %s", type(exc).__name__, exc)
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        return ParsedMail(text=decode_bytes(body or head, "utf-8"), size=len(raw),
                          defects=[f"unparsable mail ({type(exc).__name__}: {exc})"])


def _parse(raw: bytes) -> ParsedMail:
    try:
        return _parse_mail(raw, raw, cut=False)
    except (RecursionError, _TooDeep):
        # Python's email package recurses once per nesting level (parser, generator, walk), so
        # thousands of nested multiparts or embedded messages exhaust the stack somewhere;
        # a tree that parsed but is deeper than the cap is read the same way, cut.
        pass
    log.info("mail nested too deeply for the email package; reading its first %d levels", MAX_DEPTH)
    try:
        return _parse_mail(raw, _cut_nesting(raw), cut=True)
    except RecursionError:
        # Not expected once cut; the top-level headers (sender, subject, ids) are still read.
        return _parse_mail(raw, b"", cut=True)


class _TooDeep(Exception):
    """The mail's MIME tree is deeper than MAX_DEPTH: it is read again, cut at that depth."""


def _deeper_than(msg: Message, limit: int) -> bool:
    """Return whether the tree under `msg` (multiparts and embedded messages) nests deeper than `limit`."""
    stack = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > limit:
            return True
        try:
            payload = part.get_payload()
        except Exception:  # noqa: BLE001 - a broken part has no children to count
            continue
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return False


def _cut_nesting(raw: bytes) -> bytes:
    """Return `raw` cut just before the Content-Type that would open nesting level MAX_DEPTH + 1.

    Everything up to there (the top-level headers, and the texts of the outer levels) parses
    as usual; the parser reports the unclosed boundaries and embedded messages as defects.
    """
    for count, match in enumerate(_NESTING_HEADER.finditer(raw), start=1):
        if count > MAX_DEPTH:
            return raw[:match.start()]
    return raw


def _parse_mail(raw: bytes, body_raw: bytes, *, cut: bool) -> ParsedMail:
    """Parse `raw`; with `cut`, its headers from `raw` alone and its body from the shortened `body_raw`."""
    _MAIL_HEADERS.clear()
    defects: list[str] = []
    parse_policy = _MODERN
    if body_raw.count(b"\n--") > MAX_BOUNDARY_LINES:
        # The modern policy builds header objects for every part, which takes
        # seconds on a mail bomb of tiny parts; compat32 keeps them as strings.
        parse_policy = policy.compat32
        defects.append("too many MIME parts; parsed without modern header objects")
    msg = _message_from(body_raw, parse_policy)
    if not cut and _deeper_than(msg, MAX_DEPTH):
        raise _TooDeep
    top = msg
    if cut:
        # Headers only: the parser keeps the body as one string and does not recurse into it.
        top = BytesParser(policy=parse_policy).parsebytes(raw, headersonly=True)
        defects.append(_TOO_DEEP)
    for defect in getattr(msg, "defects", []):
        defects.append(type(defect).__name__)
    mail = ParsedMail(size=len(raw), defects=defects)
    if not top.keys() and b"\x00" in raw[:1024]:
        # Binary data (an Outlook .msg, a zip) with no header at all is not a mail we can read.
        defects.insert(0, NOT_A_MESSAGE)
        return mail

    mail.message_id = normalise_message_id(_header(top, "message-id", defects) or "")
    mail.in_reply_to = parse_message_id_list(_header(top, "in-reply-to", defects) or "")
    mail.references = parse_message_id_list(_header(top, "references", defects) or "")
    mail.subject = _header(top, "subject", defects) or ""
    senders = _addresses(top, "from", defects) or _addresses(top, "sender", defects)
    if senders:
        mail.from_name, mail.from_address = senders[0]
        if not mail.from_address:
            mail.from_address = next((addr for _, addr in senders if addr), "")
    reply_to = _addresses(top, "reply-to", defects)
    mail.reply_to_address = next((addr for _, addr in reply_to if addr), "")
    mail.to = _addresses(top, "to", defects)
    mail.cc = _addresses(top, "cc", defects)
    mail.date = _date(top, defects)
    for name in _AUTO_HEADERS:
        raw_value = _raw_header(top, name) if name == "from" else None
        if raw_value is not None and _simple_addresses(raw_value) is not None:
            # Plain addresses read as they are: the header parser would only re-render them.
            mail.headers[name] = _fold_whitespace(raw_value)
            continue
        value = _header(top, name, defects)
        if value is not None:
            mail.headers[name] = value

    walker = _Walker(defects)
    walker.root = msg
    walker.linesep = "\r\n" if b"\r\n" in raw[:4096] else "\n"
    walker.visit(msg, 0, None, 0)
    for part in _walk_defects(msg):
        if part not in defects:
            defects.append(part)
    mail.html = "\n".join(walker.htmls) if walker.htmls else None
    if walker.texts:
        mail.text = "\n\n".join(t.rstrip("\n") for t in walker.texts)
    elif mail.html is not None:
        mail.text = html_to_text(mail.html)
    mail.text = mail.text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").rstrip().lstrip("\n")
    if cut or walker.too_deep:
        mail.text = f"{mail.text}\n\n{TOO_DEEP_NOTE}".lstrip("\n")
    mail.attachments = walker.attachments
    _classify(mail, walker)
    if mail.is_bounce:
        if not walker.bounced_ids:
            # Plain-text bounces quote the original headers in the body.
            walker._collect_bounced_ids_from_text(mail.text)
        if not [i for i in walker.bounced_ids if i != mail.message_id]:
            for value in walker.pasted_ids:
                walker._add_bounced_id(value)
        mail.bounced_message_ids = [i for i in walker.bounced_ids if i != mail.message_id]
    return mail


def _walk_defects(msg: Message) -> list[str]:
    """Return the names of the defects the parser found inside parts."""
    found: list[str] = []
    stack = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_DEPTH or len(found) > 50:
            break
        if depth:
            for defect in getattr(part, "defects", []):
                found.append(type(defect).__name__)
        try:
            payload = part.get_payload()
        except Exception:  # noqa: BLE001 - a broken tree has no more defects to report
            continue
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return found
