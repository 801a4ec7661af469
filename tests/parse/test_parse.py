"""parse() on hand-made mails: encodings, structure, automatic mail, and input of any shape."""
from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpdesk.mail.parse import NOT_A_MESSAGE, ParsedMail, decode_bytes, normalise_message_id, parse, parse_message_id_list


def mail(*header_lines: str, body: str | bytes = "Hello\n") -> bytes:
    """Return raw mail bytes from header lines and a body, with CRLF line ends as on the wire."""
    head = "\r\n".join(header_lines).encode("utf-8") + b"\r\n\r\n"
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------------------
# headers


def test_rfc2047_subject_and_names_are_decoded() -> None:
    parsed = parse(mail(
        "From: =?ISO-8859-1?Q?Andr=E9_Pirard?= <PIRARD@vm1.ulg.ac.be>",
        "To: =?UTF-8?B?SsO8cmdlbg==?= <jurgen@example.com>, \"Doe, Jane\" <JANE@Example.com>",
        "Cc: Team: a@example.com, b@example.com;",
        "Subject: =?UTF-8?Q?Die_Hasen_und_die_Fr=C3=B6sche?=\r\n =?utf-8?b?IOKCrA==?=  please",
        "Message-ID: <abc@example.com>",
    ))
    assert parsed.subject == "Die Hasen und die Frösche € please"
    assert (parsed.from_name, parsed.from_address) == ("André Pirard", "pirard@vm1.ulg.ac.be")
    assert parsed.to == [("Jürgen", "jurgen@example.com"), ("Doe, Jane", "jane@example.com")]
    assert parsed.cc == [("", "a@example.com"), ("", "b@example.com")]
    assert parsed.message_id == "<abc@example.com>"


def test_multibyte_character_split_across_encoded_words() -> None:
    # "日本" in UTF-8 is e6 97 a5 e6 9c ac; the sender split it mid-character.
    parsed = parse(mail("Subject: =?utf-8?q?=E6=97?= =?utf-8?q?=A5=E6=9C=AC?=", "From: a@example.com"))
    assert parsed.subject == "日本"


def test_raw_8bit_latin1_header_is_decoded() -> None:
    raw = b"From: J\xfcrgen <j@example.com>\r\nSubject: Die Fr\xf6sche\r\n\r\nbody\r\n"
    parsed = parse(raw)
    assert parsed.subject == "Die Frösche"
    assert parsed.from_name == "Jürgen"


def test_raw_utf8_header_is_decoded() -> None:
    raw = "From: Jürgen <j@example.com>\r\nSubject: Grüße\r\n\r\nbody\r\n".encode()
    parsed = parse(raw)
    assert (parsed.subject, parsed.from_name) == ("Grüße", "Jürgen")


def test_unknown_charset_in_encoded_word_falls_back() -> None:
    parsed = parse(mail("Subject: =?x-unknown?q?caf=C3=A9?= =?utf8?q?ol=C3=A9?="))
    assert parsed.subject == "caféolé"


def test_missing_headers_give_empty_values() -> None:
    parsed = parse(b"\r\njust a body\r\n")
    assert parsed.subject == ""
    assert (parsed.from_name, parsed.from_address, parsed.reply_to_address) == ("", "", "")
    assert parsed.message_id is None and parsed.date is None
    assert parsed.to == [] and parsed.cc == [] and parsed.in_reply_to == [] and parsed.references == []
    assert parsed.text == "just a body"


@pytest.mark.parametrize("value", [
    "a@example.com", "<A@Example.com>", "Jane Doe <jane@example.com>", '"Doe, Jane" <jane@example.com>, b@example.com',
    "Jane\r\n Doe <jane@example.com>", '"" <x@example.com>', "a@example.com,", "alice@example.com <bob@example.com>",
    "Team: a@example.com, b@example.com;", "a@example.com (Alice)", "=?utf-8?q?J=C3=BCrgen?= <j@example.com>",
])
def test_plain_address_lists_read_as_the_header_parser_reads_them(value: str, monkeypatch) -> None:
    import helpdesk.mail.parse as parse_module

    raw = mail(f"From: {value}", f"To: {value}", f"Cc: {value}")
    quick = parse(raw)
    monkeypatch.setattr(parse_module, "_simple_addresses", lambda raw: None)
    full = parse(raw)
    assert (quick.from_name, quick.from_address, quick.to, quick.cc) == (full.from_name, full.from_address, full.to, full.cc)


