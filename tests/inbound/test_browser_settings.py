"""The Inbound (IMAP) screen in a real browser: fill the settings, Load folders, Test IMAP connection."""
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_settings_screen_loads_folders_and_tests_the_connection(signed_in_page, live_url, services, folder,
                                                                screenshot):
    page = signed_in_page
    page.goto(live_url + "/admin/settings/email/inbound")
    assert page.title().startswith("Inbound (IMAP)")
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(services["HELPDESK_TEST_IMAPS_PORT"])
    page.get_by_label("Security", exact=True).select_option("ssl")
    page.get_by_label("Username", exact=True).fill("support@example.test")
    page.locator("#password").fill("supportpw")

    page.get_by_role("button", name="Load folders").click()
    choice = page.get_by_label("Folders on the server")
    choice.wait_for()
    options = choice.locator("option").all_inner_texts()
    assert folder in options and "INBOX" in options
    choice.select_option(folder)
    assert page.get_by_label("Mailbox", exact=True).input_value() == folder

    page.get_by_role("button", name="Test IMAP connection").click()
    result = page.locator("#inbound-test-result .result")
    result.wait_for()
    assert "Connection works" in result.inner_text()
    assert f"{folder} has 0 messages" in result.inner_text()
    assert "supportpw" not in page.content()
    # The password typed stays in its field (the browser's, not one sent back by the server).
    assert page.locator("#password").input_value() == "supportpw"
    screenshot("inbound-settings")

    page.get_by_label("Enabled: poll this mailbox").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=Mailbox “Support” saved.")
    assert page.locator("#password").input_value() == ""
    assert "supportpw" not in page.content()
    screenshot("inbound-settings-saved")


def test_inbound_log_in_the_browser(signed_in_page, live_url, make_mailbox, append, customer_mail, screenshot):
    from helpdesk.services import inbound

    mailbox = make_mailbox()
    append(customer_mail(1, attachment=b"%PDF-1.4 tiny"), customer_mail(2, sender="support@example.test"))
    assert inbound.poll_mailbox(mailbox.id).ok
    page = signed_in_page
    page.goto(live_url + "/admin/settings/email/inbound/log")
    rows = page.locator("#inbound-rows tbody tr")
    assert rows.count() == 2
    page.get_by_label("Outcome").select_option("created")
    expect(page.locator("#inbound-rows tbody tr")).to_have_count(1, timeout=30_000)  # no eval: the CSP forbids it
    assert "created" in rows.first.inner_text()
    page.get_by_label("Outcome").select_option("")
    expect(page.locator("#inbound-rows tbody tr")).to_have_count(2, timeout=30_000)  # no eval: the CSP forbids it
    screenshot("inbound-log")
    # Only the Inbound log tab is current (not "Inbound (IMAP)", whose endpoint is a prefix of this one).
    assert page.locator(".tabs a[aria-current=page]").all_inner_texts() == ["Inbound log"]
