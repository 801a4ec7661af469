"""Mail both ways over XOAUTH2: connect an account at the real test provider, poll Dovecot, send through SMTP.

The admin's console is the Flask test client; the provider's sign-in and consent pages are driven
with requests, as a browser would. Tokens are checked by Dovecot and the SMTP test server through
the provider's introspection, so an expired, revoked or refreshed-away token is really refused.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from html import unescape
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSession
from helpdesk.models import InboundMail, Mailbox, OAuthConnection, OutboundMessage, SmtpConfig, Ticket
from helpdesk.services import credential_box, sign_in

pytestmark = pytest.mark.services

BASE = "http://127.0.0.1:54321"  # the helpdesk's PUBLIC_BASE_URL: the redirect URI registered at the provider
CALLBACK = "/admin/settings/email/oauth/callback"
SUPPORT = ("support@example.test", "supportpw")
BILLING = ("billing@example.test", "billingpw")


@pytest.fixture
def app_config(app_config, services, smtp_certs, tmp_path) -> dict:
    """Trust the test CAs of Dovecot and the provider and of the SMTP test server, in one bundle."""
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(Path(services["HELPDESK_TEST_CA"]).read_text() + Path(smtp_certs.ca_file).read_text())
    app_config.update(TLS_CA_FILE=str(bundle), PUBLIC_BASE_URL=BASE)
    return app_config


@pytest.fixture
def account_folder(dovecot):
    """Return a function that makes a fresh folder in a Dovecot account (removed after the test)."""
    made = []

    def make(user: tuple[str, str] = SUPPORT) -> str:
        name = f"INBOX.o{uuid.uuid4().hex}"
        with ImapSession(dovecot(username=user[0], password=user[1])) as session:
            session.create_folder(name)
        made.append((user, name))
        return name

    yield make
    for user, name in made:
        with ImapSession(dovecot(username=user[0], password=user[1])) as session:
            session.delete_folder(name)


def customer_mail(subject: str, user: str = SUPPORT[0]) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Casey Customer <casey@customer.test>", user, subject
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content("Hello, the printer is on fire.\n")
    return msg.as_bytes(policy=SMTP)


def append(dovecot, folder: str, raw: bytes, user: tuple[str, str] = SUPPORT) -> None:
    with ImapSession(dovecot(username=user[0], password=user[1])) as session:
        session.append(folder, raw)


def custom_provider(services, use: str) -> dict:
    """Return the Authentication fields that choose the test provider as a Custom OAuth 2.0 provider."""
    return dict(auth_method="oauth2", oauth_provider="custom", oauth_flow="authorization_code",
                oauth_client_id="helpdesk-test", oauth_client_secret="helpdesk-test-secret",
                oauth_authorize_url=services["HELPDESK_TEST_OAUTH_URL"] + "/authorize",
                oauth_token_url=services["HELPDESK_TEST_OAUTH_URL"] + "/token",
                oauth_scopes=f"openid email {use} offline_access")


def mailbox_form(services, folder: str, **overrides) -> dict:
    return {**dict(name="Support", host="127.0.0.1", port=services["HELPDESK_TEST_IMAPS_PORT"], security="ssl",
                   username="", folder=folder, poll_interval="3600", after_processing="seen", verify_tls="y",
                   enabled="y"), **custom_provider(services, "imap"), **overrides}


def outbound_form(services, server, **overrides) -> dict:
    return {**dict(host=server.host, port=str(server.port), security="starttls", username="", verify_tls="y",
                   timeout="10", from_address="support@example.test", from_name="Example Support", save="1"),
            **custom_provider(services, "smtp"), **overrides}


@pytest.fixture
def connect(admin_client, oauth):
    """Return a function that presses Connect account on a settings form and approves at the provider."""
    oauth.redirect_uri = BASE + CALLBACK

    def run(url: str, form: dict, user: tuple[str, str] = SUPPORT, answer: str = "yes") -> str:
        pressed = admin_client.auth.post(url, data={**form, "connect": "1"})
        html = pressed.get_data(as_text=True)
        onward = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', html)
        assert pressed.status_code == 302 or onward, html
        location = unescape(onward.group(1)) if onward else pressed.headers["Location"]
        if location.startswith(oauth.base):
            query = dict(p.split("=", 1) for p in urlsplit(location).query.split("&"))
            assert query["code_challenge_method"] == "S256" and query["code_challenge"] and query["state"]
            browser = oauth.browser()
            back = oauth.consent(browser, oauth.sign_in(browser, location, user), answer)
            location = CALLBACK + "?" + urlencode(back)
        return admin_client.get(location, follow_redirects=True).get_data(as_text=True)

    return run


def poll(admin_client, mailbox_id: int) -> Mailbox:
    admin_client.auth.post(f"/admin/settings/email/inbound/{mailbox_id}/poll")
    db.session.expire_all()
    return db.session.get(Mailbox, mailbox_id)


def stored_tokens(connection_id: int) -> tuple[str, str]:
    db.session.expire_all()
    connection = db.session.get(OAuthConnection, connection_id)
    box = credential_box()
    return box.open(connection.access_token_encrypted), box.open(connection.refresh_token_encrypted)


def test_mail_flows_both_ways_over_xoauth2(admin_client, connect, services, account_folder, dovecot, smtp_server,
                                           caplog, app):
    folder = account_folder()
    page = connect("/admin/settings/email/inbound/new", mailbox_form(services, folder))
    assert "Connected as support@example.test." in page
    mailbox = db.session.scalar(db.select(Mailbox))
    assert mailbox.username == "support@example.test" and mailbox.password_encrypted == ""

    append(dovecot, folder, customer_mail("Printer on fire, by OAuth"))
    mailbox = poll(admin_client, mailbox.id)
    assert mailbox.last_poll_ok, mailbox.last_poll_error
    ticket = db.session.scalar(db.select(Ticket).filter_by(title="Printer on fire, by OAuth"))
    assert ticket is not None and ticket.contact.email == "casey@customer.test"
    assert mailbox.sign_in_ok_at is not None and mailbox.sign_in_failures == 0

    server = smtp_server("starttls")
    page = connect("/admin/settings/email/outbound", outbound_form(services, server))
    assert "Connected as support@example.test." in page
    # Test SMTP signs in with the connected account.
    tested = admin_client.auth.post("/admin/settings/email/outbound/test",
                                    data={**outbound_form(services, server, oauth_client_secret=""),
                                          "test_to": "admin@example.test"}, headers={"HX-Request": "true"})
    assert "Test message sent to admin@example.test" in tested.get_data(as_text=True)

    replied = admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                                     data={"body": "We are on our way with a fire extinguisher.", "visibility": "public"})
    assert replied.status_code == 302
    sent = db.session.scalar(db.select(OutboundMessage).filter_by(kind="agent_reply"))
    db.session.refresh(sent)
    assert sent.status == "sent", sent.last_error
    assert server.handler.xoauth2_logins.count("support@example.test") >= 2  # the test and the reply
    assert any(b"fire extinguisher" in m.data for m in server.received if "casey@customer.test" in m.rcpt_tos)
    config = db.session.scalar(db.select(SmtpConfig))
    assert config.sign_in_ok_at is not None

    # No token, secret or refresh token shows anywhere an admin or a log reader could see it.
    secrets = [*stored_tokens(mailbox.oauth_connection_id), *stored_tokens(config.oauth_connection_id),
               "helpdesk-test-secret"]
    pages = [admin_client.get(url).get_data(as_text=True) for url in (
        "/admin/settings/email/outbound", f"/admin/settings/email/inbound/{mailbox.id}",
        "/admin/settings/email/inbound/log", "/admin/settings/email/outbox", f"/tickets/{ticket.id}")]
    pages.append(admin_client.get(f"/admin/settings/email/inbound/{mailbox.id}/status",
                                  headers={"HX-Request": "true"}).get_data(as_text=True))
    cli = app.test_cli_runner().invoke(args=["email", "poll"])
    assert cli.exit_code == 0, cli.output
    for secret in secrets:
        assert secret and all(secret not in html for html in pages)
        assert secret not in caplog.text and secret not in cli.output


def test_an_expired_access_token_is_refreshed_and_the_rotated_refresh_token_kept(admin_client, connect, services,
                                                                                   account_folder, dovecot, oauth):
    folder = account_folder()
    # This client's access tokens live 4 seconds.
    connect("/admin/settings/email/inbound/new", mailbox_form(services, folder, oauth_client_id="helpdesk-test-short"))
    mailbox = db.session.scalar(db.select(Mailbox))
    first_access, first_refresh = stored_tokens(mailbox.oauth_connection_id)
    time.sleep(5)  # let the access token expire: Dovecot now refuses it
    assert oauth.introspect(first_access) == {"active": False}

    append(dovecot, folder, customer_mail("After the token expired"))
    mailbox = poll(admin_client, mailbox.id)
    assert mailbox.last_poll_ok, mailbox.last_poll_error
    assert db.session.scalar(db.select(Ticket).filter_by(title="After the token expired")) is not None
    access, refresh = stored_tokens(mailbox.oauth_connection_id)
    assert access != first_access and refresh != first_refresh
    # The provider rotated the refresh token: the old one is spent, the stored one works.
    assert oauth.refresh(first_refresh, ("helpdesk-test-short", "helpdesk-test-secret")).json()["error"] == "invalid_grant"
    status = admin_client.get(f"/admin/settings/email/inbound/{mailbox.id}").get_data(as_text=True)
    assert "Access token" in status and "valid until" in status


def test_a_token_the_server_refuses_is_renewed_once_and_the_poll_goes_on(admin_client, connect, services,
                                                                        account_folder, dovecot, oauth):
    folder = account_folder()
    connect("/admin/settings/email/inbound/new", mailbox_form(services, folder))
    mailbox = db.session.scalar(db.select(Mailbox))
    access, _ = stored_tokens(mailbox.oauth_connection_id)
    assert oauth.revoke(access, hint="access_token").status_code == 200  # still "valid" to the helpdesk

    append(dovecot, folder, customer_mail("After the access token was revoked"))
    mailbox = poll(admin_client, mailbox.id)
    assert mailbox.last_poll_ok, mailbox.last_poll_error
    assert mailbox.sign_in_failures == 0
    assert stored_tokens(mailbox.oauth_connection_id)[0] != access


def test_revoked_consent_shows_the_banner_mails_admins_once_and_reconnecting_recovers(
        admin_client, admin, connect, services, account_folder, dovecot, oauth):
    folder = account_folder(BILLING)
    form = mailbox_form(services, folder, name="Billing")
    connect("/admin/settings/email/inbound/new", form, user=BILLING)
    mailbox = db.session.scalar(db.select(Mailbox))
    assert poll(admin_client, mailbox.id).last_poll_ok

    # The account's owner (or its admin) revokes the app's access at the provider.
    revoked = requests.post(services["HELPDESK_TEST_OAUTH_ADMIN"] + "/test/revoke-user-tokens",
                            json={"username": BILLING[0]}, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["revoked"] >= 1
    append(dovecot, folder, customer_mail("Waits while the sign-in is broken", BILLING[0]), user=BILLING)
    for _ in range(3):
        mailbox = poll(admin_client, mailbox.id)
        assert not mailbox.last_poll_ok
    assert "invalid_grant" in mailbox.last_poll_error and "connect the account again" in mailbox.last_poll_error
    assert mailbox.sign_in_incident_at is not None
    alerts = list(db.session.scalars(db.select(OutboundMessage).filter_by(kind="sign_in_alert")))
    assert len(alerts) == 1 and alerts[0].to == admin.email and "“Billing”" in alerts[0].subject
    html = admin_client.get("/tickets").get_data(as_text=True)
    assert "Mail sign-in is failing" in html and "“Billing”" in html
    # Nothing is lost: the mail waits on the server.
    assert db.session.scalar(db.select(Ticket).filter_by(title="Waits while the sign-in is broken")) is None

    page = connect(f"/admin/settings/email/inbound/{mailbox.id}", {**form, "oauth_client_secret": ""}, user=BILLING)
    assert "Connected as billing@example.test." in page
    mailbox = poll(admin_client, mailbox.id)
    assert mailbox.last_poll_ok, mailbox.last_poll_error
    assert db.session.scalar(db.select(Ticket).filter_by(title="Waits while the sign-in is broken")) is not None
    alerts = list(db.session.scalars(db.select(OutboundMessage).filter_by(kind="sign_in_alert")
                                     .order_by(OutboundMessage.id)))
    assert len(alerts) == 2 and "works again" in alerts[1].subject
    assert "Mail sign-in is failing" not in admin_client.get("/tickets").get_data(as_text=True)


def test_declined_consent_and_a_wrong_secret_are_explained(connect, services, account_folder):
    folder = account_folder()
    page = connect("/admin/settings/email/inbound/new", mailbox_form(services, folder), answer="no")
    assert "Not connected: The sign-in was cancelled or consent was declined" in page
    mailbox = db.session.scalar(db.select(Mailbox))
    assert not sign_in.is_connected(mailbox)

    page = connect(f"/admin/settings/email/inbound/{mailbox.id}",
                   mailbox_form(services, folder, oauth_client_secret="not-the-secret"))
    assert "Not connected: The provider refused the client ID or client secret" in page
    assert "invalid_client" in page


def test_app_only_sign_in_with_client_credentials(admin_client, connect, services, account_folder, dovecot):
    folder = account_folder()
    page = connect("/admin/settings/email/inbound/new",
                   mailbox_form(services, folder, oauth_flow="client_credentials", username=SUPPORT[0],
                                oauth_authorize_url=""))
    assert "Connected (app-only) as support@example.test." in page
    mailbox = db.session.scalar(db.select(Mailbox))
    append(dovecot, folder, customer_mail("Read by the app itself"))
    mailbox = poll(admin_client, mailbox.id)
    assert mailbox.last_poll_ok, mailbox.last_poll_error
    assert db.session.scalar(db.select(Ticket).filter_by(title="Read by the app itself")) is not None


def test_workers_refreshing_at_once_keep_the_newest_refresh_token(app, connect, services, account_folder, oauth):
    folder = account_folder()
    connect("/admin/settings/email/inbound/new", mailbox_form(services, folder, oauth_client_id="helpdesk-test-short"))
    connection_id = db.session.scalar(db.select(Mailbox)).oauth_connection_id
    time.sleep(5)  # every worker finds the access token expired
    got, failed = [], []

    def worker():
        with app.app_context():
            try:
                got.append(sign_in.access_token(connection_id, "imap"))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                failed.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [] and len(got) == 4
    assert all(oauth.introspect(token)["active"] for token in set(got))
    # The stored refresh token is the newest: the provider still honours it.
    _, refresh = stored_tokens(connection_id)
    assert oauth.refresh(refresh, ("helpdesk-test-short", "helpdesk-test-secret")).status_code == 200


def test_inbound_log_and_tickets_show_nothing_of_a_failed_poll(admin_client, connect, services, account_folder):
    """A poll that cannot sign in records no outcome: the mail is still on the server, not lost."""
    folder = account_folder()
    connect("/admin/settings/email/inbound/new", mailbox_form(services, folder))
    mailbox = db.session.scalar(db.select(Mailbox))
    sign_in.disconnect(mailbox)
    db.session.commit()
    mailbox = poll(admin_client, mailbox.id)
    assert not mailbox.last_poll_ok and "Connect account" in mailbox.last_poll_error
    assert db.session.scalar(db.select(InboundMail)) is None


def test_test_imap_connection_signs_in_with_the_connected_account(admin_client, connect, services, account_folder):
    folder = account_folder()
    form = mailbox_form(services, folder)
    connect("/admin/settings/email/inbound/new", form)
    mailbox = db.session.scalar(db.select(Mailbox))
    html = admin_client.auth.post(f"/admin/settings/email/inbound/{mailbox.id}/test",
                                  data={**form, "oauth_client_secret": "", "username": SUPPORT[0]},
                                  headers={"HX-Request": "true"}).get_data(as_text=True)
    assert f"Connected and logged in; {folder} has 0 messages" in html

    # Tokens of another account than the mailbox's login: the server refuses them, and says why.
    mailbox.oauth_connection.account = BILLING[0]
    db.session.commit()
    html = admin_client.auth.post(f"/admin/settings/email/inbound/{mailbox.id}/test",
                                  data={**form, "oauth_client_secret": ""},
                                  headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "The server refused the OAuth token for &#39;billing@example.test&#39;" in html
    assert "the account the tokens belong to is not this mailbox" in html


def test_a_send_refused_for_its_sign_in_opens_the_incident_and_the_mail_waits(
        admin_client, admin, connect, services, smtp_server, make_ticket):
    server = smtp_server("starttls")
    connect("/admin/settings/email/outbound", outbound_form(services, server), user=BILLING)
    requests.post(services["HELPDESK_TEST_OAUTH_ADMIN"] + "/test/revoke-user-tokens",
                  json={"username": BILLING[0]}, timeout=10).raise_for_status()
    # Revoked, yet unexpired as far as the helpdesk knows: the server refuses it, the refresh is refused.
    ticket = make_ticket()
    replied = admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                                     data={"body": "Your printer is fixed.", "visibility": "public"})
    assert replied.status_code == 302
    db.session.expire_all()
    reply = db.session.scalar(db.select(OutboundMessage).filter_by(kind="agent_reply"))
    assert reply.status == "queued" and "invalid_grant" in reply.last_error
    config = db.session.scalar(db.select(SmtpConfig))
    assert config.sign_in_incident_at is not None
    assert "Mail sign-in is failing" in admin_client.get("/tickets").get_data(as_text=True)
    assert not any(b"Your printer is fixed." in m.data for m in server.received)
