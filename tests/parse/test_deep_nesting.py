"""Mail nested far deeper than Python's email package can recurse keeps its top-level headers."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from helpdesk.mail.parse import MAX_DEPTH, TOO_DEEP_NOTE, parse

HEAD = (b"From: Ada Lovelace <ada@customer.test>\r\n"
        b"To: help@example.test\r\n"
        b"Subject: Printer on fire\r\n"
        b"Message-ID: <deep@customer.test>\r\n"
        b"Date: Mon, 07 Dec 2026 04:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\n")


def nested_multiparts(levels: int) -> bytes:
    """`levels` multipart/mixed parts, each holding a text part and the next level, all closed properly."""
    opens = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n'
                     b"--b%d\r\nContent-Type: text/plain\r\n\r\nlevel %d\r\n--b%d\r\n" % (i, i, i, i)
                     for i in range(levels))
    closes = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return HEAD + opens + b"Content-Type: text/plain\r\n\r\nbottom" + closes


def nested_messages(levels: int) -> bytes:
    """A text part beside `levels` message/rfc822 parts, each embedding the next."""
    embedded = b"".join(b"Content-Type: message/rfc822\r\n\r\nFrom: level%d@relay.test\r\nSubject: level %d\r\n" % (i, i)
                        for i in range(levels))
    return (HEAD + b'Content-Type: multipart/mixed; boundary="top"\r\n\r\n'
            b"--top\r\nContent-Type: text/plain\r\n\r\nThe printer in room 4 smokes.\r\n"
            b"--top\r\n" + embedded + b"Content-Type: text/plain\r\n\r\nbottom\r\n--top--\r\n")


@pytest.mark.parametrize("raw", [nested_multiparts(5000), nested_messages(2000)], ids=["multipart", "rfc822"])
def test_thousands_of_levels_keep_the_top_level_headers_and_say_what_was_cut(raw: bytes) -> None:
    parsed = parse(raw)
    assert (parsed.from_name, parsed.from_address) == ("Ada Lovelace", "ada@customer.test")
    assert parsed.subject == "Printer on fire"
    assert parsed.message_id == "<deep@customer.test>"
    assert parsed.date == datetime(2026, 12, 7, 4, 0, tzinfo=timezone.utc)
    assert parsed.size == len(raw)
    assert parsed.text.endswith(TOO_DEEP_NOTE)
    assert "bottom" not in parsed.text
    assert not any(d.startswith("unparsable mail") for d in parsed.defects)


def test_the_outer_levels_of_nested_multiparts_are_read() -> None:
    parsed = parse(nested_multiparts(5000))
    levels = [line for line in parsed.text.splitlines() if line.startswith("level ")]
    assert levels[:3] == ["level 0", "level 1", "level 2"]
    assert 20 <= len(levels) <= MAX_DEPTH + 1


def test_the_text_beside_nested_messages_is_read_and_the_embedded_mail_kept() -> None:
    parsed = parse(nested_messages(2000))
    assert parsed.text.startswith("The printer in room 4 smokes.")
    [attachment] = parsed.attachments
    assert attachment.content_type == "message/rfc822"
    assert b"Subject: level 0" in attachment.data


def test_nesting_just_past_the_cap_is_cut_the_same_way() -> None:
    parsed = parse(nested_multiparts(MAX_DEPTH + 5))
    assert parsed.from_address == "ada@customer.test"
    assert parsed.text.startswith("level 0") and parsed.text.endswith(TOO_DEEP_NOTE)


def test_nesting_within_the_cap_is_read_whole_without_a_note() -> None:
    parsed = parse(nested_multiparts(MAX_DEPTH - 10))
    assert parsed.text.endswith("bottom")
    assert TOO_DEEP_NOTE not in parsed.text
    embedded = parse(nested_messages(MAX_DEPTH - 10))
    assert TOO_DEEP_NOTE not in embedded.text
    assert embedded.attachments[0].data.count(b"Subject: level") == MAX_DEPTH - 10
