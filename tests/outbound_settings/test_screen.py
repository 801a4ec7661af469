"""Admin → Settings → Email → Outbound (SMTP): access, CSRF, saving, the write-only password, validation."""
from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import text

from helpdesk.extensions import db
from helpdesk.mail.secrets import CredentialBox
from helpdesk.models import SmtpConfig

URL = "/admin/settings/email/outbound"
TEST_URL = URL + "/test"
# Distinctive enough that finding it in any page or log line can only mean a leak.
SECRET = "Kx4-outbound-canary-Pw!"


def form(**overrides) -> dict:
    data = dict(host="smtp.example.test", port="587", security="starttls", username="agent@example.test",
                password=SECRET, from_address="support@example.test", from_name="Example Support",
                verify_tls="y", timeout="15")
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def stored() -> SmtpConfig:
    db.session.expire_all()
    return db.session.scalar(db.select(SmtpConfig))


def field_block(html: str, field_id: str) -> str:
    """Return the markup of one field's block (label, input, hint, errors), as the field() macro writes it."""
    match = re.search(rf'<div class="field[^"]*" id="field-{field_id}">(.*?)</div>', html, re.S)
    assert match, f"no field {field_id} on the page"
    return match.group(0)


def test_admin_sees_every_field_preset_and_button(admin_client, admin):
    response = admin_client.get(URL)

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for label in ("Host", "Port", "Security", "Username", "Password", "From Address", "From name",
                  "Verify TLS certificate", "Timeout (seconds)", "Send test to"):
        assert f">{label}</label>" in html, label
    for option in ('value="starttls">STARTTLS', 'value="ssl">SSL/TLS', 'value="none">None'):
        assert option in html
    assert re.search(r'<button[^>]*type="submit"[^>]*>Save</button>', html)
    assert re.search(r"<button[^>]*>Test SMTP</button>", html, re.S)
    assert 'id="verify_tls" name="verify_tls" type="checkbox" value="y"' in html
    assert "checked" in field_block(html, "verify_tls")
    assert 'value="15"' in field_block(html, "timeout")
    assert f'value="{admin.email}"' in field_block(html, "test_to")
    assert 'type="password"' in field_block(html, "password")
    # Nothing stored yet: no "stored" placeholder and no clear checkbox.
    assert "stored — leave blank" not in html
    assert "Clear stored password" not in html
    assert "Not configured yet" in html
    # Both provider presets, with the notes admins need.
    assert 'data-host="smtp.gmail.com"' in html
    assert re.search(r'data-host="smtp.office365.com"\s+data-port="587"\s+data-security="starttls"', html)
    assert "myaccount.google.com/apppasswords" in html
    assert "Authenticated SMTP" in html and "December 2026" in html and "OAuth" in html


def test_test_button_is_an_htmx_post_that_cannot_be_double_fired(admin_client):
    html = admin_client.get(URL).get_data(as_text=True)

    button = re.search(r'<button[^>]*id="smtp-test-button"[^>]*>', html, re.S).group(0)
    assert f'hx-post="{TEST_URL}"' in button
    assert f'formaction="{TEST_URL}"' in button  # without JS the same endpoint gets the whole form
    assert 'hx-include="#smtp-form"' in button
    assert 'hx-disabled-elt="this"' in button
    assert 'hx-indicator="#smtp-test-spinner"' in button
    assert 'id="smtp-test-spinner" class="htmx-indicator' in html


@pytest.mark.parametrize("method, url", [("get", URL), ("post", URL), ("post", TEST_URL)])
def test_plain_agents_are_turned_away(agent_client, method, url):
    if method == "get":
        response = agent_client.get(url)
    else:
        response = agent_client.auth.post(url, form())

    assert response.status_code == 403
    assert db.session.scalar(db.select(db.func.count()).select_from(SmtpConfig)) == 0


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


@pytest.mark.parametrize("url", [URL, TEST_URL])
def test_posts_without_the_csrf_token_are_refused(admin_client, url):
    response = admin_client.post(url, data=form())

    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert stored() is None


