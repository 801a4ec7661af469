"""Split a reply into what the customer wrote now and the quoted history and signature below it."""
from __future__ import annotations

import re

# Line kinds: E empty, T text, Q quoted, H start of an embedded mail (attribution line,
# "Original Message" marker, Outlook header block), D delimiter (everything after it goes),
# S a mobile-client signature line.
EMPTY, TEXT, QUOTE, HEADER, DELIMITER, SIGNATURE = "E", "T", "Q", "H", "D", "S"

# Text after a quote shorter than this is read as a signature under the quote, not as an
# interleaved answer.
_MIN_INTERLEAVED_TEXT = 7
_ATTRIBUTION_MAX_LINES = 6
_ATTRIBUTION_MAX_CHARS = 400

_QUOTE = re.compile(r"^\s*([A-Za-z]{1,10})?>")
_DELIMITER = re.compile(r"^\s*([-_=+~\u2014\u1427*#]\s*){2,}$|^\s*\u1427\s*$|^-- ?$")
_FENCE = re.compile(r"^\s*(```|~~~)")

_DATE_HINT = r"(\d{1,4}[-/.:]\d{1,2}|\d{4}|\d{1,2}:\d{2})"
_ATTRIBUTIONS = [
    # English: "On <date>, <name> wrote:", also Outlook Mobile's "---- On ... wrote ----".
    re.compile(r"^[-\s]*On\b.{4,}\bwrote\s*:?[-\s]*$", re.I),
    re.compile(r"^At\b.{4,}\bwrote\s*:\s*$", re.I),
    # "<name> <address> wrote:" with no date.
    re.compile(r"^.{0,200}<?[^\s<>@]+@[^\s<>@]+>?\s*wrote\s*:\s*$", re.I),
    # German: "Am <date> schrieb <name>:", "<name> schrieb am <date>:", "<name> schrieb:".
    re.compile(r"^Am\b.{4,}\bschrieb\b.*:\s*$", re.I),
    re.compile(r"^.{1,200}\bschrieb( am\b.*)?:\s*$", re.I),
    # French, Spanish, Portuguese, Italian.
    re.compile(r"^Le\b.{4,}\ba\s+[ée]crit\s*:\s*$", re.I),
    re.compile(r"^El\b.{4,}\bescribi[óo]\s*:\s*$", re.I),
    re.compile(r"^Em\b.{4,}\bescreveu\s*:\s*$", re.I),
    re.compile(r"^Il\b.{4,}\bha scritto\s*:\s*$", re.I),
    # Dutch: "Op <date> schreef <name> het volgende:", "... heeft <name> het volgende geschreven:".
    re.compile(r"^Op\b.{4,}\b(schreef|geschreven)\b.*:\s*$", re.I),
    # Scandinavian: "Den <date> skrev <name>:", "<date> skrev <name>:".
    re.compile(r"^.{4,}\bskrev\b.*:\s*$", re.I),
    # Polish, Russian, Ukrainian, Czech.
    re.compile(r"^.{4,}\bnapisa[łl](\(a\)|a)?\s*:\s*$", re.I),
    re.compile(r"^.{4,}\s(написал|написала|пише|писал|написав)\s*:\s*$", re.I),
    re.compile(r"^.{4,}\bnapsal(a)?\s*:\s*$", re.I),
    # Chinese, Japanese.
    re.compile(r"^.{4,}(写道|寫道|來信|来信)\s*[:：]\s*$"),
    re.compile(r"^\d{4}年\d{1,2}月\d{1,2}日.{0,200}[:：]\s*$"),
    # Gmail's date-first attribution: "2016-10-24 15:36 GMT+02:00 Name <address>:".
    re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b.{0,200}(GMT[+-]\d|<[^<>\s]+@[^<>\s]+>\s*:?\s*$)", re.I),
]
_OPENER = re.compile(r"^(-+\s*)?(On|Am|Le|El|Em|Il|Op|Den|At|Dnia|W dniu|\d{1,4}[-/. ]|在)\b", re.I)
_MARKER = re.compile(
    r"^[\s*_>-]*(original message|forwarded message|begin forwarded message|ursprüngliche nachricht|"
    r"weitergeleitete nachricht|mensaje original|mensaje reenviado|message d'origine|message transféré|"
    r"messaggio originale|messaggio inoltrato|oorspronkelijk bericht|doorgestuurd bericht|mensagem original|"
    r"mensagem encaminhada|originalmeddelande|vidarebefordrat meddelande|opprinnelig melding|"
    r"oprindelig meddelelse|alkuperäinen viesti|oryginalna wiadomość|исходное сообщение|"
    r"пересылаемое сообщение|原始邮件|原始郵件|転送されたメッセージ|元のメッセージ)\s*:?[\s*_-]*$",
    re.I)