def test_sender_without_domain_keeps_the_name_only() -> None:
    parsed = parse(mail("From: Mail Delivery Subsystem <MAILER-DAEMON>"))
    assert (parsed.from_name, parsed.from_address) == ("Mail Delivery Subsystem", "")
    assert parse(mail("From: Whomever")).from_name == "Whomever"


def test_reply_to_and_threading_headers() -> None:
    parsed = parse(mail(
        "From: a@example.com",
        "Reply-To: Support Team <Help@Example.com>",
        "In-Reply-To: <one@example.com> (some comment)",
        "References: <zero@example.com>\r\n <one@example.com> <zero@example.com>",
    ))
    assert parsed.reply_to_address == "help@example.com"
    assert parsed.in_reply_to == ["<one@example.com>"]
    assert parsed.references == ["<zero@example.com>", "<one@example.com>"]


def test_dates_are_timezone_aware() -> None:
    parsed = parse(mail("Date: Thu, 29 Apr 2010 23:34:45 +0900"))
    assert parsed.date == datetime(2010, 4, 29, 23, 34, 45, tzinfo=timezone(timedelta(hours=9)))
    unknown_zone = parse(mail("Date: Thu, 29 Apr 2010 23:34:45 -0000")).date
    assert unknown_zone is not None and unknown_zone.utcoffset() == timedelta(0)
    broken = parse(mail("Date: the day after tomorrow"))
    assert broken.date is None
    assert any("date" in defect for defect in broken.defects)


def test_headers_dict_keeps_the_automatic_mail_headers() -> None:
    parsed = parse(mail("Auto-Submitted: auto-replied", "Precedence: bulk", "X-Autoreply: yes",
                        "X-Autorespond: yes", "List-Id: <list.example.com>", "Return-Path: <>"))
    for name, value in {"auto-submitted": "auto-replied", "precedence": "bulk", "x-autoreply": "yes",
                        "x-autorespond": "yes", "list-id": "<list.example.com>", "return-path": "<>"}.items():
        assert parsed.headers[name] == value


def test_message_id_helpers() -> None:
    assert normalise_message_id(" <abc@example.com> ") == "<abc@example.com>"
    assert normalise_message_id("abc@example.com") == "<abc@example.com>"
    assert normalise_message_id("<a b@example.com>") == "<ab@example.com>"  # folding whitespace is dropped
    assert normalise_message_id("<ab\r\n c@example.com>") == "<abc@example.com>"
    assert normalise_message_id("") is None
    assert normalise_message_id("<>") is None
    assert parse_message_id_list("<a@x> <b@y>\r\n\t<a@x>") == ["<a@x>", "<b@y>"]
    assert parse_message_id_list("a@x, b@y") == ["<a@x>", "<b@y>"]
    assert parse_message_id_list("no ids here") == []


# ---------------------------------------------------------------------------
# bodies and charsets


def test_alternative_gives_text_and_raw_html() -> None:
    raw = mail(
        "From: a@example.com", "MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="alt"',
        body=(
            "--alt\nContent-Type: text/plain; charset=utf-8\n\nplain version\n"
            "--alt\nContent-Type: text/html; charset=utf-8\n\n<p onclick=x>html <b>version</b></p>\n"
            "--alt--\n"
        ),
    )
    parsed = parse(raw)
    assert parsed.text == "plain version"
    assert parsed.html is not None and "<p onclick=x>" in parsed.html  # unsanitised by design
    assert parsed.attachments == []


def test_html_only_mail_gets_text_from_html() -> None:
    parsed = parse(mail("Content-Type: text/html; charset=utf-8",
                        body="<html><head><style>p{}</style></head><body><p>Hi&nbsp;there</p><ul><li>one</li>"
                             "</ul></body></html>"))
    assert parsed.text == "Hi there\n\n- one"


