"""Outbound (SMTP) in a real browser: presets, Test SMTP against a real STARTTLS server, then Save."""
from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.browser

servers = sys.modules["helpdesk_tests_smtp_servers"]  # loaded by tests/conftest.py
URL = "/admin/settings/email/outbound"
WRONG = "Wr0ng-canary-7731!"

# Records, at the moment htmx sends the request, whether the spinner shows and the button is disabled.
WATCH_REQUESTS = """
window.seenDuringRequest = [];
document.body.addEventListener("htmx:beforeSend", function () {
  var spinner = document.getElementById("smtp-test-spinner");
  window.seenDuringRequest.push({spinner: getComputedStyle(spinner).display !== "none",
                                 disabled: document.getElementById("smtp-test-button").disabled});
});
"""


def test_fill_test_smtp_and_save(signed_in_page, live_url, smtp_server, screenshot, admin):
    server = smtp_server("starttls")
    page = signed_in_page
    page.goto(live_url + URL)
    page.evaluate(WATCH_REQUESTS)

    # A preset fills the server and chooses OAuth 2.0; picking a security suggests its port.
    page.get_by_role("button", name="Microsoft 365").click()
    assert page.get_by_label("Host").input_value() == "smtp.office365.com"
    assert page.get_by_label("Port").input_value() == "587"
    assert page.get_by_role("radio", name="OAuth 2.0").is_checked()
    assert page.get_by_label("Provider").input_value() == "microsoft"
    assert not page.locator("#password").is_visible()
    page.get_by_label("Security").select_option(label="SSL/TLS")
    assert page.get_by_label("Port").input_value() == "465"
    page.get_by_label("Security").select_option(label="None")
    assert page.get_by_label("Port").input_value() == "25"
    # Verification off warns.
    warning = page.locator("#verify-off-warning")
    assert not warning.is_visible()
    page.get_by_label("Verify TLS certificate").uncheck()
    assert warning.is_visible()
    page.get_by_label("Verify TLS certificate").check()
    assert not warning.is_visible()

    page.get_by_role("radio", name="Password").check()
    page.get_by_label("Host").fill(server.host)
    page.get_by_label("Security").select_option(label="STARTTLS")
    page.get_by_label("Port").fill(str(server.port))
    page.get_by_label("Username").fill(server.username)
    page.locator("#password").fill(server.password)
    page.get_by_label("From Address").fill("support@helpdesk.test")
    page.get_by_label("From name").fill("Helpdesk Support")
    assert page.get_by_label("Send test to").input_value() == admin.email

    page.get_by_role("button", name="Test SMTP").click()
    result = page.locator("#smtp-test-result .result.ok")
    result.wait_for()
    assert f"Test message sent to {admin.email}" in result.inner_text()
    assert "250 2.0.0 Message 1 accepted for delivery" in result.inner_text()
    assert not page.locator("#smtp-test-spinner").is_visible()
    assert page.get_by_role("button", name="Test SMTP").is_enabled()
    assert page.evaluate("window.seenDuringRequest") == [{"spinner": True, "disabled": True}]
    assert [m.rcpt_tos for m in server.received] == [[admin.email]]
    # Only the result was swapped: the typed password is still in its field for Save.
    assert page.locator("#password").input_value() == server.password

    page.locator("#password").fill(WRONG)
    page.get_by_role("button", name="Test SMTP").click()
    failure = page.locator("#smtp-test-result .result.bad")
    failure.wait_for()
    text = failure.inner_text()
    assert "rejected the username or password" in text
    assert "535 5.7.8 Authentication credentials invalid" in text
    assert WRONG not in page.content().replace(f'value="{WRONG}"', "")  # only in the input's live value
    assert not page.locator("#smtp-test-spinner").is_visible()
    assert len(server.received) == 1
    screenshot("outbound-settings")

    page.locator("#password").fill(server.password)
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=Settings saved")
    assert page.get_by_text("Last changed by Ada Admin at").is_visible()
    assert page.locator("#password").get_attribute("placeholder") == "•••••• (stored — leave blank to keep)"
    assert page.locator("#password").input_value() == ""
    assert server.password not in page.content()
    screenshot("outbound-settings-saved")
