"""Agents' ticket screens: list, detail, reply, properties, macros, attachments."""
import io
import re

from helpdesk.extensions import db
from helpdesk.models import Attachment, Comment, Contact, Customer, Macro, Ticket, TicketEvent


def test_ticket_list_filters_and_paginates(admin_client, make_ticket, admin):
    acme = Customer(name="Acme")
    db.session.add(acme)
    db.session.commit()
    for i in range(30):
        make_ticket(title=f"Ticket {i:02d}", email=f"c{i}@x.test")
    first = db.session.get(Ticket, 1)
    first.customer, first.status, first.assignee = acme, "pending", admin
    db.session.commit()

    page1 = admin_client.get("/tickets").get_data(as_text=True)
    assert "30 tickets" in page1 and "Ticket 29" in page1 and "Ticket 00" not in page1
    older = re.search(r'href="(/tickets\?before=[^"]+)"', page1).group(1).replace("&amp;", "&")
    page2 = admin_client.get(older, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Ticket 00" in page2 and "Ticket 29" not in page2 and "<table" not in page2
    for query in (f"customer={acme.id}", "status=pending", "assignee=me", f"assignee={admin.id}", "q=Ticket+00"):
        body = admin_client.get(f"/tickets?{query}").get_data(as_text=True)
        assert "Ticket 00" in body and "Ticket 05" not in body, query
    assert "No tickets match" in admin_client.get("/tickets?status=closed").get_data(as_text=True)


def test_list_serves_only_the_rows_to_htmx(admin_client, make_ticket):
    make_ticket()
    response = admin_client.get("/tickets", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="ticket-rows">') and "<html" not in body
    assert "HX-Request" in response.headers["Vary"]


def test_new_ticket_form_validates_and_creates(admin_client):
    bad = admin_client.auth.post("/tickets/new", {"contact_email": "not an address", "title": "", "description": "x"})
    body = bad.get_data(as_text=True)
    assert 'id="contact_email-error"' in body and 'id="title-error"' in body
    ok = admin_client.auth.post("/tickets/new", {"contact_email": "New.Person@Example.test", "title": "Help",
                                                 "description": "Please", "priority": "high"})
    assert ok.status_code == 302
    ticket = db.session.scalar(db.select(Ticket))
    assert ticket.contact.email == "new.person@example.test" and ticket.priority == "high"
    assert ticket.first_response_due_at is not None and ticket.resolution_due_at > ticket.first_response_due_at


def test_public_reply_and_internal_note(admin_client, make_ticket):
    ticket = make_ticket()
    admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "public", "body": "On it."})
    admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "internal", "body": "Smells like toner."})
    comments = db.session.scalars(db.select(Comment).order_by(Comment.id)).all()
    assert [(c.public, c.body_text) for c in comments] == [(True, "On it."), (False, "Smells like toner.")]
    db.session.refresh(ticket)
    assert ticket.status == "open" and ticket.first_responded_at is not None
    page = admin_client.get(f"/tickets/{ticket.id}").get_data(as_text=True)
    assert "internal note" in page and "Smells like toner." in page
    kinds = db.session.scalars(db.select(TicketEvent.kind)).all()
    assert kinds.count("public-reply-posted") == 1


def test_empty_reply_is_refused_beside_the_field(admin_client, make_ticket):
    ticket = make_ticket()
    response = admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "public", "body": ""})
    assert response.status_code == 422
    assert "Write something first." in response.get_data(as_text=True)


def test_attachment_round_trip_through_the_app(admin_client, make_ticket, app):
    ticket = make_ticket()
    payload = bytes(range(256)) * 1500  # every byte value; under the test client's 500 KB spool-to-disk limit
    admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                           {"visibility": "public", "body": "Logs attached",
                            "files": [(io.BytesIO(payload), "logs.bin"), (io.BytesIO(b"hi"), "note.txt")]},
                           content_type="multipart/form-data")
    stored = db.session.scalars(db.select(Attachment).order_by(Attachment.id)).all()
    assert [a.filename for a in stored] == ["logs.bin", "note.txt"]
    assert stored[0].size == len(payload) and stored[0].comment_id is not None
    download = admin_client.get(f"/attachments/{stored[0].id}")
    assert download.data == payload
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r"att/\d{4}/\d{2}/[0-9a-f]{32}", stored[0].storage_key)


def test_attachments_need_a_signed_in_agent(client, app, admin_client, make_ticket):
    ticket = make_ticket()
    admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                           {"visibility": "public", "body": "x", "files": [(io.BytesIO(b"secret"), "s.txt")]},
                           content_type="multipart/form-data")
    attachment = db.session.scalar(db.select(Attachment))
    admin_client.auth.post("/logout")
    assert admin_client.get(f"/attachments/{attachment.id}").status_code == 302


def test_properties_assign_and_resolve(admin_client, make_ticket, make_agent):
    ticket = make_ticket()
    other = make_agent("bo@example.test", name="Bo")
    admin_client.auth.post(f"/tickets/{ticket.id}/properties",
                           {"status": "pending", "priority": "urgent", "assignee_id": str(other.id)})
    db.session.refresh(ticket)
    assert (ticket.status, ticket.priority, ticket.assignee_id) == ("pending", "urgent", other.id)
    admin_client.auth.post(f"/tickets/{ticket.id}/resolve")
    db.session.refresh(ticket)
    assert ticket.status == "resolved" and ticket.resolved_at is not None
    assert "ticket-resolved" in db.session.scalars(db.select(TicketEvent.kind)).all()


def test_macro_fills_variables_from_the_ticket(admin_client, make_ticket):
    ticket = make_ticket(title="Broken skates")
    macro = Macro(name="Ack", body="Hi $contact_name, about ${ticket_title} (#$ticket_number) — $agent_name. $nope")
    db.session.add(macro)
    db.session.commit()
    response = admin_client.get(f"/tickets/{ticket.id}/macro?macro_id={macro.id}", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert f"Hi Jane Doe, about Broken skates (#{ticket.number}) — Ada Admin. $nope" in body
    assert "Unknown placeholders left as typed: nope" in body


def test_macros_screens(admin_client):
    page = admin_client.get("/macros").get_data(as_text=True)
    assert "No macros yet" in page
    admin_client.auth.post("/macros/new", {"name": "Thanks", "body": "Thanks $contact_name"})
    assert "Thanks" in admin_client.get("/macros").get_data(as_text=True)
    clash = admin_client.auth.post("/macros/new", {"name": "Thanks", "body": "again"})
    assert "Another macro has this name." in clash.get_data(as_text=True)
    macro = db.session.scalar(db.select(Macro))
    admin_client.auth.post(f"/macros/{macro.id}/delete")
    assert db.session.scalar(db.select(Macro)) is None


def test_contact_reply_reopens_a_resolved_ticket(app, make_ticket):
    from helpdesk.services import tickets

    ticket = make_ticket()
    tickets.set_status(ticket, "resolved")
    contact = db.session.scalar(db.select(Contact))
    tickets.add_comment(ticket, "Still broken", contact=contact, source="email")
    db.session.commit()
    assert ticket.status == "open" and ticket.resolved_at is None


def test_ticket_history_lists_what_happened(admin_client, make_ticket):
    ticket = make_ticket()
    admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "public", "body": "Done."})
    admin_client.auth.post(f"/tickets/{ticket.id}/resolve")
    page = admin_client.get(f"/tickets/{ticket.id}").get_data(as_text=True)
    history = page[page.index("<h2>History</h2>"):]
    assert history.index("ticket resolved") < history.index("public reply posted") < history.index("ticket created")
    assert "Ada Admin" in history
