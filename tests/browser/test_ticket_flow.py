"""An agent's day in a real browser: sign in, list, open a ticket, reply with an attachment."""
import pytest

pytestmark = pytest.mark.browser


def test_reply_with_attachment_shows_in_thread(signed_in_page, live_url, make_ticket, screenshot, tmp_path):
    page = signed_in_page
    ticket = make_ticket(title="Rocket skates arrived without wheels")
    page.goto(live_url + "/tickets")
    screenshot("ticket-list")
    page.get_by_role("link", name="Rocket skates arrived without wheels").click()
    page.wait_for_url(f"{live_url}/tickets/{ticket.id}")
    upload = tmp_path / "wheels.txt"
    upload.write_bytes(b"four wheels, one per skate\n")
    page.get_by_label("Message").fill("We are sending the wheels today.")
    page.get_by_label("Attach files").set_input_files(str(upload))
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("text=Reply sent.")
    thread = page.locator(".thread")
    assert "We are sending the wheels today." in thread.inner_text()
    link = thread.get_by_role("link", name="wheels.txt")
    assert link.count() == 1
    screenshot("ticket-detail-after-reply")
    response = page.request.get(live_url + link.get_attribute("href"))
    assert response.body() == upload.read_bytes()
