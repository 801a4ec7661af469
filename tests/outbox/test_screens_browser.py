"""The invitation and Email log screens in a real browser, with screenshots to look at."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def test_invite_an_agent_then_read_the_email_log_and_accept(signed_in_page, live_url, smtp_server, configure_smtp,
                                                           screenshot):
    page = signed_in_page
    smtp = configure_smtp(smtp_server("picky"))
    page.goto(live_url + "/admin/agents")
    page.locator("#invite-email").fill("nia@helpdesk.test")
    page.locator("#invite-name").fill("Nia New")
    screenshot("agents-invite-form")
    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_selector("text=Invitation sent to nia@helpdesk.test")
    assert "nia@helpdesk.test" in page.locator("table.list").nth(1).inner_text()
    screenshot("agents-after-invite")

    page.goto(live_url + "/admin/settings/email/outbox")
    assert page.get_by_role("link", name="Email log").get_attribute("aria-current") == "page"
    row = page.locator("#outbox-rows tbody tr").first
    assert "sent" in row.inner_text() and "nia@helpdesk.test" in row.inner_text()
    screenshot("email-log-list")
    page.get_by_label("Status").select_option("failed")
    page.wait_for_selector("text=No failed mails")
    page.get_by_label("Status").select_option("")
    page.get_by_role("link", name="You are invited to join the Example Support helpdesk").click()
    raw = page.locator("pre.raw-mail").inner_text()
    assert "Message-ID: <hd." in raw and "/invite/" in raw
    screenshot("email-log-detail")

    body = smtp.received[0].message.get_body(("plain",)).get_content()
    link = re.search(r"http://helpdesk\.test(/invite/\S+)", body).group(1)
    page.get_by_role("button", name="Sign out").click()
    page.goto(live_url + link)
    page.get_by_label("Your name").fill("Nia New")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Repeat the password").fill("short")
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_selector("text=Use at least 8 characters")
    screenshot("invite-accept-error")
    page.get_by_label("Password", exact=True).fill("a good password")
    page.get_by_label("Repeat the password").fill("a good password")
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(live_url + "/tickets")
    assert "Nia New (agent)" in page.locator(".signout").inner_text()
    page.goto(live_url + link)
    assert "This invitation was already used" in page.inner_text("main")
    screenshot("invite-used")


def test_resend_a_failed_mail_in_the_browser(signed_in_page, live_url, smtp_server, configure_smtp, screenshot):
    from helpdesk.extensions import db
    from helpdesk.mail.render import RenderedMail
    from helpdesk.services import outbox

    page = signed_in_page
    configure_smtp(smtp_server("picky"))
    message = outbox.queue_mail(kind="test", to=["nobody@customer.test"],
                                rendered=RenderedMail("Where are you?", "Hello\n", "<p>Hello</p>", ()))
    db.session.commit()
    page.goto(f"{live_url}/admin/settings/email/outbox/{message.id}")
    assert "550 5.1.1 No such user here" in page.inner_text("main")
    screenshot("email-log-failed-detail")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Resend").click()
    page.wait_for_selector("text=is queued again")
    assert page.locator(".badge").first.inner_text() == "failed"  # refused again, and the page says so