@pytest.mark.parametrize("declared, payload, expected", [
    ("us-ascii", "Grüße".encode(), "Grüße"),  # UTF-8 labelled ASCII
    ("iso-8859-1", "Grüße".encode(), "Grüße"),  # UTF-8 labelled Latin-1
    ("utf-8", "Grüße".encode("latin-1"), "Grüße"),  # Latin-1 labelled UTF-8
    ("unknown-8bit", "Grüße".encode(), "Grüße"),
    ("x-user-defined", "Grüße".encode("cp1252"), "Grüße"),
    ("utf8", "Grüße".encode(), "Grüße"),
    ("windows-1252", "“quoted” – €".encode("cp1252"), "“quoted” – €"),
    ("iso-2022-jp", "日本語".encode("iso2022_jp"), "日本語"),
    ("gb2312", "中文".encode("gb18030"), "中文"),
])
def test_body_charsets_including_lies(declared: str, payload: bytes, expected: str) -> None:
    raw = mail(f'Content-Type: text/plain; charset="{declared}"', "Content-Transfer-Encoding: 8bit",
               body=payload + b"\n")
    assert parse(raw).text == expected


def test_decode_bytes_never_fails() -> None:
    assert decode_bytes(b"\x81\x8d\x8f", "utf-8") == "\x81\x8d\x8f"
    assert decode_bytes(b"abc", "no-such-charset") == "abc"


def test_inline_text_parts_in_mixed_are_joined() -> None:
    raw = mail('Content-Type: multipart/mixed; boundary="m"', body=(
        "--m\nContent-Type: text/plain\n\nfirst part\n"
        "--m\nContent-Type: image/png\nContent-Disposition: inline\nContent-Transfer-Encoding: base64\n\n"
        "iVBORw0KGgo=\n"
        "--m\nContent-Type: text/plain\n\nsecond part\n--m--\n"))
    parsed = parse(raw)
    assert parsed.text == "first part\n\nsecond part"
    assert [a.content_type for a in parsed.attachments] == ["image/png"]


# ---------------------------------------------------------------------------
# attachments


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_rfc2231_and_rfc2047_filenames() -> None:
    png64 = base64.b64encode(PNG).decode()
    raw = mail('Content-Type: multipart/mixed; boundary="m"', body=(
        "--m\nContent-Type: text/plain\n\nsee attached\n"
        "--m\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0=\n"
        "--m\nContent-Type: image/png; name=\"=?utf-8?q?Gr=C3=BC=C3=9Fe.png?=\"\n"
        "Content-Disposition: attachment\nContent-Transfer-Encoding: base64\n\n" + png64 + "\n"
        "--m\nContent-Type: text/plain\nContent-Disposition: attachment;\n"
        " filename*0*=iso-8859-1''Die%20Fr%F6;\n filename*1*=sche.txt\n\nfrogs\n"
        "--m\nContent-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename=\"..\\\\..\\\\windows\\\\evil.exe\"\n\nMZ\n"
        "--m--\n"))
    parsed = parse(raw)
    assert parsed.text == "see attached"
    names = [a.filename for a in parsed.attachments]
    assert names == ["€ rates.pdf", "Grüße.png", "Die Frösche.txt", "evil.exe"]
    png = parsed.attachments[1]
    assert png.data == PNG and png.size == len(PNG) and png.sha256 == hashlib.sha256(PNG).hexdigest()
    assert png.content_type == "image/png" and not png.inline and png.content_id is None


def test_unnamed_attachment_gets_a_name_from_its_type() -> None:
    raw = mail('Content-Type: multipart/mixed; boundary="m"', body=(
        "--m\nContent-Type: text/plain\n\nbody\n"
        "--m\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n"
        "--m\nContent-Type: application/x-nobody-knows\n\nzz\n--m--\n"))
    parsed = parse(raw)
    assert [a.filename for a in parsed.attachments] == ["attachment-1.pdf", "attachment-2.bin"]


def test_inline_cid_image_in_related() -> None:
    png64 = base64.b64encode(PNG).decode()
    raw = mail('Content-Type: multipart/related; boundary="r"; type="text/html"', body=(
        "--r\nContent-Type: text/html; charset=utf-8\n\n<p>Logo: <img src=\"cid:logo@example.com\"></p>\n"
        "--r\nContent-Type: image/png\nContent-ID: <logo@example.com>\nContent-Transfer-Encoding: base64\n\n"
        + png64 + "\n--r--\n"))
    parsed = parse(raw)
    assert parsed.html is not None and "cid:logo@example.com" in parsed.html
    assert parsed.text == "Logo:"
    [image] = parsed.attachments
    assert (image.content_id, image.inline, image.data) == ("logo@example.com", True, PNG)
    assert image.filename == "attachment-1.png"


