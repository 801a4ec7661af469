"""compose(): the message as a mail client reads it back, and headers nobody can inject into."""
from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.mail.compose import OutgoingMail, compose, is_automatic_recipient_blocked
from helpdesk.mail.smtp import SmtpSession

LONG_ID = "<" + "a1b2c3d4" * 12 + "@mail.customer.test>"


def mail(**overrides) -> OutgoingMail:
    values = dict(
        to=["customer@customer.test"],
        subject="Re: Printer on fire [#42]",
        text="We are on it.\n",
        from_address="support@helpdesk.test",
        message_id="<ticket-42-reply-1@helpdesk.test>",
    )
    values.update(overrides)
    return OutgoingMail(**values)


def parsed(msg) -> email.message.EmailMessage:
    """Serialise as sent over SMTP and parse back like a receiving mail client."""
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)


def text_of(part) -> str:
    """Return a text part's content with line ends as Python writes them (MIME sends CRLF)."""
    return part.get_content().replace("\r\n", "\n")


def test_basic_headers():
    back = parsed(compose(mail(cc=["boss@customer.test", "it@customer.test"])))

    assert back["From"] == "support@helpdesk.test"
    assert back["To"] == "customer@customer.test"
    assert back["Cc"] == "boss@customer.test, it@customer.test"
    assert back["Subject"] == "Re: Printer on fire [#42]"
    assert back["Message-ID"] == "<ticket-42-reply-1@helpdesk.test>"
    assert back["Date"].datetime.tzinfo is not None
    assert back["In-Reply-To"] is None
    assert back["References"] is None
    assert back["Auto-Submitted"] is None
    assert back["X-Auto-Response-Suppress"] is None


def test_threading_headers_survive_even_with_long_ids():
    refs = ["<first@customer.test>", LONG_ID, "<third-" + "x" * 70 + "@helpdesk.test>"]
    raw = compose(mail(in_reply_to=LONG_ID, references=refs)).as_bytes()
    back = email.message_from_bytes(raw, policy=email.policy.default)

    assert back["In-Reply-To"] == LONG_ID
    assert back["References"].split() == refs
    assert b"=?" not in raw  # never RFC 2047-encoded: clients would not match the ids
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_message_ids_get_angle_brackets_and_malformed_references_are_left_out():
    back = parsed(compose(mail(
        message_id="plain-id@helpdesk.test",
        in_reply_to="not a message id",
        references=["<ok@customer.test>", "", "<a b@c>", "bare@customer.test"],
    )))

    assert back["Message-ID"] == "<plain-id@helpdesk.test>"
    assert back["In-Reply-To"] is None
    assert back["References"] == "<ok@customer.test> <bare@customer.test>"


def test_auto_submitted_headers():
    back = parsed(compose(mail(auto_submitted=True)))

    assert back["Auto-Submitted"] == "auto-generated"
    assert back["X-Auto-Response-Suppress"] == "All"


def test_text_only_is_a_single_text_part():
    back = parsed(compose(mail(text="Grüße, ✓\n")))

    assert back.get_content_type() == "text/plain"
    assert not back.is_multipart()
    assert text_of(back) == "Grüße, ✓\n"


def test_text_and_html_are_alternatives():
    back = parsed(compose(mail(html="<p>We are <b>on it</b>.</p>")))

    assert back.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in back.iter_parts()] == ["text/plain", "text/html"]
    assert text_of(back.get_body(("html",))) == "<p>We are <b>on it</b>.</p>\n"
    assert text_of(back.get_body(("plain",))) == "We are on it.\n"


