"""Test SMTP through the view, against real aiosmtpd servers: each outcome as the admin reads it."""
from __future__ import annotations

import re
import sys

from cryptography.fernet import Fernet

from helpdesk.extensions import db
from helpdesk.mail.secrets import CredentialBox
from helpdesk.models import SmtpConfig

# tests/smtp/servers.py, loaded by tests/conftest.py (a file, not a package, under --import-mode=importlib).
servers = sys.modules["helpdesk_tests_smtp_servers"]

URL = "/admin/settings/email/outbound"
TEST_URL = URL + "/test"
HTMX = {"HX-Request": "true"}
WRONG = "Wr0ng-canary-7731!"
TO = "customer@customer.test"


def form_for(server, **overrides) -> dict:
    data = dict(host=server.host, port=str(server.port), security=server.security, username=server.username,
                password=server.password, from_address="support@helpdesk.test", from_name="Helpdesk",
                verify_tls="y", timeout="10", test_to=TO)
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def run_test(client, data: dict, *, htmx: bool = True) -> str:
    response = client.auth.post(TEST_URL, data, headers=HTMX if htmx else {})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for secret in {servers.PASSWORD, WRONG, data.get("password", "")} - {""}:
        assert secret not in html
    return html


def saved_rows() -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(SmtpConfig).where(SmtpConfig.host != ""))


def test_success_sends_a_real_mail_and_shows_the_server_reply(admin_client, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server))

    assert html.lstrip().startswith('<div id="smtp-test-result">')  # the partial, not the page
    assert "<html" not in html
    assert f"Test message sent to {TO}" in html
    assert "250 2.0.0 Message 1 accepted for delivery" in html
    [received] = server.received
    assert received.mail_from == "support@helpdesk.test"
    assert received.rcpt_tos == [TO]
    assert received.message["Subject"] == "Test SMTP from the helpdesk"
    assert saved_rows() == 0  # testing is not saving


def test_recipient_defaults_to_the_admin(admin_client, admin, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server, test_to=""))

    assert f"Test message sent to {admin.email}" in html
    assert server.received[0].rcpt_tos == [admin.email]


def test_blank_password_tests_with_the_stored_one(admin_client, smtp_server):
    server = smtp_server("starttls")
    admin_client.auth.post(URL, form_for(server))
    assert saved_rows() == 1

    html = run_test(admin_client, form_for(server, password=""))

    assert "Test message sent" in html
    assert len(server.received) == 1


def test_wrong_password_is_diagnosed_with_the_servers_535(admin_client, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server, password=WRONG))

    assert "Test failed" in html
    assert f"rejected the username or password for &#39;{servers.USERNAME}&#39;" in html
    assert re.search(r"<pre>535 5\.7\.8 Authentication credentials invalid</pre>", html)
    assert server.received == []


def test_untrusted_certificate_fails_with_verification_and_passes_without(admin_client, smtp_server):
    server = smtp_server("untrusted")

    refused = run_test(admin_client, form_for(server))
    sent = run_test(admin_client, form_for(server, verify_tls=None))

    assert "presented a TLS certificate we cannot trust" in refused
    assert "Turn verification off only for a self-signed server you control" in refused
    assert "certificate verify failed" in refused  # the TLS library's own words
    assert "Test message sent" in sent
    assert len(server.received) == 1


def test_ssl_on_a_starttls_port_is_wrong_security(admin_client, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server, security="ssl"))

    assert "greets in plain text, so SSL/TLS is the wrong security for it" in html
    assert server.received == []


def test_starttls_on_an_implicit_tls_port_is_wrong_security(admin_client, smtp_server):
    server = smtp_server("ssl")

    html = run_test(admin_client, form_for(server, security="starttls", timeout="3"))

    assert "expects SSL/TLS" in html
    assert server.received == []


def test_refused_connection(admin_client, closed_port):
    html = run_test(admin_client, dict(host="127.0.0.1", port=str(closed_port), security="starttls",
                                       username="u", password=WRONG, from_address="support@helpdesk.test",
                                       verify_tls="y", timeout="10", test_to=TO))

    assert f"127.0.0.1:{closed_port} refused the connection" in html
    assert "Connection refused" in html  # the operating system's words


def test_refused_sender_names_the_send_as_problem(admin_client, smtp_server):
    server = smtp_server("picky")

    html = run_test(admin_client, form_for(server, from_address="other@helpdesk.test"))

    assert "may not send as that From Address" in html
    assert servers.SEND_AS_DENIED in html


def test_a_stored_password_the_key_cannot_open_is_explained(admin_client, smtp_server):
    server = smtp_server("starttls")
    admin_client.auth.post(URL, form_for(server))
    db.session.scalar(db.select(SmtpConfig)).password_encrypted = CredentialBox(Fernet.generate_key()).seal("x")
    db.session.commit()

    html = run_test(admin_client, form_for(server, password=""))

    assert "was CREDENTIALS_KEY changed?" in html
    assert server.connections == 0


def test_invalid_fields_are_listed_and_nothing_is_contacted(admin_client, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server, host="https://smtp.x", port="0"))

    assert "Fix the fields marked below before testing." in html
    assert "Host: Enter only the server name" in html
    assert "Port: The port must be a number from 1 to 65535." in html
    assert server.connections == 0


def test_without_javascript_the_full_page_comes_back_with_the_result(admin_client, smtp_server):
    server = smtp_server("starttls")

    html = run_test(admin_client, form_for(server), htmx=False)

    assert "<html" in html and ">Save</button>" in html
    assert f'value="{server.host}"' in html  # the form keeps what was typed ...
    assert "Test message sent" in html
    assert "type it again before" in html  # ... except the password, which is never sent back
    assert len(server.received) == 1


def test_the_stored_password_never_goes_to_another_server(admin_client, smtp_server):
    from helpdesk.extensions import db
    from helpdesk.services.smtp_config import save_config

    real = smtp_server("starttls")
    other = smtp_server("starttls")
    save_config({"host": real.host, "port": real.port, "security": "starttls", "username": real.username,
                 "password": real.password, "from_address": "support@helpdesk.test", "from_name": "",
                 "verify_tls": True, "timeout": 10}, None)
    db.session.commit()
    html = admin_client.auth.post("/admin/settings/email/outbound/test", {
        "host": "localhost", "port": str(other.port), "security": "starttls", "username": real.username,
        "password": "", "from_address": "support@helpdesk.test", "from_name": "", "verify_tls": "y",
        "timeout": "10", "test_to": "admin@example.test"}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Test failed" in html
    assert other.received == []


def test_a_test_on_another_port_or_security_asks_for_the_password_again(admin_client, smtp_server):
    real = smtp_server("starttls")
    other_port = smtp_server("starttls")
    admin_client.auth.post(URL, form_for(real))

    for change in ({"port": str(other_port.port)}, {"verify_tls": None}, {"security": "none"}):
        html = run_test(admin_client, form_for(real, password="", **change))
        assert "type the password again to test" in html, change
    assert real.connections == 0 and other_port.connections == 0
    # Typed again, it is used.
    assert "Test message sent" in run_test(admin_client, form_for(real, port=str(other_port.port),
                                                                  host=other_port.host))