_HEADER_FIELD = re.compile(
    r"^\s*\*?\s*(from|sent|to|cc|bcc|subject|date|reply-to|de|von|gesendet|an|betreff|datum|da|data|a|"
    r"oggetto|risposta|inviato|envoyé|objet|à|date d'envoi|enviado|para|asunto|fecha|enviada|assunto|"
    r"från|skickat|till|ämne|van|verzonden|aan|onderwerp|fra|sendt|til|emne|od|wysłano|wysłane|do|temat|"
    r"от|отправлено|кому|тема|дата|发件人|发送时间|收件人|主题|寄件者|傳送時間|收件者|主旨|差出人|送信日時|宛先|件名)"
    r"\s*\*?\s*[:：]", re.I)
_SENDER_FIELD = re.compile(
    r"^\s*\*?\s*(from|de|von|da|från|van|fra|od|от|发件人|寄件者|差出人)\s*\*?\s*[:：]", re.I)
_SIGNATURES = [
    re.compile(r"^\W*(sent|envoyé|enviado|inviato|verzonden|sendt|skickat|wysłane|gesendet|sent from)\s+"
               r"(from|with|via|by|using|depuis|desde|da|met|vanaf|fra|från|z|von|mit|from my)\b", re.I),
    re.compile(r"^\W*(sent|envoyé|enviado|verzonden|sendt|skickat)\s+\S+\s+(mobile|phone|galaxy|iphone|ipad)\b",
               re.I),
    re.compile(r"^\W*von meinem .{1,60} gesendet\W*$", re.I),
    re.compile(r"^\W*diese nachricht wurde von meinem .{1,80} gesendet\W*$", re.I),
    re.compile(r"^\W*get (\[)?outlook for\b", re.I),
    re.compile(r"^\W*(from|sent from|envoyé de|enviado de) my (iphone|ipad|android|mobile|blackberry|samsung|"
               r"galaxy|phone|smartphone)\b", re.I),
    re.compile(r"^\W*\w+ from (mobile|my phone)\W*$", re.I),
    re.compile(r"^\W*(從我的|从我的|发自我的|來自我的).{0,40}$"),
]
_MAX_SIGNATURE_LENGTH = 120


def _classify(lines: list[str]) -> list[str]:
    """Return one kind letter per line."""
    kinds: list[str] = []
    in_fence = False
    for line in lines:
        stripped = line.strip()
        if _FENCE.match(line):
            in_fence = not in_fence
            kinds.append(TEXT)
            continue
        if in_fence:
            kinds.append(TEXT if stripped else EMPTY)  # code is never quote, marker or delimiter
        elif not stripped:
            kinds.append(EMPTY)
        elif _QUOTE.match(line):
            kinds.append(QUOTE)
        elif _DELIMITER.match(line):
            kinds.append(DELIMITER)
        elif _MARKER.match(stripped) or _is_attribution(stripped):
            kinds.append(HEADER)
        elif len(stripped) <= _MAX_SIGNATURE_LENGTH and any(p.search(stripped) for p in _SIGNATURES):
            kinds.append(SIGNATURE)
        else:
            kinds.append(TEXT)
    _mark_multiline_attributions(lines, kinds)
    _mark_header_blocks(lines, kinds)
    return kinds


def _is_attribution(text: str) -> bool:
    return len(text) <= _ATTRIBUTION_MAX_CHARS and any(p.match(text) for p in _ATTRIBUTIONS)


def _mark_multiline_attributions(lines: list[str], kinds: list[str]) -> None:
    """Mark attributions that mail programs wrapped over several lines ("... <\\naddr> wrote:")."""
    for end in range(len(lines)):
        # Wrapped attributions always end in a colon; demanding it keeps prose like
        # "On this day / I wrote something" out.
        if kinds[end] not in (TEXT, QUOTE, HEADER) or not lines[end].rstrip().endswith((":", "：")):
            continue
        pieces = [_unquote(lines[end])]
        start = end if _is_attribution(pieces[0]) else None
        if start is None:
            # The shortest span that reads as an attribution wins, so text above it stays text.
            for candidate in range(end - 1, max(end - _ATTRIBUTION_MAX_LINES, -1), -1):
                if kinds[candidate] in (DELIMITER, HEADER, QUOTE):
                    break
                if kinds[candidate] == EMPTY:
                    continue
                pieces.insert(0, lines[candidate].strip())
                if _is_attribution(" ".join(pieces)):
                    start = candidate
                    break
        if start is None or (start == end and kinds[end] == QUOTE):
            continue  # no attribution, or a quoted one that the quote handling covers
        # Grow upwards over the opening of a wrapped attribution ("On <date>, Name <").
        candidate = start - 1
        while candidate >= 0 and start > end - _ATTRIBUTION_MAX_LINES:
            if kinds[candidate] == EMPTY:
                candidate -= 1
                continue
            if kinds[candidate] == TEXT and (_OPENER.match(lines[candidate].strip())
                                             or lines[candidate].rstrip().endswith("<")
                                             or lines[start].lstrip().startswith(("<", "mailto:"))):
                start = candidate
                candidate -= 1
                continue
            break
        for index in range(start, end + 1):
            if kinds[index] != EMPTY:
                kinds[index] = HEADER


