"""Every console page renders in a real browser without script errors (screenshots for a human look)."""
import pytest
from playwright.sync_api import expect

from helpdesk.services.demo import seed

pytestmark = pytest.mark.browser

PAGES = {
    "contacts": "/contacts", "customers": "/customers", "customer-form": "/customers/1", "macros": "/macros",
    "macro-form": "/macros/1/edit", "agents": "/admin/agents", "sla": "/admin/sla", "new-ticket": "/tickets/new",
    "login-error": None,
}


def test_console_pages_render_without_script_errors(page, live_url, app, screenshot):
    login = seed("admin@example.test")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_url + "/login")
    page.get_by_label("Email").fill(login[0])
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("Wrong email or password.").is_visible()
    screenshot("login-error")
    page.get_by_label("Password").fill(login[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_url + "/tickets")
    assert page.locator("#ticket-rows tbody tr").count() == 4
    page.get_by_label("Status").select_option("open")
    page.get_by_label("Search", exact=True).fill("invoice")
    expect(page.locator("#ticket-rows tbody tr")).to_have_count(1, timeout=30_000)  # no eval: the CSP forbids it
    assert "status=open" in page.url
    for name, path in PAGES.items():
        if path:
            response = page.goto(live_url + path)
            assert response.status == 200, path
            screenshot(f"page-{name}")
    assert errors == []
