"""The Test SMTP button: every failure class reached against real servers, in plain words."""
from __future__ import annotations

import pytest

from helpdesk.mail.diagnosis import Diagnosis
from helpdesk.mail.smtp import (
    GMAIL_HINT,
    MICROSOFT_365_HINT,
    PROVIDER_PRESETS,
    SmtpSettings,
    diagnose,
    provider_hint,
    suggested_port,
)

FROM = "support@helpdesk.test"
TO = "customer@customer.test"
# Distinctive enough that finding it anywhere in a diagnosis can only mean a leak.
SECRET = "Xy9-leak-canary-Q4!"


def run(settings: SmtpSettings, from_addr: str = FROM, to_addr: str = TO) -> Diagnosis:
    diagnosis = diagnose(settings, from_addr, to_addr)
    for secret in {SECRET, settings.password} - {""}:
        for text in (diagnosis.summary, diagnosis.detail, diagnosis.hint, repr(diagnosis)):
            assert secret not in text
    return diagnosis


def test_success_sends_a_real_message_and_shows_the_reply(smtp_server):
    server = smtp_server("starttls")

    diagnosis = run(server.settings())

    assert diagnosis.ok is True
    assert diagnosis.kind == "ok"
    assert diagnosis.summary == f"Test message sent to {TO}"
    assert diagnosis.detail == "250 2.0.0 Message 1 accepted for delivery"
    [received] = server.received
    assert received.mail_from == FROM
    assert received.rcpt_tos == [TO]
    msg = received.message
    assert msg["Subject"] == "Test SMTP from the helpdesk"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "Test SMTP button" in msg.get_content()


@pytest.mark.parametrize("kind", ["ssl", "plain"])
def test_success_over_implicit_tls_and_plain(smtp_server, kind):
    server = smtp_server(kind)

    diagnosis = run(server.settings())

    assert diagnosis.ok, diagnosis
    assert len(server.received) == 1


def test_unknown_host_name_is_a_dns_failure():
    diagnosis = run(SmtpSettings(host="smtp.nowhere.invalid", port=587, security="starttls",
                                 username="u", password=SECRET))

    assert not diagnosis.ok
    assert diagnosis.kind == "dns"
    assert "smtp.nowhere.invalid" in diagnosis.summary
    assert "could not be found" in diagnosis.summary
    assert diagnosis.detail  # the resolver's own words


def test_closed_port_is_refused(closed_port):
    diagnosis = run(SmtpSettings(host="127.0.0.1", port=closed_port, security="starttls",
                                 username="u", password=SECRET))

    assert diagnosis.kind == "refused"
    assert f"127.0.0.1:{closed_port} refused the connection" in diagnosis.summary
    assert "refused" in diagnosis.detail.lower()


@pytest.mark.parametrize("security", ["starttls", "none", "ssl"])
def test_server_that_never_greets_times_out(silent_port, security):
    diagnosis = run(SmtpSettings(host="127.0.0.1", port=silent_port, security=security,
                                 username="u", password=SECRET, timeout=1))

    assert diagnosis.kind == "timeout"
    assert "did not answer within 1 seconds" in diagnosis.summary
    assert "timed out" in diagnosis.detail


def test_untrusted_certificate_suggests_turning_verification_off_for_self_signed(smtp_server):
    server = smtp_server("untrusted")

    diagnosis = run(server.settings())

    assert diagnosis.kind == "tls_cert"
    assert "cannot trust" in diagnosis.summary
    assert "self-signed" in diagnosis.summary  # OpenSSL's verify message, in the summary
    assert "Turn verification off only for a self-signed server" in diagnosis.summary
    assert "CERTIFICATE_VERIFY_FAILED" in diagnosis.detail
    assert server.received == []


def test_verification_off_accepts_the_self_signed_server(smtp_server):
    server = smtp_server("untrusted")

    assert run(server.settings(verify_tls=False)).ok


def test_ca_signed_certificate_is_untrusted_without_the_ca_file(smtp_server):
    server = smtp_server("starttls")

    diagnosis = run(server.settings(ca_file=None))

    assert diagnosis.kind == "tls_cert"
    assert "local issuer" in diagnosis.summary


def test_ssl_on_a_starttls_port_is_wrong_security(smtp_server):
    server = smtp_server("starttls")

    diagnosis = run(server.settings(security="ssl"))

    assert diagnosis.kind == "wrong_security"
    assert f"port {server.port} expects STARTTLS" in diagnosis.summary
    assert "wrong version number" in diagnosis.detail.lower()


