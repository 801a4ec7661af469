"""The search box, "load older", the customer type-ahead and the retention screen in a real browser."""
import pytest
from playwright.sync_api import expect

from helpdesk.extensions import db
from helpdesk.models import Customer, InboundMail
from helpdesk.services import tickets as ticket_service

pytestmark = pytest.mark.browser


def test_search_load_older_and_type_ahead(signed_in_page, live_url, make_ticket, screenshot):
    page = signed_in_page
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    acme = Customer(name="Acme Rockets")
    db.session.add(acme)
    db.session.add_all(Customer(name=f"Customer {n:02d}") for n in range(30))
    db.session.commit()
    for n in range(30):
        make_ticket(title=f"Order {n} is late", email=f"c{n}@x.test", customer=acme if n % 2 else None)
    ticket = make_ticket(title="Scanner jams", email="erin@scanners.test")
    ticket_service.add_comment(ticket, "The feeder roller is worn; a new roller is on its way.", contact=ticket.contact)
    db.session.commit()

    page.goto(live_url + "/tickets")
    assert page.locator("#ticket-rows tbody tr:not(.load-more)").count() == 25
    page.get_by_role("link", name="Load older tickets").click()
    expect(page.locator("#ticket-rows tbody tr:not(.load-more)")).to_have_count(31, timeout=30_000)
    screenshot("tickets-load-older")

    page.get_by_label("Search", exact=True).fill("roller")
    expect(page.locator("#ticket-rows tbody tr")).to_have_count(1, timeout=30_000)
    assert page.locator("#ticket-rows mark").first.inner_text().lower() == "roller"
    screenshot("tickets-search")

    page.get_by_label("Search", exact=True).fill("")
    page.get_by_label("Customer").fill("rock")
    expect(page.locator("#customer-options option")).to_have_count(1, timeout=30_000)
    page.get_by_label("Customer").fill("Acme Rockets")
    page.get_by_label("Customer").press("Enter")
    expect(page.locator("#ticket-rows tbody tr:not(.load-more)")).to_have_count(15, timeout=30_000)
    assert "customer=Acme%20Rockets" in page.url
    screenshot("tickets-customer-filter")
    assert errors == []


def test_log_search_and_retention_screens(signed_in_page, live_url, screenshot):
    page = signed_in_page
    for n in range(60):
        db.session.add(InboundMail(channel="cli", dedupe_key=f"<{n}@x>", outcome="created", sender=f"s{n % 3}@shop.test",
                                   subject=f"Order {n} delayed", message_id=f"<{n}@x>", size=2000))
    db.session.commit()
    page.goto(live_url + "/admin/settings/email/inbound/log")
    assert page.locator("#inbound-rows tbody tr[id]").count() == 50
    page.get_by_label("Search sender, subject or Message-ID").fill("s1@shop.test")
    expect(page.locator("#inbound-rows tbody tr[id]")).to_have_count(20, timeout=30_000)
    screenshot("inbound-log-search")
    page.goto(live_url + "/admin/settings/email/retention")
    assert page.get_by_role("heading", name="Retention of raw mail").is_visible()
    screenshot("retention")
