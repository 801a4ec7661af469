"""The Authentication settings of Outbound (SMTP) and mailboxes: OAuth fields, validation, write-only secrets."""
from __future__ import annotations

import html as html_lib
import logging
import re

import pytest

from helpdesk.extensions import db
from helpdesk.models import Mailbox, OAuthConnection, SmtpConfig
from helpdesk.services import credential_box, sign_in

OUTBOUND = "/admin/settings/email/outbound"
NEW_MAILBOX = "/admin/settings/email/inbound/new"
CLIENT_SECRET = "Zq7-client-secret-canary"


def outbound_form(**overrides) -> dict:
    data = dict(host="smtp.office365.com", port="587", security="starttls", username="", from_address="help@example.test",
                verify_tls="y", timeout="15", auth_method="oauth2", oauth_provider="microsoft",
                oauth_flow="authorization_code", oauth_client_id="11111111-2222-3333-4444-555555555555",
                oauth_client_secret=CLIENT_SECRET, oauth_tenant="contoso.onmicrosoft.com")
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def mailbox_form(**overrides) -> dict:
    data = dict(name="Support", host="imap.example.test", port="993", security="ssl", username="", folder="INBOX",
                poll_interval="120", after_processing="seen", verify_tls="y", auth_method="oauth2",
                oauth_provider="custom", oauth_flow="authorization_code", oauth_client_id="helpdesk",
                oauth_client_secret=CLIENT_SECRET, oauth_authorize_url="https://id.example.test/authorize",
                oauth_token_url="https://id.example.test/token", oauth_scopes="openid email imap offline_access")
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def error_of(html: str, field_id: str) -> str:
    match = re.search(rf'id="field-{field_id}">.*?<small class="error"[^>]*>([^<]*)</small>', html, re.S)
    return html_lib.unescape(match.group(1)) if match else ""


def test_outbound_saves_oauth_with_the_secret_encrypted_and_never_shown(admin_client, caplog):
    caplog.set_level(logging.DEBUG)
    response = admin_client.auth.post(OUTBOUND, data=outbound_form(save="1"), follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Settings saved" in html
    config = db.session.scalar(db.select(SmtpConfig))
    assert config.auth_method == "oauth2"
    connection = config.oauth_connection
    assert (connection.provider, connection.client_id, connection.tenant) == (
        "microsoft", "11111111-2222-3333-4444-555555555555", "contoso.onmicrosoft.com")
    assert CLIENT_SECRET not in connection.client_secret_encrypted
    assert credential_box().open(connection.client_secret_encrypted) == CLIENT_SECRET
    assert CLIENT_SECRET not in html and CLIENT_SECRET not in caplog.text
    assert "A client secret is stored (encrypted)" in html
    # The screen says what to register and grant.
    assert "http://helpdesk.test/admin/settings/email/oauth/callback" in html
    assert "https://outlook.office.com/SMTP.Send" in html and "offline_access" in html


def test_a_blank_client_secret_keeps_the_stored_one_and_a_new_client_id_drops_it(admin_client):
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1"))
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1", oauth_client_secret=""))
    connection = db.session.scalar(db.select(OAuthConnection))
    assert credential_box().open(connection.client_secret_encrypted) == CLIENT_SECRET

    html = admin_client.auth.post(OUTBOUND, data=outbound_form(save="1", oauth_client_secret="",
                                                               oauth_client_id="another-app")).get_data(as_text=True)
    # A secret belongs to its client ID: the form asks for the new app's secret instead of reusing it.
    assert error_of(html, "oauth_client_secret") == "Enter the client secret (its value, not its ID)."


def test_changing_the_app_forgets_the_tokens(admin_client):
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1"))
    connection = db.session.scalar(db.select(OAuthConnection))
    box = credential_box()
    connection.refresh_token_encrypted, connection.access_token_encrypted = box.seal("rt"), box.seal("at")
    connection.account = "help@example.test"
    db.session.commit()
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1", oauth_client_secret="", oauth_tenant="fabrikam.com"))
    db.session.expire_all()
    connection = db.session.scalar(db.select(OAuthConnection))
    assert connection.refresh_token_encrypted == connection.access_token_encrypted == connection.account == ""


@pytest.mark.parametrize("overrides, field, message", [
    (dict(oauth_client_id=""), "oauth_client_id", "Enter the client (application) ID of your app registration."),
    (dict(oauth_token_url=""), "oauth_token_url", "Enter the provider's token URL."),
    (dict(oauth_token_url="http://id.example.test/token"), "oauth_token_url",
     "Enter the full https:// address, e.g. https://login.example.com/oauth2/token."),
    (dict(oauth_scopes=""), "oauth_scopes", "Enter the scopes the mail server needs, separated by spaces."),
    (dict(oauth_provider="google", oauth_flow="client_credentials"), "oauth_flow",
     "Google offers app-only sign-in only through service accounts: choose the delegated flow."),
    (dict(oauth_flow="client_credentials", enabled="y"), "username", "Enter the mailbox address the app signs in to."),
])
def test_mailbox_oauth_mistakes_are_shown_beside_their_field_and_nothing_is_saved(admin_client, overrides, field,
                                                                                   message):
    html = admin_client.auth.post(NEW_MAILBOX, data=mailbox_form(**overrides)).get_data(as_text=True)
    assert error_of(html, field) == message
    assert db.session.scalar(db.select(Mailbox)) is None


def test_a_mailbox_with_oauth_needs_no_password_to_be_enabled(admin_client):
    response = admin_client.auth.post(NEW_MAILBOX, data=mailbox_form(enabled="y", username="support@example.test"))
    assert response.status_code == 302
    mailbox = db.session.scalar(db.select(Mailbox))
    assert mailbox.enabled and mailbox.auth_method == "oauth2" and mailbox.password_encrypted == ""
    assert mailbox.oauth_connection.scopes == "openid email imap offline_access"


def test_presets_of_the_big_providers_choose_oauth(admin_client):
    html = admin_client.auth.post(NEW_MAILBOX, data={"preset": "microsoft365"}).get_data(as_text=True)
    assert re.search(r'<input checked[^>]*value="oauth2"|value="oauth2"[^>]*checked', html)
    assert re.search(r'<option selected value="microsoft">|<option value="microsoft" selected>', html)
    outbound = admin_client.get(OUTBOUND).get_data(as_text=True)
    assert 'data-oauth-provider="microsoft"' in outbound and 'data-oauth-provider="google"' in outbound


def test_a_microsoft_365_host_with_a_password_is_warned_with_the_dates(admin_client):
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1", auth_method="password", password="pw",
                                                        username="help@example.test"))
    html = admin_client.get(OUTBOUND).get_data(as_text=True)
    warning = re.search(r'<p[^>]*id="microsoft-password-warning">(.*?)</p>', html, re.S)
    assert warning, "no warning for a Microsoft 365 host signed in with a password"
    words = " ".join(warning.group(1).split())
    assert "October 2022" in words and "end of December 2026" in words and "550 5.7.30" in words


