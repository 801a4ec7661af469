"""SmtpSession against real servers: bursts on one connection, refusals, reconnects, retries."""
from __future__ import annotations

import pytest

from helpdesk.mail.compose import OutgoingMail, compose
from helpdesk.mail.smtp import SmtpError, SmtpSession, SmtpSettings

SECRET = "Xy9-leak-canary-Q4!"


def message(n: int = 1, **overrides):
    values = dict(
        to=["customer@customer.test"],
        subject=f"Ticket #{n}",
        text=f"Reply number {n}.\n",
        from_address="support@helpdesk.test",
        message_id=f"<reply-{n}@helpdesk.test>",
    )
    values.update(overrides)
    return compose(OutgoingMail(**values))


def test_send_returns_the_data_reply_and_the_server_gets_the_message(smtp_server):
    server = smtp_server("starttls")

    with SmtpSession(server.settings()) as session:
        reply = session.send(message(text="Hello,\n.\nA line with only a dot survives.\n"))

    assert reply == "250 2.0.0 Message 1 accepted for delivery"
    [received] = server.received
    assert received.mail_from == "support@helpdesk.test"
    assert received.rcpt_tos == ["customer@customer.test"]
    assert received.message["Message-ID"] == "<reply-1@helpdesk.test>"
    # Dot-stuffed on the wire, unstuffed by the server: the lone dot line is intact.
    assert b"Hello,\r\n.\r\nA line with only a dot survives.\r\n" in received.data


def test_burst_of_twenty_messages_uses_one_connection(smtp_server):
    server = smtp_server("starttls")

    with SmtpSession(server.settings()) as session:
        replies = [session.send(message(n)) for n in range(1, 21)]

    assert replies[-1] == "250 2.0.0 Message 20 accepted for delivery"
    assert [r.message["Subject"] for r in server.received] == [f"Ticket #{n}" for n in range(1, 21)]
    assert server.connections == 1


def test_envelope_comes_from_headers_and_bcc_is_not_transmitted(smtp_server):
    server = smtp_server("plain")
    msg = message(cc=["boss@customer.test"])
    msg["Bcc"] = "audit@helpdesk.test"

    with SmtpSession(server.settings()) as session:
        session.send(msg)

    [received] = server.received
    assert received.rcpt_tos == ["customer@customer.test", "boss@customer.test", "audit@helpdesk.test"]
    assert b"audit@helpdesk.test" not in received.data
    assert msg["Bcc"] == "audit@helpdesk.test"  # the caller's message is left alone


def test_explicit_envelope_overrides_headers(smtp_server):
    server = smtp_server("plain")

    with SmtpSession(server.settings()) as session:
        session.send(message(), from_addr="bounces@helpdesk.test", to_addrs=["other@customer.test"])

    [received] = server.received
    assert received.mail_from == "bounces@helpdesk.test"
    assert received.rcpt_tos == ["other@customer.test"]


def test_non_ascii_body_and_envelope_address(smtp_server):
    server = smtp_server("plain")

    with SmtpSession(server.settings()) as session:
        session.send(message(text="Grüße aus Zürich — ok ✓\n"), to_addrs=["jörg@customer.test"])

    [received] = server.received
    assert received.rcpt_tos == ["jörg@customer.test"]
    # MIME text travels with CRLF line ends; base64 keeps them.
    assert received.message.get_content().replace("\r\n", "\n") == "Grüße aus Zürich — ok ✓\n"


def test_refused_recipient_resets_and_the_session_stays_usable(smtp_server):
    server = smtp_server("picky")

    with SmtpSession(server.settings()) as session:
        with pytest.raises(SmtpError) as caught:
            session.send(message(1, to=["customer@customer.test", "nobody@customer.test"]))
        reply = session.send(message(2))

    error = caught.value
    assert error.kind == "recipient"
    assert error.code == 550
    assert error.transient is False
    assert error.server_reply == "550 5.1.1 No such user here"
    assert error.refused == {"nobody@customer.test": "550 5.1.1 No such user here"}
    assert reply.startswith("250 ")
    # Nothing half-sent: the accepted recipient did not get message 1 either.
    assert [r.message["Subject"] for r in server.received] == ["Ticket #2"]
    assert server.connections == 1


def test_refused_sender_resets_and_the_session_stays_usable(smtp_server):
    server = smtp_server("picky")

    with SmtpSession(server.settings()) as session:
        with pytest.raises(SmtpError) as caught:
            session.send(message(1), from_addr="other@helpdesk.test")
        session.send(message(2))

    assert caught.value.kind == "sender"
    assert caught.value.code == 550
    assert "5.7.60" in caught.value.server_reply
    assert caught.value.transient is False
    assert len(server.received) == 1
    assert server.connections == 1


def test_451_on_data_is_transient_and_the_next_try_goes_through(smtp_server):
    server = smtp_server("flaky", fail_data_first=2)

    errors = []
    with SmtpSession(server.settings()) as session:
        for _ in range(2):
            with pytest.raises(SmtpError) as caught:
                session.send(message())
            errors.append(caught.value)
        reply = session.send(message())

    assert [(e.kind, e.code, e.transient) for e in errors] == [("data", 451, True)] * 2
    assert errors[0].server_reply == "451 4.3.0 Temporary failure, try again later"
    assert reply == "250 2.0.0 Message 1 accepted for delivery"
    assert server.handler.data_attempts == 3
    assert server.connections == 1


