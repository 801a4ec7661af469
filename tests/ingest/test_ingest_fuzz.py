"""Generated hostile mail through ingest_mail: each one gets exactly one recorded outcome, nothing raises.

Hypothesis builds MIME (multiparts, HTML, attachments, embedded messages, deep nesting), then breaks
it: wrong and unknown charsets, broken boundaries, huge and folded headers, NUL bytes, 8-bit
headers, missing Message-ID/From/Date, parts claiming to be HTML that are not, cut-off mail. Every
mail goes into the same database one after the other, so a mail that left the session broken would
fail the next one.
"""
from __future__ import annotations

import base64
import os
import resource
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpdesk.extensions import db
from helpdesk.models import InboundMail
from helpdesk.services.ingest import ingest_mail

# Ten thousand on the embedded database; the PostgreSQL pass, which repeats every database test, a tenth.
EXAMPLES = 10_000 if os.environ.get("HELPDESK_TEST_DATABASE", "sqlite") == "sqlite" else 1_000
OUTCOMES = {"created", "appended", "ignored", "quarantined", "duplicate"}
CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "koi8-r", "shift_jis", "utf-7", "x-no-such-charset", "",
            "utf-8'' bogus", "us-ascii"]
SEEN = {"mails": 0, "worst_seconds": 0.0}

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
eight_bit = st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
header_value = st.one_of(
    text, eight_bit,
    st.integers(200, 6000).map(lambda n: "word " * (n // 5)),  # huge: folded by nobody
    st.integers(1, 40).map(lambda n: "\r\n ".join(["folded"] * n)),
    st.sampled_from(["=?x-bogus?B?SGVsbG8=?=", "=?utf-8?Q?caf=C3=A9?=", "=?utf-8?B?not base64!?=", "=?", ""]),
)
address = st.one_of(
    st.sampled_from(["jane@customer.test", "Jane Doe <jane@customer.test>", "mailer-daemon@mx.test",
                     "noreply@shop.test", '"Doe, Jane" <jane.doe@customer.test>', "<>", "not an address",
                     "a@b@c", "=?utf-8?B?SsOkbmU=?= <jaene@customer.test>"]),
    st.emails().map(str), header_value)


@st.composite
def body_part(draw, depth: int = 0) -> bytes:
    """One MIME entity, headers and body, possibly multipart with parts of its own."""
    kinds = ["text", "html", "fake_html", "attachment"] + (["multipart", "message"] if depth < 6 else [])
    kind = draw(st.sampled_from(kinds))
    charset = draw(st.sampled_from(CHARSETS))
    words = draw(text)
    if kind == "text":
        encoded = words.encode(charset if charset in ("utf-8", "iso-8859-1") else "utf-8", "replace")
        return b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\n" + encoded + b"\r\n"
    if kind in ("html", "fake_html"):
        markup = (f"<html><body><p>{words}</p><img src='http://tracker.test/p.gif'><script>x()</script>"
                  f"<img src='cid:logo'></body></html>") if kind == "html" else words
        return (b"Content-Type: text/html; charset=" + charset.encode() + b"\r\n\r\n"
                + markup.encode("utf-8", "replace") + b"\r\n")
    if kind == "attachment":
        data = draw(st.binary(max_size=2000))
        name = draw(st.one_of(text, st.sampled_from(["../../etc/passwd", "a\x00b.pdf", "=?utf-8?Q?r=C3=A9sum=C3=A9?=.pdf"])))
        encoded = base64.b64encode(data) if draw(st.booleans()) else data  # sometimes not base64 at all
        return (b"Content-Type: application/octet-stream; name=\"" + name.encode("utf-8", "replace") + b"\"\r\n"
                b"Content-Disposition: attachment\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + encoded + b"\r\n")
    if kind == "message":
        return b"Content-Type: message/rfc822\r\n\r\n" + draw(mail_bytes(depth + 1))
    boundary = draw(st.sampled_from(["b1", "=_x", "", "a" * 200, "b1"]))
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "unknown"]))
    parts = draw(st.lists(body_part(depth + 1), min_size=0, max_size=4))
    closing = draw(st.sampled_from([b"--\r\n", b"\r\n", b""]))  # a missing end boundary too
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part for part in parts)
    return (b"Content-Type: multipart/" + subtype.encode() + b"; boundary=\"" + boundary.encode() + b"\"\r\n\r\n"
            + body + b"--" + boundary.encode() + closing)


