"""In a real browser: a tracking pixel in a customer's mail is not fetched until the agent asks."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpdesk.extensions import db

pytestmark = pytest.mark.browser

# A 1×1 transparent GIF.
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@pytest.fixture
def pixel_server():
    """A web server on another origin that counts the times its image is fetched."""
    fetched: list[str] = []

    class Pixel(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's own name
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.send_header("Content-Length", str(len(GIF)))
            self.end_headers()
            self.wfile.write(GIF)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", fetched
    server.shutdown()
    server.server_close()
    thread.join()


def test_remote_images_load_only_after_show_remote_images(signed_in_page, live_url, make_ticket, pixel_server,
                                                          screenshot):
    base, fetched = pixel_server
    ticket = make_ticket(title="Invoice question")
    ticket.description_html = (f'<p>Hello, see our logo <img src="{base}/open.gif?reader=agent" width="40" '
                               'height="40" alt="Logo"></p>')
    db.session.commit()
    page = signed_in_page

    page.goto(f"{live_url}/tickets/{ticket.id}")
    page.wait_for_load_state("networkidle")
    assert fetched == []
    assert page.get_by_text("1 remote image not loaded").is_visible()
    screenshot("ticket-remote-images-blocked")

    page.get_by_role("link", name="Show remote images").click()
    page.wait_for_load_state("networkidle")

    assert fetched == ["/open.gif?reader=agent"]
    assert page.get_by_text("Remote images of this mail are shown").is_visible()
    screenshot("ticket-remote-images-shown")


def test_no_page_breaks_the_content_security_policy(signed_in_page, live_url, make_ticket):
    ticket = make_ticket(title="Policy check")
    refused: list[str] = []
    page = signed_in_page
    page.on("console", lambda message: refused.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text else None)

    for path in ("/tickets", f"/tickets/{ticket.id}", "/contacts", "/customers", "/macros", "/admin/agents",
                 "/admin/settings/email/outbound", "/admin/settings/email/inbound",
                 "/admin/settings/email/templates", "/admin/settings/email/templates/new_ticket",
                 "/admin/settings/email/outbox"):
        page.goto(live_url + path)
        page.wait_for_load_state("networkidle")

    assert refused == []
