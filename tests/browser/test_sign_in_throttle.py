"""In a real browser: repeated wrong passwords pause sign-in with a message beside the field."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def app_config(app_config) -> dict:
    app_config["LOGIN_LIMIT_ACCOUNT"] = "3 per 15 minutes"
    return app_config


def test_sign_in_pauses_after_repeated_failures(page, live_url, admin, screenshot):
    page.goto(live_url + "/login")
    for _ in range(4):
        page.get_by_label("Email").fill(admin.email)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()

    message = page.locator("#field-password .error")
    assert "Too many failed sign-ins for this account" in message.inner_text()
    screenshot("login-throttled")

    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url.startswith(live_url + "/login")  # the right password waits too
