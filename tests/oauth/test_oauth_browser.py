"""OAuth 2.0 in a real browser: choose Custom, Connect account, approve at the provider, mail becomes a ticket."""
from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import pytest
import requests

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSession
from helpdesk.models import OutboundMessage, Ticket

pytestmark = [pytest.mark.browser, pytest.mark.services]
BILLING = ("billing@example.test", "billingpw")


@pytest.fixture
def app_config(app_config, services) -> dict:
    app_config["TLS_CA_FILE"] = services["HELPDESK_TEST_CA"]
    return app_config


@pytest.fixture
def browser_context_args(browser_context_args):
    # The test provider's certificate is signed by the test CA, which Chromium does not know.
    return {**browser_context_args, "ignore_https_errors": True}


@pytest.fixture
def billing_folder(dovecot):
    name = f"INBOX.b{uuid.uuid4().hex}"
    with ImapSession(dovecot(username=BILLING[0], password=BILLING[1])) as session:
        session.create_folder(name)
    yield name
    with ImapSession(dovecot(username=BILLING[0], password=BILLING[1])) as session:
        session.delete_folder(name)


def _append(dovecot, folder: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Casey Customer <casey@customer.test>", BILLING[0], subject
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content("Our invoice is wrong.\n")
    with ImapSession(dovecot(username=BILLING[0], password=BILLING[1])) as session:
        session.append(folder, msg.as_bytes(policy=SMTP))


def _connect_at_provider(page, live_url) -> None:
    """Press Connect account, sign in and approve on the provider's pages, and come back."""
    page.get_by_role("button", name="Connect account").click()
    authorize = page.get_by_role("button", name="Authorize")
    authorize.or_(page.get_by_label("Username")).first.wait_for()
    if not authorize.is_visible():  # the provider remembers a signed-in person
        page.get_by_label("Username").fill(BILLING[0])
        page.get_by_label("Password").fill(BILLING[1])
        page.get_by_role("button", name="Sign in").click()
    authorize.click()
    page.wait_for_url(live_url + "/admin/settings/email/inbound/*")


def test_connect_a_custom_provider_poll_lose_and_regain_the_sign_in(signed_in_page, live_url, app, services,
                                                                    billing_folder, dovecot, screenshot, admin):
    app.config["PUBLIC_BASE_URL"] = live_url  # the redirect URI the provider sends the admin back to
    page = signed_in_page
    page.goto(live_url + "/admin/settings/email/inbound/new")
    page.get_by_label("Name", exact=True).fill("Billing")
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(services["HELPDESK_TEST_IMAPS_PORT"])
    page.get_by_label("Mailbox", exact=True).fill(billing_folder)
    page.get_by_label("Enabled: poll this mailbox").check()

    page.get_by_role("radio", name="OAuth 2.0").check()
    assert not page.locator("#password").is_visible()
    page.get_by_label("Provider").select_option(label="Custom")
    assert page.locator("#oauth-redirect-uri").inner_text() == live_url + "/admin/settings/email/oauth/callback"
    page.get_by_label("Client ID").fill("helpdesk-test")
    page.get_by_label("Client secret").fill("helpdesk-test-secret")
    page.get_by_label("Authorize URL").fill(services["HELPDESK_TEST_OAUTH_URL"] + "/authorize")
    page.get_by_label("Token URL").fill(services["HELPDESK_TEST_OAUTH_URL"] + "/token")
    page.get_by_label("Scopes").fill("openid email imap offline_access")
    screenshot("oauth-settings-custom")
    _connect_at_provider(page, live_url)
    assert "Connected as billing@example.test." in page.locator(".flash-success").inner_text()
    assert page.locator("#oauth-connected").inner_text() == "Connected as billing@example.test"
    assert page.get_by_label("Username", exact=True).input_value() == BILLING[0]

    _append(dovecot, billing_folder, "Invoice 42 is wrong")
    page.get_by_role("button", name="Poll now").click()
    page.locator("#inbound-status .badge.ok").wait_for()
    assert db.session.scalar(db.select(Ticket).filter_by(title="Invoice 42 is wrong")) is not None
    health = page.locator("#sign-in-health")
    page.reload()
    assert "OAuth 2.0 · Custom" in health.inner_text() and "valid until" in health.inner_text()
    screenshot("oauth-connected-mailbox")

    # Consent revoked at the provider: the next poll fails, and every page says so.
    requests.post(services["HELPDESK_TEST_OAUTH_ADMIN"] + "/test/revoke-user-tokens",
                  json={"username": BILLING[0]}, timeout=10).raise_for_status()
    page.get_by_role("button", name="Poll now").click()
    page.locator("#inbound-status .badge.bad").wait_for()
    page.goto(live_url + "/tickets")
    banner = page.get_by_role("alert")
    assert "Mail sign-in is failing" in banner.inner_text() and "invalid_grant" in banner.inner_text()
    screenshot("oauth-sign-in-banner")
    assert db.session.scalar(db.select(db.func.count()).select_from(OutboundMessage)
                             .filter_by(kind="sign_in_alert")) == 1

    banner.get_by_role("link", name="Fix the sign-in").click()
    _connect_at_provider(page, live_url)
    page.get_by_role("button", name="Poll now").click()
    page.locator("#inbound-status .badge.ok").wait_for()
    page.goto(live_url + "/tickets")
    assert page.get_by_role("alert").count() == 0
    subjects = db.session.scalars(db.select(OutboundMessage.subject).filter_by(kind="sign_in_alert")
                                  .order_by(OutboundMessage.id)).all()
    assert len(subjects) == 2 and "works again" in subjects[1]