def test_attachments_make_a_mixed_message():
    pdf = b"%PDF-1.4\x00\xff binary"
    back = parsed(compose(mail(
        html="<p>See attached.</p>",
        attachments=[("Rechnung März.pdf", "application/pdf", pdf),
                     ("log.txt", "text/plain", b"line 1\nline 2\n"),
                     ("weird", "no slash here", b"data")],
    )))

    assert back.get_content_type() == "multipart/mixed"
    parts = list(back.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "multipart/alternative", "application/pdf", "text/plain", "application/octet-stream"]
    attachments = list(back.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["Rechnung März.pdf", "log.txt", "weird"]
    assert attachments[0].get_content() == pdf
    assert attachments[1].get_payload(decode=True) == b"line 1\nline 2\n"
    assert text_of(back.get_body(("plain",))) == "We are on it.\n"


def test_display_name_is_encoded_and_quoted():
    msg = compose(mail(from_name='Süpport, Team "Blue"'))
    raw = msg.as_bytes()
    back = parsed(msg)

    assert raw.isascii()
    assert back["From"].addresses[0].display_name == 'Süpport, Team "Blue"'
    assert back["From"].addresses[0].addr_spec == "support@helpdesk.test"


def test_extra_headers_are_added():
    back = parsed(compose(mail(headers={"X-Helpdesk-Ticket": "42", "Reply-To": "support+t42@helpdesk.test"})))

    assert back["X-Helpdesk-Ticket"] == "42"
    assert back["Reply-To"] == "support+t42@helpdesk.test"


@pytest.mark.parametrize("field", ["subject", "from_name"])
def test_line_breaks_in_free_text_cannot_inject_headers(field):
    back = parsed(compose(mail(**{field: "Hello\r\nBcc: victim@evil.test\nX-Evil: yes"})))

    assert back["Bcc"] is None
    assert back["X-Evil"] is None
    assert "victim@evil.test" not in back["To"]


def test_line_breaks_in_extra_header_values_cannot_inject_headers():
    back = parsed(compose(mail(headers={"X-Helpdesk-Ticket": "42\r\nBcc: victim@evil.test"})))

    assert back["X-Helpdesk-Ticket"] == "42 Bcc: victim@evil.test"
    assert back["Bcc"] is None


def test_line_breaks_in_attachment_names_cannot_inject_headers():
    back = parsed(compose(mail(attachments=[("a.txt\r\nBcc: victim@evil.test", "text/plain", b"x")])))

    assert back["Bcc"] is None
    assert all(p["Bcc"] is None for p in back.walk())


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": ["customer@customer.test\r\nBcc: victim@evil.test"]},
        {"cc": ["boss@customer.test\nBcc: victim@evil.test"]},
        {"from_address": "support@helpdesk.test\r\nBcc: victim@evil.test"},
        {"message_id": "<id@helpdesk.test>\r\nBcc: victim@evil.test"},
        {"headers": {"X-Evil\r\nBcc": "victim@evil.test"}},
        {"headers": {"Bcc": "victim@evil.test"}},
        {"headers": {"to": "victim@evil.test"}},
        {"to": ["Customer <customer@customer.test>"]},
        {"to": ["one@customer.test, two@customer.test"]},
    ],
)
def test_structural_fields_with_line_breaks_or_lists_are_rejected(overrides):
    with pytest.raises(ValueError):
        compose(mail(**overrides))


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(alphabet=st.sampled_from("ab :\r\n\t\x0b\x0c\x85\u2028\u2029ü"), max_size=40),
    name=st.text(alphabet=st.sampled_from("ab :,\"<>@\r\nü"), max_size=30),
    value=st.text(alphabet=st.sampled_from("ab :\r\n\u2028"), max_size=30),
)
def test_no_text_can_add_a_header(subject, name, value):
    msg = compose(mail(subject=subject, from_name=name, headers={"X-Note": value},
                       auto_submitted=True))
    back = parsed(msg)

    assert sorted(back.keys()) == sorted([
        "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
        "X-Auto-Response-Suppress", "X-Note", "Content-Type", "Content-Transfer-Encoding",
        "MIME-Version",
    ])
    assert back["From"].addresses[0].addr_spec == "support@helpdesk.test"
    assert "\n" not in back["Subject"] and "\r" not in back["Subject"]


def test_composed_message_arrives_with_threading_intact(smtp_server):
    server = smtp_server("starttls")
    outgoing = compose(mail(in_reply_to=LONG_ID, references=["<first@customer.test>", LONG_ID],
                            html="<p>Hi</p>", attachments=[("a.bin", "application/octet-stream", b"\x00\x01")],
                            from_name="Helpdesk Ü"))

    with SmtpSession(server.settings()) as session:
        session.send(outgoing)

    back = server.received[0].message
    assert back["In-Reply-To"] == LONG_ID
    assert back["References"].split() == ["<first@customer.test>", LONG_ID]
    assert back["From"].addresses[0].display_name == "Helpdesk Ü"
    assert [a.get_content() for a in back.iter_attachments()] == [b"\x00\x01"]


OWN = ["support@helpdesk.test", "Sales@Helpdesk.test"]


@pytest.mark.parametrize(
    ("address", "reason_part"),
    [
        ("support@helpdesk.test", "our own"),
        ("SUPPORT@helpdesk.TEST", "our own"),
        ("support+t42-abc@helpdesk.test", "our own"),
        ("sales@helpdesk.test", "our own"),
        ("MAILER-DAEMON@mx.customer.test", "mail system"),
        ("postmaster@customer.test", "mail system"),
        ("no-reply@shop.test", "no-reply"),
        ("noreply@shop.test", "no-reply"),
        ("No_Reply.Team@shop.test", "no-reply"),
        ("do-not-reply@shop.test", "no-reply"),
        ("donotreply@shop.test", "no-reply"),
        ("bounce@lists.test", "bounce"),
        ("bounces+abc=customer.test@lists.test", "bounce"),
        ("bounce-12345@mailer.test", "bounce"),
        ("", "empty"),
        ("   ", "empty"),
        ("not-an-address", "not a valid"),
        ("a@b@c", "not a valid"),
        ("customer@customer.test\r\nBcc: x@y.test", "not a valid"),
    ],
)
def test_automatic_mail_is_blocked_for(address, reason_part):
    reason = is_automatic_recipient_blocked(address, OWN)

    assert reason is not None
    assert reason_part in reason


@pytest.mark.parametrize(
    "address",
    ["customer@customer.test", "support@customer.test", "replyguy@customer.test",
     "post.master.plan@customer.test", "support@helpdesk.test.evil.test"],
)
def test_automatic_mail_is_allowed_for(address):
    assert is_automatic_recipient_blocked(address, OWN) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.from_regex(r"\A[a-zA-Z0-9._%+!#$&'*/=?^`{|}~-]{1,12}@[a-zA-Z0-9.-]{1,12}\Z"),
    st.text(alphabet="abc.@-+\"() <>\\", max_size=16)))
def test_plain_addresses_split_as_the_address_parser_splits_them(value):
    from email.headerregistry import Address

    from helpdesk.mail.addresses import plain_parts

    parts = plain_parts(value)
    if parts is not None:
        parsed = Address(addr_spec=value)
        assert parts == (parsed.username, parsed.domain)
