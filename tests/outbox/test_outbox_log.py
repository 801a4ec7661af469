"""The Email log screen: list, filter, pages, the exact mail as sent, Resend for failed mail; admins only."""
from __future__ import annotations

import re

from helpdesk.extensions import db
from helpdesk.mail.render import RenderedMail
from helpdesk.models import OutboundMessage
from helpdesk.services import outbox

URL = "/admin/settings/email/outbox"


def queue(subject: str, to: str = "jane@customer.test") -> OutboundMessage:
    message = outbox.queue_mail(kind="test", to=[to], rendered=RenderedMail(subject, "Body\n", "<p>Body</p>", ()))
    db.session.commit()
    return message


def test_log_lists_filters_and_pages(app, smtp_server, configure_smtp, admin_client):
    configure_smtp(smtp_server("picky"))
    for n in range(26):
        queue(f"Hello number {n}")
    failed = queue("Nobody is home", to="nobody@customer.test")

    page = admin_client.get(URL).get_data(as_text=True)
    assert "Nobody is home" in page and "Hello number 25" in page and "Hello number 0" not in page
    assert "27 mails" in page and "550 5.1.1 No such user here" in page
    older = re.search(r'href="([^"]+before=[^"]+)"', page).group(1).replace("&amp;", "&")
    assert "Hello number 0" in admin_client.get(older).get_data(as_text=True)

    only_failed = admin_client.get(URL + "?status=failed", headers={"HX-Request": "true"})
    body = only_failed.get_data(as_text=True)
    assert "HX-Request" in only_failed.headers["Vary"] and "<html" not in body
    assert "Nobody is home" in body and "Hello number" not in body
    assert f"{URL}/{failed.id}" in body
    empty = admin_client.get(URL + "?status=bounced").get_data(as_text=True)
    assert "No bounced mails" in empty


def test_detail_shows_the_exact_mail_escaped(app, smtp, admin_client):
    message = queue("Tags <script>alert(1)</script> & more")
    page = admin_client.get(f"{URL}/{message.id}").get_data(as_text=True)
    db.session.refresh(message)
    assert message.status == "sent"
    assert "<script>alert(1)</script>" not in page
    assert "Tags &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert message.message_id.replace("<", "&lt;").replace(">", "&gt;") in page
    assert "Resend" not in page
    raw = admin_client.get(f"{URL}/{message.id}/raw")
    assert raw.mimetype == "message/rfc822" and raw.data == message.raw_sent == smtp.received[0].data


def test_resend_a_failed_mail(app, smtp_server, configure_smtp, admin_client):
    configure_smtp(smtp_server("picky"))
    message = queue("Try me", to="nobody@customer.test")
    page = admin_client.get(f"{URL}/{message.id}").get_data(as_text=True)
    assert "Resend" in page and "data-confirm=" in page
    server = configure_smtp(smtp_server("starttls"))
    # The address was fixed on the server side; the admin resends.
    response = admin_client.auth.post(f"{URL}/{message.id}/resend")
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(OutboundMessage, message.id).status == "sent"
    assert [m.rcpt_tos for m in server.received] == [["nobody@customer.test"]]
    again = admin_client.auth.post(f"{URL}/{message.id}/resend", follow_redirects=True)
    assert "Only failed or bounced mails can be resent." in again.get_data(as_text=True)
    assert len(server.received) == 1


def test_agents_may_not_see_the_log(app, agent_client):
    assert agent_client.get(URL).status_code == 403
    assert agent_client.auth.post(f"{URL}/1/resend").status_code == 403