def _unquote(line: str) -> str:
    return re.sub(r"^\s*>?\s*", "", line).strip()


def _mark_header_blocks(lines: list[str], kinds: list[str]) -> None:
    """Mark Outlook-style quoted header blocks: a From: line with other header fields below it."""
    index = 0
    while index < len(lines):
        if kinds[index] == TEXT and _SENDER_FIELD.match(lines[index]):
            end = index + 1
            fields = 1
            while end < len(lines) and kinds[end] in (TEXT, HEADER) and (
                    _HEADER_FIELD.match(lines[end]) or kinds[end] == HEADER):
                fields += 1
                end += 1
            if fields >= 3 or (fields >= 2 and index > 0 and kinds[index - 1] == HEADER):
                for block in range(index, end):
                    kinds[block] = HEADER
            index = end
        else:
            index += 1


def _is_interleaved(kinds: list[str], start: int) -> bool:
    """Tell whether the quote after position start is answered inline (quote, answer, quote...)."""
    rest = "".join(kinds[start:])
    if QUOTE not in rest:
        return False
    # Text between two quote blocks: an inline answer.
    if re.search(r"Q[ES]*T[^Q]*Q", rest):
        return True
    last_quote = rest.rfind(QUOTE)
    trailing_text = rest[last_quote:].count(TEXT)
    first_quote = rest.find(QUOTE)
    return trailing_text >= _MIN_INTERLEAVED_TEXT and TEXT not in rest[:first_quote]


def trim_reply(text: str) -> tuple[str, str]:
    """Return (visible, elided): the new part of a reply, and the quoted history and signature cut from it."""
    if not text or not text.strip():
        return "", ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kinds = _classify(lines)
    keep = [True] * len(lines)

    def drop(start: int, end: int) -> None:
        for index in range(start, end):
            keep[index] = False

    # Everything after a delimiter ("-- ", "____", "-----") is signature or history.
    for index, kind in enumerate(kinds):
        if kind == DELIMITER:
            drop(index, len(lines))
            break
    for index, kind in enumerate(kinds):
        if kind == SIGNATURE:
            keep[index] = False

    # A reply that starts with an attribution or forward marker: the new text is below it.
    first = next((i for i, k in enumerate(kinds) if k != EMPTY and keep[i]), None)
    if first is not None and kinds[first] == HEADER:
        end = first
        while end < len(lines) and kinds[end] == HEADER:
            end += 1
        if any(_HEADER_FIELD.match(lines[i]) for i in range(first, end)):
            # A forwarded header block runs until the first blank line (Subject: may wrap).
            while end < len(lines) and kinds[end] != EMPTY:
                end += 1
        drop(first, end)
        after = end
        while after < len(lines) and kinds[after] == EMPTY:
            after += 1
        quote_end = after
        while quote_end < len(lines) and kinds[quote_end] in (QUOTE, EMPTY):
            quote_end += 1
        if quote_end > after and TEXT in kinds[quote_end:]:
            drop(after, quote_end)  # bottom-posting: the quoted mail sits above the answer

    # The first embedded mail under some text: cut it, unless the quote is answered inline.
    seen_text = False
    for index, kind in enumerate(kinds):
        if not keep[index]:
            continue
        if kind == TEXT:
            seen_text = True
        elif kind == HEADER and seen_text:
            if _is_interleaved([k if keep[i] else EMPTY for i, k in enumerate(kinds)], index):
                keep[index] = False
                continue
            drop(index, len(lines))
            break

    # A quote that ends the mail below the answer is history.
    kept = [i for i in range(len(lines)) if keep[i]]
    tail = len(kept)
    while tail and kinds[kept[tail - 1]] in (EMPTY, QUOTE, HEADER):
        tail -= 1
    if tail and any(kinds[i] == QUOTE for i in kept[tail:]):
        for index in kept[tail:]:
            keep[index] = False

    visible = "\n".join(line for line, kept_line in zip(lines, keep) if kept_line).strip()
    elided = "\n".join(line for line, kept_line in zip(lines, keep) if not kept_line).strip()
    if not any(keep[i] and kinds[i] == TEXT for i in range(len(lines))):
        # Nothing new was found: better show all of it than an empty or quote-only comment.
        return text.strip(), ""
    return visible, elided
