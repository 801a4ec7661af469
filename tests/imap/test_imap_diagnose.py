"""diagnose() reaches each failure class for real and never shows the password."""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from helpdesk.mail.imap import PROVIDER_PRESETS, ImapError, ImapSession, diagnose

PASSWORD = "Pw-that-must-never-show-9f3c"


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Return a loopback port that accepts connections but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def texts(diagnosis) -> str:
    return " ".join([diagnosis.summary, diagnosis.detail, diagnosis.hint, repr(diagnosis)])


def assert_failure(diagnosis, kind: str) -> None:
    assert diagnosis.ok is False
    assert diagnosis.kind == kind
    assert diagnosis.summary
    assert PASSWORD not in texts(diagnosis)


def test_success_counts_the_messages(imap_settings, folder, make_message):
    with ImapSession(imap_settings()) as session:
        for n in range(2):
            session.append(folder, make_message(n))
    result = diagnose(imap_settings(), folder)
    assert result.ok is True
    assert result.kind == "ok"
    assert result.summary == f"Connected and logged in; {folder} has 2 messages"
    assert "supportpw" not in texts(result)


def test_success_does_not_mark_anything_read(imap_settings, folder, make_message):
    with ImapSession(imap_settings()) as session:
        uid = session.append(folder, make_message(1))
    assert diagnose(imap_settings(), folder).ok
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        assert b"\\Seen" not in session.client.get_flags([uid])[uid]


def test_dns_failure(imap_settings):
    result = diagnose(imap_settings(host="imap.nowhere.invalid", password=PASSWORD))
    assert_failure(result, "dns")
    assert "imap.nowhere.invalid" in result.summary
    assert result.detail


def test_refused_port(imap_settings, closed_port):
    result = diagnose(imap_settings(port=closed_port, password=PASSWORD))
    assert_failure(result, "refused")
    assert f"127.0.0.1:{closed_port}" in result.summary
    assert "refused" in result.detail.lower()


@pytest.mark.parametrize("security", ["none", "ssl", "starttls"])
def test_server_that_never_greets_times_out(imap_settings, silent_port, security):
    result = diagnose(imap_settings(port=silent_port, security=security, timeout=1, password=PASSWORD))
    assert_failure(result, "timeout")
    assert "1 seconds" in result.summary


def test_self_signed_certificate_is_not_trusted_by_system_cas(services, imap_settings):
    settings = imap_settings(security="ssl", port=int(services["HELPDESK_TEST_IMAPS_PORT"]),
                             ca_file=None, password=PASSWORD)
    result = diagnose(settings)
    assert_failure(result, "tls_cert")
    assert "certificate" in result.summary
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail


def test_starttls_certificate_is_checked_too(imap_settings):
    result = diagnose(imap_settings(security="starttls", ca_file=None, password=PASSWORD))
    assert_failure(result, "tls_cert")


def test_ssl_against_the_plain_port_is_a_tls_error(imap_settings):
    result = diagnose(imap_settings(security="ssl", password=PASSWORD))
    assert_failure(result, "tls")
    assert "security setting" in result.summary
    assert result.detail


def test_wrong_password_is_an_auth_error_with_the_server_reply(imap_settings):
    result = diagnose(imap_settings(password=PASSWORD))
    assert_failure(result, "auth")
    assert "support@example.test" in result.summary
    assert "AUTHENTICATIONFAILED" in result.detail


def test_wrong_password_exception_hides_the_password(imap_settings):
    with pytest.raises(ImapError) as caught:
        with ImapSession(imap_settings(password=PASSWORD)):
            pass
    assert caught.value.kind == "auth"
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in caught.value.diagnosis + caught.value.server_reply


def test_missing_folder(imap_settings, folder):
    result = diagnose(imap_settings(), folder + ".nope")
    assert result.ok is False
    assert result.kind == "folder"
    assert folder + ".nope" in result.summary
    assert "exist" in result.detail


def test_provider_presets_describe_gmail_and_microsoft365():
    assert PROVIDER_PRESETS["gmail"]["host"] == "imap.gmail.com"
    assert PROVIDER_PRESETS["microsoft365"]["host"] == "outlook.office365.com"
    for preset in PROVIDER_PRESETS.values():
        assert preset["port"] == 993
        assert preset["security"] == "ssl"
    assert "App Password" in PROVIDER_PRESETS["gmail"]["note"]
    assert "OAuth" in PROVIDER_PRESETS["microsoft365"]["note"]


@pytest.fixture
def echoing_server() -> Iterator[int]:
    """A plain IMAP server that refuses every LOGIN and echoes the command in its reply, as some do."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] echo ready\r\n")
            for line in lines:
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                if rest.upper().startswith(b"LOGIN"):
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] Refused: " + rest + b"\r\n")
                elif rest.upper().startswith(b"CAPABILITY"):
                    conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
                elif rest.upper().startswith(b"LOGOUT"):
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" BAD unknown\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("password", ['Pw"with-quote-9f3c', "Pw\\with-backslash-9f3c", 'Pw\\"both-9f3c'])
def test_a_password_the_server_echoes_quoted_is_masked(imap_settings, echoing_server, password):
    result = diagnose(imap_settings(host="127.0.0.1", port=echoing_server, security="none", password=password))

    assert result.kind == "auth" and "Refused: LOGIN" in result.detail
    shown = texts(result)
    assert "********" in shown
    for piece in ("with-quote", "with-backslash", "both-9f3c"):
        assert piece not in shown, shown


def test_a_password_with_accents_logs_in_with_authenticate_plain(imap_settings):
    result = diagnose(imap_settings(username="accents@example.test", password="Pässwörd-ü1"))

    assert result.ok, result


def test_a_wrong_password_with_accents_is_diagnosed(imap_settings, caplog):
    result = diagnose(imap_settings(username="accents@example.test", password="Pässwörd-nöpe"))

    assert result.kind == "auth" and "refused the login" in result.summary
    for piece in ("nöpe", "\xe4", "\xf6"):
        assert piece not in texts(result) and piece not in caplog.text