def test_attached_message_is_an_attachment_not_body() -> None:
    inner = "From: inner@example.com\nSubject: the original\nMessage-ID: <inner@example.com>\n\ninner body\n"
    raw = mail("From: outer@example.com", "Subject: fwd", 'Content-Type: multipart/mixed; boundary="m"', body=(
        "--m\nContent-Type: text/plain\n\nsee below\n"
        "--m\nContent-Type: message/rfc822\n\n" + inner + "--m--\n"))
    parsed = parse(raw)
    assert parsed.subject == "fwd"
    assert parsed.text == "see below"
    [attached] = parsed.attachments
    assert (attached.filename, attached.content_type) == ("message.eml", "message/rfc822")
    assert b"Subject: the original" in attached.data and b"inner body" in attached.data
    assert parse(attached.data).subject == "the original"
    assert parsed.bounced_message_ids == []  # a forward is not a bounce
    assert not parsed.is_bounce and not parsed.auto_submitted


def test_missing_semicolon_before_boundary_is_repaired() -> None:
    raw = mail("Subject: glued", "Content-Type: multipart/mixed\r\n\tboundary=\"b\"", body=(
        "--b\nContent-Type: text/plain\n\nhello\n"
        "--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode(PNG).decode() + "\n--b--\n"))
    parsed = parse(raw)
    assert parsed.text == "hello"
    assert [a.data for a in parsed.attachments] == [PNG]


def test_parts_after_a_premature_close_are_recovered() -> None:
    # The nested alternative reuses the outer boundary, so its close delimiter ends the outer part too.
    raw = mail('Content-Type: multipart/mixed; boundary="b"', body=(
        '--b\nContent-Type: multipart/alternative; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nplain\n--b\nContent-Type: text/html\n\n<p>html</p>\n--b--\n\n"
        "--b\nContent-Type: application/zip; name=\"report.zip\"\nContent-ID: <z@x>\n"
        "Content-Transfer-Encoding: base64\n\nUEsDBA==\n--b--\n"))
    parsed = parse(raw)
    assert parsed.text == "plain"
    [archive] = parsed.attachments
    assert (archive.filename, archive.data, archive.content_id, archive.inline) == (
        "report.zip", b"PK\x03\x04", "z@x", False)


def test_binary_data_is_not_a_message() -> None:
    parsed = parse(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + b"R\x00o\x00o\x00t")
    assert parsed.defects[0] == NOT_A_MESSAGE
    assert parsed.text == "" and parsed.subject == "" and parsed.attachments == []


# ---------------------------------------------------------------------------
# automatic mail


DSN = (
    "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>",
    "To: support@example.com",
    "Subject: Undelivered Mail Returned to Sender",
    "Message-ID: <dsn-1@mx.example.net>",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="r"',
)
DSN_BODY = (
    "--r\nContent-Type: text/plain\n\nI'm sorry to have to inform you that your message could not be delivered.\n"
    "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
    "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
    "--r\nContent-Type: {kind}\n\nFrom: support@example.com\nTo: gone@example.org\n"
    "Subject: Re: your ticket\nMessage-ID: <ticket-42-reply@helpdesk.example.com>\n\n{body}"
    "--r--\n"
)


@pytest.mark.parametrize("kind, body", [("message/rfc822", "original text\n"), ("text/rfc822-headers", "")])
def test_dsn_is_a_bounce_naming_the_original(kind: str, body: str) -> None:
    parsed = parse(mail(*DSN, body=DSN_BODY.format(kind=kind, body=body)))
    assert parsed.is_bounce and parsed.auto_submitted and not parsed.is_complaint
    assert parsed.auto_reason == "delivery status notification"
    assert parsed.bounced_message_ids == ["<ticket-42-reply@helpdesk.example.com>"]
    assert parsed.text.startswith("I'm sorry")


def test_plain_text_bounce_from_mailer_daemon() -> None:
    parsed = parse(mail(
        "From: MAILER-DAEMON@mx.example.net", "Subject: failure notice", "Message-ID: <b@mx.example.net>",
        body=("Hi. This is the qmail-send program. I'm afraid I wasn't able to deliver your message.\n\n"
              "<gone@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
              "--- Below this line is a copy of the message.\n\nFrom: support@example.com\n"
              "Message-ID: <outbound-7@helpdesk.example.com>\nSubject: hello\n\nhello\n")))
    assert parsed.is_bounce and parsed.auto_reason == "delivery failure notice"
    assert parsed.bounced_message_ids == ["<outbound-7@helpdesk.example.com>"]


def test_arf_complaint() -> None:
    parsed = parse(mail(
        "From: abuse@mail.example.org", "Subject: FW: spam", "Message-ID: <arf@example.org>",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="f"',
        body=("--f\nContent-Type: text/plain\n\nThis is an abuse report.\n"
              "--f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\n"
              "--f\nContent-Type: message/rfc822\n\nFrom: news@example.com\nMessage-ID: <news-1@example.com>\n\nbuy\n"
              "--f--\n")))
    assert parsed.is_bounce and parsed.is_complaint and parsed.auto_submitted
    assert parsed.bounced_message_ids == ["<news-1@example.com>"]


@pytest.mark.parametrize("headers, reason", [
    (("Auto-Submitted: auto-replied",), "Auto-Submitted: auto-replied"),
    (("Auto-Submitted: Auto-Generated (failure)",), "Auto-Submitted: auto-generated (failure)"),
    (("X-Autoreply: yes",), "X-Autoreply header"),
    (("X-Autorespond: Out of office",), "X-Autorespond header"),
    (("Precedence: bulk",), "Precedence: bulk"),
    (("Precedence: junk",), "Precedence: junk"),
    (("Precedence: list", "List-Id: <l.example.com>"), "Precedence: list"),
    (("Return-Path: <>",), "null return path (MAIL FROM:<>)"),
    (("Subject: Automatic reply: your question",), "auto-reply subject"),
])
def test_auto_replies_are_flagged(headers: tuple[str, ...], reason: str) -> None:
    parsed = parse(mail("From: someone@example.com", *headers))
    assert parsed.auto_submitted and not parsed.is_bounce
    assert parsed.auto_reason == reason


@pytest.mark.parametrize("headers", [
    ("Auto-Submitted: no",),
    ("List-Id: <customers.example.com>",),
    ("X-Auto-Response-Suppress: OOF, AutoReply",),  # Outlook asks others not to auto-reply; it is no auto-reply
    ("Subject: Re: auto reply settings broken",),
    ("Return-Path: <someone@example.com>",),
])
def test_people_are_not_flagged(headers: tuple[str, ...]) -> None:
    parsed = parse(mail("From: someone@example.com", *headers))
    assert not parsed.auto_submitted and not parsed.is_bounce and parsed.auto_reason is None


# ---------------------------------------------------------------------------
# input of any shape


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00" * 64,
    bytes(range(256)) * 40,
    b"Subject: only a header",
    b"\r\n\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\n--x\r\n--x--",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary anywhere",
    b"Content-Type: text/plain; charset=\"\xff\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64",
    b"From: \"unterminated <a@b\r\nTo: <<<@>>>, ,\r\nDate: 99 Foo 99999\r\nMessage-ID: <<>>\r\n\r\nx",
    b"Content-Type: message/rfc822\r\n\r\nnot a message at all",
    b"Content-Type: text/plain; name*0*=bogus''%ZZ\r\nContent-Disposition: attachment; filename*=''\r\n\r\nx",
])
def test_odd_input_never_raises(raw: bytes) -> None:
    parsed = parse(raw)
    assert isinstance(parsed, ParsedMail)
    assert parsed.size == len(raw)


def test_deep_nesting_is_cut_not_fatal() -> None:
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                      for i in range(300))
    parsed = parse(b"Subject: deep\r\n" + nested + b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    assert isinstance(parsed, ParsedMail)
    assert parsed.defects


def test_mail_bomb_of_tiny_parts_still_parses() -> None:
    parts = b"".join(b"--x\r\nContent-Type: application/octet-stream\r\n\r\nabc\r\n" for _ in range(6000))
    parsed = parse(b"Subject: =?utf-8?q?bomb_=E2=80=93?=\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n"
                   + parts + b"--x--\r\n")
    assert parsed.subject == "bomb –"
    assert 0 < len(parsed.attachments) < 6000
    assert any("too many" in defect for defect in parsed.defects)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert parse(raw).size == len(raw)


_TEMPLATE = mail(*DSN, body=DSN_BODY.format(kind="message/rfc822", body="x\n"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_TEMPLATE) - 1), st.binary(min_size=0, max_size=8)), max_size=8))
def test_mutated_mail_never_raises(edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(_TEMPLATE)
    for position, replacement in edits:
        raw[position:position + len(replacement)] = replacement
    assert parse(bytes(raw)).size == len(raw)
