"""Remote images in inbound HTML wait for "Show remote images"; inline images show at once."""
from __future__ import annotations

from helpdesk.extensions import db
from helpdesk.mail.html import block_remote_images, sanitise
from helpdesk.models import Comment

PIXEL = "https://tracker.example/open.gif?who=42"
INLINE = "/attachments/7?inline=1"


def csp_images(response) -> str:
    header = response.headers["Content-Security-Policy"]
    return next(part for part in header.split(";") if part.strip().startswith("img-src"))


def test_remote_images_are_taken_out_and_counted():
    html = sanitise(f'<p>Hi<img src="{PIXEL}" width="1" height="1"><img src="cid:logo" alt="Logo">'
                    '<img src="//cdn.example/a.png"><img src="http://old.example/b.png" alt="Chart">'
                    '<img src="data:image/png;base64,iVBORw0KGgo="></p>', {"logo": INLINE})

    shown, blocked = block_remote_images(html)

    assert blocked == 3
    assert "tracker.example" not in shown and "cdn.example" not in shown and "old.example" not in shown
    assert f'src="{INLINE}"' in shown.replace("&amp;", "&") and "data:image/png" in shown
    assert 'alt="Chart"' in shown  # the text stands in for the picture


def test_a_ticket_shows_no_remote_image_until_asked(agent_client, make_ticket):
    ticket = make_ticket()
    ticket.description_html = f'<p>Printer on fire <img src="{PIXEL}"> <img src="{INLINE}"></p>'
    comment = Comment(ticket_id=ticket.id, body_text="Still burning", public=True, source="email",
                      author_contact_id=ticket.contact_id, body_html=f'<p>Still burning <img src="{PIXEL}&amp;c=2"></p>')
    db.session.add(comment)
    db.session.commit()

    page = agent_client.get(f"/tickets/{ticket.id}")
    html = page.get_data(as_text=True)
    assert "tracker.example" not in html
    assert "inline=1" in html
    assert "1 remote image not loaded" in html and "Show remote images" in html
    assert "http" not in csp_images(page)

    shown = agent_client.get(f"/tickets/{ticket.id}?remote_images=description")
    html = shown.get_data(as_text=True)
    assert "https://tracker.example/open.gif" in html.replace("&amp;", "&")
    assert "c=2" not in html  # only the mail asked for
    assert "Remote images of this mail are shown" in html
    assert "https:" in csp_images(shown)

    reply = agent_client.get(f"/tickets/{ticket.id}?remote_images=comment-{comment.id}").get_data(as_text=True)
    assert "c=2" in reply and "who=42" not in reply.replace("&amp;", "&").split(f'id="comment-{comment.id}"')[0]
