"""The template editor in a real browser: typing re-renders the preview and flags unknown placeholders."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.browser
def test_typing_updates_the_preview_and_flags_unknown_placeholders(page: Page, live_url, admin, make_ticket):
    ticket = make_ticket(title="Scanner jams on page 2", email="bob@customer.test")
    page.goto(live_url + "/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Sign out").or_(page.get_by_role("button", name="Sign out"))).to_be_visible()

    page.goto(live_url + "/admin/settings/email/templates")
    page.get_by_role("link", name="Resolution notification").first.click()
    preview = page.locator("#template-preview")
    expect(preview.locator(".preview-subject dd")).to_have_text("Resolved: Cannot log in after password reset")

    body = page.get_by_role("textbox", name="Body")
    body.click()
    body.press("Control+End")
    body.press_sequentially("\nP.S. Your ticket number was $ticket_number.")
    expect(preview.locator(".preview-text")).to_contain_text("P.S. Your ticket number was 1042.")
    html_part = page.frame_locator("#template-preview iframe.preview-html")
    expect(html_part.locator("body")).to_contain_text("P.S. Your ticket number was 1042.")

    # A typo is flagged in the preview and beside the field, and left as typed.
    body.press_sequentially(" Thanks, $contcat_name")
    expect(preview.locator(".preview-unknown")).to_contain_text("$contcat_name is not a known placeholder")
    expect(page.locator("#body-warnings")).to_contain_text("$contcat_name is not a known placeholder")
    expect(preview.locator(".preview-text")).to_contain_text("Thanks, $contcat_name")

    # A variable button inserts at the cursor of the last focused field.
    page.get_by_role("textbox", name="Subject").click()
    page.get_by_role("textbox", name="Subject").press("End")
    page.get_by_role("textbox", name="Subject").press_sequentially(" (#")
    page.get_by_role("button", name="Insert $ticket_number").click()
    page.get_by_role("textbox", name="Subject").press_sequentially(")")
    expect(page.get_by_role("textbox", name="Subject")).to_have_value("Resolved: $ticket_title (#$ticket_number)")
    expect(preview.locator(".preview-subject dd")).to_have_text("Resolved: Cannot log in after password reset (#1042)")

    # Real ticket values replace the samples.
    page.get_by_label("Values from").select_option(str(ticket.id))
    expect(preview.locator(".preview-subject dd")).to_have_text(f"Resolved: Scanner jams on page 2 (#{ticket.number})")
    expect(html_part.locator("body")).to_contain_text("your request \"Scanner jams on page 2\"")

    ARTIFACTS.mkdir(exist_ok=True)
    # Chromium skips painting a sandboxed (out-of-process) iframe below the fold, so
    # make the whole editor fit the viewport for the screenshot.
    page.set_viewport_size({"width": 1280, "height": 1700})
    expect(html_part.locator("body")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "templates-editor.png"), full_page=True)

    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-success")).to_have_text("Template saved.")
    expect(page.locator("#body-warnings")).to_contain_text("$contcat_name is not a known placeholder")