@pytest.mark.parametrize("security", ["starttls", "none"])
def test_starttls_or_plain_on_an_implicit_tls_port_is_wrong_security(smtp_server, security):
    server = smtp_server("ssl")

    diagnosis = run(server.settings(security=security, timeout=1))

    assert diagnosis.kind == "wrong_security"
    assert f"port {server.port} expects SSL/TLS" in diagnosis.summary
    assert "timed out" in diagnosis.detail


def test_starttls_on_a_server_without_starttls_is_wrong_security(smtp_server):
    server = smtp_server("plain")

    diagnosis = run(server.settings(security="starttls"))

    assert diagnosis.kind == "wrong_security"
    assert "does not offer STARTTLS" in diagnosis.summary


def test_username_for_a_server_without_auth(smtp_server):
    server = smtp_server("plain")

    diagnosis = run(server.settings(username="agent", password=SECRET))

    assert diagnosis.kind == "no_auth"
    assert "offers no login (AUTH)" in diagnosis.summary
    assert server.received == []


def test_auth_offered_only_after_starttls(smtp_server):
    server = smtp_server("starttls")

    diagnosis = run(server.settings(security="none"))

    assert diagnosis.kind == "no_auth"
    assert "only after STARTTLS" in diagnosis.summary


def test_wrong_password_is_an_authentication_failure_with_the_server_reply(smtp_server):
    server = smtp_server("starttls")

    diagnosis = run(server.settings(password=SECRET))

    assert diagnosis.kind == "auth"
    assert diagnosis.detail == "535 5.7.8 Authentication credentials invalid"
    assert repr(server.username) in diagnosis.summary
    assert diagnosis.hint == ""  # 127.0.0.1 is no provider with known advice
    assert server.received == []


def test_wrong_password_over_implicit_tls(smtp_server):
    server = smtp_server("ssl")

    diagnosis = run(server.settings(password=SECRET))

    assert diagnosis.kind == "auth"
    assert diagnosis.detail.startswith("535 ")


def test_sender_refused_says_the_account_may_not_send_as_that_address(smtp_server):
    server = smtp_server("picky")

    diagnosis = run(server.settings(), from_addr="other@helpdesk.test")

    assert diagnosis.kind == "sender"
    assert "may not send as that From Address" in diagnosis.summary
    assert "other@helpdesk.test" in diagnosis.summary
    assert diagnosis.detail == "550 5.7.60 SMTP; Client does not have permissions to send as this sender"


def test_recipient_refused(smtp_server):
    server = smtp_server("picky")

    diagnosis = run(server.settings(), to_addr="nobody@customer.test")

    assert diagnosis.kind == "recipient"
    assert "nobody@customer.test" in diagnosis.summary
    assert diagnosis.detail == "550 5.1.1 No such user here"
    assert server.received == []


def test_transient_data_failure_is_reported(smtp_server):
    server = smtp_server("flaky", fail_data_first=1)

    diagnosis = run(server.settings())

    assert diagnosis.kind == "data"
    assert diagnosis.detail.startswith("451 4.3.0")


def test_invalid_test_recipient_is_reported_not_raised(smtp_server):
    server = smtp_server("plain")

    diagnosis = run(server.settings(), to_addr="not an address")

    assert diagnosis.kind == "recipient"
    assert server.connections == 0


def test_invalid_from_address_is_reported_not_raised(smtp_server):
    server = smtp_server("plain")

    diagnosis = run(server.settings(), from_addr="support@helpdesk.test\r\nBcc: x@evil.test")

    assert diagnosis.kind == "sender"
    assert "From address" in diagnosis.summary
    assert server.connections == 0


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("smtp.gmail.com", GMAIL_HINT),
        ("SMTP.GoogleMail.com.", GMAIL_HINT),
        ("smtp.office365.com", MICROSOFT_365_HINT),
        ("smtp-mail.outlook.com", MICROSOFT_365_HINT),
        ("mail.example.org", ""),
        ("gmail.com.example.org", ""),
    ],
)
def test_provider_hint(host, hint):
    assert provider_hint(host) == hint


def test_gmail_hint_names_the_app_password_page():
    assert "App Password" in GMAIL_HINT
    assert "myaccount.google.com/apppasswords" in GMAIL_HINT
    assert "Authenticated SMTP" in MICROSOFT_365_HINT
    assert "December 2026" in MICROSOFT_365_HINT


def test_presets_match_suggested_ports():
    assert PROVIDER_PRESETS["gmail"]["host"] == "smtp.gmail.com"
    assert PROVIDER_PRESETS["microsoft365"]["host"] == "smtp.office365.com"
    for preset in PROVIDER_PRESETS.values():
        assert preset["port"] == suggested_port(str(preset["security"])) == 587
        assert preset["note"] == provider_hint(str(preset["host"]))
    assert suggested_port("ssl") == 465
    assert suggested_port("none") == 25
    with pytest.raises(ValueError):
        suggested_port("tls")