def test_reconnects_once_when_the_server_dropped_the_connection(smtp_server):
    server = smtp_server("starttls")

    with SmtpSession(server.settings()) as session:
        session.send(message(1))
        server.drop_connections()
        reply = session.send(message(2))

    assert reply == "250 2.0.0 Message 2 accepted for delivery"
    assert len(server.received) == 2
    assert server.connections == 2


def test_connection_problems_are_transient(closed_port):
    with pytest.raises(SmtpError) as caught:
        SmtpSession(SmtpSettings(host="127.0.0.1", port=closed_port, security="none")).open()

    assert caught.value.kind == "refused"
    assert caught.value.transient is True
    assert caught.value.code is None


def test_certificate_problems_are_permanent(smtp_server):
    server = smtp_server("untrusted")

    with pytest.raises(SmtpError) as caught:
        with SmtpSession(server.settings()):
            pass

    assert caught.value.kind == "tls_cert"
    assert caught.value.transient is False


def test_authentication_failure_never_shows_the_password(smtp_server):
    server = smtp_server("starttls")
    settings = server.settings(password=SECRET)

    with pytest.raises(SmtpError) as caught:
        SmtpSession(settings).open()

    error = caught.value
    assert (error.kind, error.code, error.transient) == ("auth", 535, False)
    for text in (str(error), repr(error), error.diagnosis, error.server_reply, repr(settings)):
        assert SECRET not in text


def test_settings_repr_hides_the_password_and_security_is_checked():
    settings = SmtpSettings(host="smtp.example.org", port=587, security="starttls",
                            username="agent", password=SECRET)

    assert SECRET not in repr(settings)
    assert "agent" in repr(settings)
    with pytest.raises(ValueError):
        SmtpSettings(host="smtp.example.org", port=587, security="tls")


def test_message_without_recipients_is_refused_without_a_transaction(smtp_server):
    server = smtp_server("plain")

    with SmtpSession(server.settings()) as session:
        with pytest.raises(SmtpError) as caught:
            session.send(message(), to_addrs=[])

    assert caught.value.kind == "recipient"
    assert server.received == []


def test_send_bytes_puts_exactly_those_bytes_on_the_wire_beside_send(smtp_server):
    server = smtp_server("starttls")
    flattened = message(1, text="First line.\n.\nA lone dot, stuffed on the wire.\n").as_bytes()

    with SmtpSession(server.settings()) as session:
        first = session.send_bytes(flattened, "support@helpdesk.test", ["customer@customer.test"])
        second = session.send(message(2))

    assert first == "250 2.0.0 Message 1 accepted for delivery"
    assert second == "250 2.0.0 Message 2 accepted for delivery"
    received = server.received[0]
    assert received.data == flattened
    assert received.mail_from == "support@helpdesk.test"
    assert received.rcpt_tos == ["customer@customer.test"]
    assert server.connections == 1


def test_send_bytes_to_a_non_ascii_address_uses_smtputf8(smtp_server):
    from email import policy

    from helpdesk.mail.smtp import needs_smtputf8

    server = smtp_server("plain")
    recipients = ["jörg@customer.test"]
    assert needs_smtputf8("support@helpdesk.test", recipients)
    assert not needs_smtputf8("support@helpdesk.test", ["jorg@customer.test"])
    flattened = message(text="Grüße aus Zürich\n").as_bytes(policy=policy.SMTPUTF8)

    with SmtpSession(server.settings()) as session:
        session.send_bytes(flattened, "support@helpdesk.test", recipients)

    [received] = server.received
    assert received.rcpt_tos == recipients
    assert received.data == flattened
    assert received.message.get_content().replace("\r\n", "\n") == "Grüße aus Zürich\n"


def test_send_bytes_refuses_an_empty_envelope_and_the_session_stays_usable(smtp_server):
    server = smtp_server("picky")
    flattened = message().as_bytes()

    with SmtpSession(server.settings()) as session:
        with pytest.raises(SmtpError) as no_sender:
            session.send_bytes(flattened, "", ["customer@customer.test"])
        with pytest.raises(SmtpError) as no_recipient:
            session.send_bytes(flattened, "support@helpdesk.test", [])
        with pytest.raises(SmtpError) as refused:
            session.send_bytes(flattened, "support@helpdesk.test", ["nobody@customer.test"])
        session.send_bytes(flattened, "support@helpdesk.test", ["customer@customer.test"])

    assert (no_sender.value.kind, no_sender.value.transient) == ("sender", False)
    assert (no_recipient.value.kind, no_recipient.value.transient) == ("recipient", False)
    assert refused.value.refused == {"nobody@customer.test": "550 5.1.1 No such user here"}
    assert [r.rcpt_tos for r in server.received] == [["customer@customer.test"]]
    assert server.connections == 1