def test_save_encrypts_the_password_and_records_who_and_when(admin_client, admin, app):
    response = admin_client.auth.post(URL, form())

    assert response.status_code == 302
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Settings saved" in page
    assert re.search(r"Last changed by Ada Admin at \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    config = stored()
    assert (config.host, config.port, config.security) == ("smtp.example.test", 587, "starttls")
    assert (config.username, config.from_address, config.from_name) == (
        "agent@example.test", "support@example.test", "Example Support")
    assert config.verify_tls is True and config.timeout == 15
    assert config.updated_by_id == admin.id and config.updated_at is not None
    # What is at rest, read past the ORM: not the password, yet it opens to it with the server's key.
    at_rest = db.session.execute(text("SELECT password_encrypted FROM smtp_config")).scalar_one()
    assert SECRET not in at_rest and at_rest
    assert CredentialBox(app.config["CREDENTIALS_KEY"]).open(at_rest) == SECRET
    # Write-only: the page says one is stored but never carries it.
    assert SECRET not in page
    assert at_rest not in page
    assert 'placeholder="•••••• (stored — leave blank to keep)"' in page
    assert "Clear stored password" in page
    assert "Not configured yet" not in page


def test_blank_password_keeps_the_stored_one(admin_client, app):
    admin_client.auth.post(URL, form())
    before = stored().password_encrypted

    # Same server, account, port, security and certificate check: the password still belongs there.
    response = admin_client.auth.post(URL, form(password="", from_name="Support Team", timeout="20"))

    assert response.status_code == 302
    config = stored()
    assert (config.from_name, config.timeout) == ("Support Team", 20)
    assert config.password_encrypted == before
    assert CredentialBox(app.config["CREDENTIALS_KEY"]).open(config.password_encrypted) == SECRET


@pytest.mark.parametrize("change", [{"port": "2587"}, {"security": "ssl", "port": "465"}, {"security": "none"},
                                   {"verify_tls": None}])
def test_another_port_security_or_certificate_check_needs_the_password_again(admin_client, change):
    admin_client.auth.post(URL, form())

    response = admin_client.auth.post(URL, form(password="", **change), follow_redirects=True)

    assert "The stored password was removed" in response.get_data(as_text=True)
    assert stored().password_encrypted == ""


def test_switching_the_certificate_check_on_keeps_the_password(admin_client):
    admin_client.auth.post(URL, form(verify_tls=None))

    admin_client.auth.post(URL, form(password=""))

    assert stored().verify_tls is True and stored().password_encrypted


def test_a_new_password_replaces_the_stored_one(admin_client, app):
    admin_client.auth.post(URL, form())

    admin_client.auth.post(URL, form(password="another-Secret-99"))

    assert CredentialBox(app.config["CREDENTIALS_KEY"]).open(stored().password_encrypted) == "another-Secret-99"


def test_clear_stored_password(admin_client):
    admin_client.auth.post(URL, form())

    response = admin_client.auth.post(URL, form(password="", clear_password="y"))

    assert response.status_code == 302
    assert stored().password_encrypted == ""
    page = admin_client.get(URL).get_data(as_text=True)
    assert "stored — leave blank" not in page
    assert "Clear stored password" not in page
    assert "No password stored." in page


def test_typing_a_password_and_clearing_it_at_once_is_refused(admin_client):
    admin_client.auth.post(URL, form())

    response = admin_client.auth.post(URL, form(password="new-one-123", clear_password="y"))

    assert response.status_code == 200
    block = field_block(response.get_data(as_text=True), "clear_password")
    assert "Either type a new password or clear the stored one, not both." in block
    assert "new-one-123" not in response.get_data(as_text=True)


@pytest.mark.parametrize("field, value, message", [
    ("host", "https://smtp.x", "no https:// or path"),
    ("host", "smtp.example.com:587", "Enter the port in the Port field"),
    ("host", "", "Enter the SMTP server&#39;s host name"),
    ("port", "0", "The port must be a number from 1 to 65535."),
    ("port", "65536", "The port must be a number from 1 to 65535."),
    ("port", "five", "Not a valid integer value."),
    ("from_address", "support at example", "An email address must have an @-sign."),
    ("from_address", "", "Enter the address mail is sent from."),
    ("timeout", "61", "The timeout must be from 1 to 60 seconds."),
    ("timeout", "0", "The timeout must be from 1 to 60 seconds."),
    ("test_to", "nobody@", "There must be something after the @-sign."),
])
def test_validation_messages_stand_beside_their_field(admin_client, field, value, message):
    response = admin_client.auth.post(URL, form(**{field: value}))

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    block = field_block(html, field)
    assert "has-error" in block
    assert message in block
    assert 'aria-invalid="true"' in block
    assert "Settings saved" not in html
    assert stored() is None or stored().host == ""
    assert SECRET not in html


def test_password_stays_out_of_logs(admin_client, caplog, monkeypatch, closed_port):
    # migrations/env.py's fileConfig() disables every logger that existed before the test database was
    # migrated; turn ours back on so this test sees what production would log.
    for name in ("helpdesk.services.smtp_config", "helpdesk.admin_email.outbound"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    caplog.set_level(logging.DEBUG)

    admin_client.auth.post(URL, form())
    admin_client.auth.post(TEST_URL, form(host="127.0.0.1", port=str(closed_port), test_to="me@example.test"),
                           headers={"HX-Request": "true"})

    assert caplog.records  # the save and the test are logged ...
    assert SECRET not in caplog.text  # ... without the password
    assert "SMTP settings saved" in caplog.text
    assert "Test SMTP by agent" in caplog.text


def test_a_new_host_drops_the_stored_password(admin_client):
    from helpdesk.extensions import db
    from helpdesk.models import SmtpConfig

    form = {"host": "smtp.example.test", "port": "587", "security": "starttls", "username": "me@example.test",
            "password": "first-secret", "from_address": "support@example.test", "from_name": "",
            "verify_tls": "y", "timeout": "15"}
    admin_client.auth.post("/admin/settings/email/outbound", form)
    same = admin_client.auth.post("/admin/settings/email/outbound", {**form, "password": ""}, follow_redirects=True)
    assert "The stored password was removed" not in same.get_data(as_text=True)
    assert db.session.scalar(db.select(SmtpConfig)).password_encrypted
    moved = admin_client.auth.post("/admin/settings/email/outbound",
                                   {**form, "password": "", "host": "mail.elsewhere.test"}, follow_redirects=True)
    assert "The stored password was removed" in moved.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(db.select(SmtpConfig)).password_encrypted == ""