def test_testing_before_connecting_says_what_to_do(admin_client):
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1"))
    html = admin_client.auth.post(OUTBOUND + "/test", data=outbound_form(oauth_client_secret="", test_to="a@example.test"),
                                  headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Connect account" in html and "before testing" in html


def test_disconnect_forgets_the_tokens_and_keeps_the_app(admin_client):
    admin_client.auth.post(OUTBOUND, data=outbound_form(save="1"))
    config = db.session.scalar(db.select(SmtpConfig))
    box = credential_box()
    config.oauth_connection.refresh_token_encrypted = box.seal("rt")
    config.oauth_connection.account = "help@example.test"
    db.session.commit()
    assert "Connected as help@example.test" in admin_client.get(OUTBOUND).get_data(as_text=True)

    html = admin_client.auth.post("/admin/settings/email/oauth/disconnect", data={"owner": "smtp"},
                                  follow_redirects=True).get_data(as_text=True)
    assert "Disconnected Outbound (SMTP)" in html and "No account connected" in html
    db.session.expire_all()
    connection = db.session.scalar(db.select(OAuthConnection))
    assert connection.refresh_token_encrypted == "" and connection.client_id
    assert not sign_in.is_connected(db.session.scalar(db.select(SmtpConfig)))


def test_a_callback_without_a_started_flow_is_refused(admin_client):
    html = admin_client.get("/admin/settings/email/oauth/callback?state=forged&code=abc",
                            follow_redirects=True).get_data(as_text=True)
    assert "unknown or was already used" in html
    assert db.session.scalar(db.select(OAuthConnection)) is None


def test_only_admins_may_connect_or_disconnect(agent_client):
    assert agent_client.get("/admin/settings/email/oauth/callback?state=x&code=y").status_code == 403
    assert agent_client.auth.post("/admin/settings/email/oauth/disconnect", data={"owner": "smtp"}).status_code == 403


def test_deleting_a_mailbox_forgets_its_oauth_app_and_tokens(admin_client):
    admin_client.auth.post(NEW_MAILBOX, data=mailbox_form(username="support@example.test"))
    mailbox = db.session.scalar(db.select(Mailbox))
    mailbox.oauth_connection.refresh_token_encrypted = credential_box().seal("rt")
    db.session.commit()
    admin_client.auth.post(f"/admin/settings/email/inbound/{mailbox.id}/delete")
    db.session.expire_all()
    assert db.session.scalar(db.select(Mailbox)) is None
    assert db.session.scalar(db.select(OAuthConnection)) is None