@st.composite
def mail_bytes(draw, depth: int = 0) -> bytes:
    """A whole mail: top-level headers (some missing or broken) and a body."""
    headers = []
    for name, value in (("From", address), ("To", address), ("Subject", header_value),
                        ("Message-ID", st.one_of(
                            st.sampled_from(["<UNIQUE@customer.test>", "UNIQUE without brackets", "<again@customer.test>",
                                             "<UNIQUE@customer.test> <second@customer.test>", "<UNIQUE\x00@x>"]),
                            header_value.map(lambda v: f"<UNIQUE{v}>"))),
                        ("Date", st.one_of(st.just("Mon, 07 Dec 2026 10:00:00 +0000"), header_value)),
                        ("Auto-Submitted", st.sampled_from(["auto-replied", "no", "auto-generated"])),
                        ("In-Reply-To", header_value)):
        if draw(st.integers(0, 9)) < (8 if name in ("From", "To", "Subject", "Message-ID", "Date") else 2):
            headers.append(name.encode() + b": " + draw(value).encode("utf-8", "surrogateescape") + b"\r\n")
    return b"".join(headers) + b"MIME-Version: 1.0\r\n" + draw(body_part(depth))


@st.composite
def hostile_mail(draw) -> bytes:
    """A generated mail, then broken on purpose."""
    raw = draw(mail_bytes())
    if draw(st.integers(0, 19)) == 0:  # nested far past the parser's depth cap
        depth = draw(st.integers(40, 120))
        raw = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n" + (b"Content-Type: multipart/mixed; boundary=\"d\"\r\n\r\n--d\r\n" * depth)
    for mutation in draw(st.lists(st.sampled_from(["nul", "cut", "lf", "noise", "boundary"]), max_size=3)):
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if mutation == "nul":
            raw = raw[:at] + b"\x00" + raw[at:]
        elif mutation == "cut":
            raw = raw[:at]
        elif mutation == "lf":
            raw = raw.replace(b"\r\n", b"\n")
        elif mutation == "noise":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=40)) + raw[at:]
        else:
            raw = raw.replace(b"--b1", b"--b2", 1)
    return raw


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if SEEN["mails"]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\ningest fuzz: {int(SEEN['mails'])} generated mails, worst {SEEN['worst_seconds'] * 1000:.0f} ms "
              f"for one mail, test process peak RSS {peak:.0f} MB")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(raw=hostile_mail())
def test_every_generated_mail_gets_exactly_one_outcome_and_the_next_one_goes_through(app, raw):
    before = db.session.scalar(db.select(db.func.count(InboundMail.id)))
    # Each mail a new one, but for the few Message-IDs drawn to repeat: duplicates are a case, not the rule.
    raw = b"X-Fuzz-Mail: %d\r\n" % SEEN["mails"] + raw.replace(b"UNIQUE", b"m%d" % SEEN["mails"])
    started = time.perf_counter()

    result = ingest_mail(raw, channel="fuzz")

    SEEN["worst_seconds"] = max(SEEN["worst_seconds"], time.perf_counter() - started)
    SEEN["mails"] += 1
    assert result.outcome in OUTCOMES, result
    assert result.inbound_id is not None, result.reason
    db.session.expire_all()
    after = db.session.scalar(db.select(db.func.count(InboundMail.id)))
    assert after == before + (0 if result.outcome == "duplicate" else 1), result
    assert db.session.get(InboundMail, result.inbound_id).outcome in OUTCOMES
