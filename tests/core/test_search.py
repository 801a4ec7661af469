"""Full-text search of tickets and of the mail logs, kept in step by the database's triggers."""
from __future__ import annotations

import io
import re

from sqlalchemy import text

from helpdesk import search
from helpdesk.extensions import db
from helpdesk.models import Comment, Contact, InboundMail, OutboundMessage, Ticket
from helpdesk.services import tickets as ticket_service
from helpdesk.services.attachments import add_attachment


def found(query: str, **filters) -> list[int]:
    return [hit.ticket_id for hit in search.search_tickets(query, **filters).hits]


def listed(client, query: str) -> str:
    return client.get("/tickets", query_string={"q": query}).get_data(as_text=True)


def test_a_word_only_in_a_comment_finds_its_ticket_with_a_highlighted_excerpt(admin_client, make_ticket):
    ticket = make_ticket(title="Printer trouble", description="It smokes.")
    make_ticket(title="Other", email="someone@else.test")
    ticket_service.add_comment(ticket, "The fuser unit was replaced <today>.", contact=ticket.contact)
    db.session.commit()

    assert found("fuser") == [ticket.id]
    assert found("fusers") == [ticket.id]  # stemmed alike on both databases
    page = listed(admin_client, "fuser")
    assert f"/tickets/{ticket.id}" in page and "<mark>fuser</mark>" in page
    assert "&lt;today" in page and "<today>" not in page  # the excerpt is escaped
    assert "comment</span>" in page


def test_a_word_only_in_an_attachment_filename(admin_client, make_ticket):
    ticket = make_ticket(title="Invoice question")
    make_ticket(title="Unrelated", email="other@else.test")
    add_attachment(ticket, io.BytesIO(b"%PDF"), filename="quarterly-statement-zx81.pdf",
                   content_type="application/pdf")
    db.session.commit()

    assert found("zx81") == [ticket.id]
    assert found("quarterly statement") == [ticket.id]
    assert "attachment</span>" in listed(admin_client, "zx81")


def test_a_contact_address_or_name_finds_the_contacts_tickets(make_ticket):
    first = make_ticket(title="One", email="bernadette@wholesale-pumps.test")
    second = make_ticket(title="Two", email="bernadette@wholesale-pumps.test")
    make_ticket(title="Three", email="other@else.test")

    assert sorted(found("wholesale")) == sorted([first.id, second.id])
    assert sorted(found("bernadette@wholesale-pumps.test")) == sorted([first.id, second.id])
    contact = db.session.scalar(db.select(Contact).filter_by(email="other@else.test"))
    contact.name = "Quentin Vandersloot"
    db.session.commit()
    assert len(found("vandersloot")) == 1


def test_an_internal_note_is_found_by_agents_and_reaches_no_customer(admin_client, make_ticket):
    ticket = make_ticket(title="Login fails")
    admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "internal", "body": "Suspect xyzzyplugh."})
    admin_client.auth.post(f"/tickets/{ticket.id}/comments", {"visibility": "public", "body": "We are on it."})

    page = listed(admin_client, "xyzzyplugh")
    assert f"/tickets/{ticket.id}" in page and "internal note</span>" in page
    # What a customer sees is the mail the helpdesk sends: the reply went out, the note did not.
    mails = db.session.scalars(db.select(OutboundMessage)).all()
    assert any("We are on it." in m.text_body for m in mails)
    for mail in mails:
        assert "xyzzyplugh" not in " ".join((mail.subject, mail.text_body, mail.html_body or "", mail.to))


def test_agents_only(client, make_ticket):
    make_ticket()
    response = client.get("/tickets", query_string={"q": "printer"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_deleted_or_merged_ticket_leaves_the_results(make_ticket):
    kept = make_ticket(title="Scanner jams on page two")
    merged = make_ticket(title="Scanner jams again", email="bob@customer.test")
    gone = make_ticket(title="Scanner jams forever", email="carl@customer.test")
    ticket_service.add_comment(merged, "Paper tray is loose.", contact=merged.contact)
    db.session.commit()
    assert sorted(found("scanner")) == sorted([kept.id, merged.id, gone.id])

    db.session.delete(gone)
    ticket_service.merge(merged, kept)
    db.session.commit()
    assert found("scanner") == [kept.id]
    assert found("tray") == [kept.id]  # the merged thread is found on the ticket it joined


def test_filters_by_status_customer_and_mailbox(make_ticket):
    from helpdesk.models import Customer

    acme = Customer(name="Acme")
    db.session.add(acme)
    db.session.commit()
    a = make_ticket(title="Toner low", customer=acme)
    b = make_ticket(title="Toner empty", email="x@y.test")
    ticket_service.set_status(b, "resolved")
    db.session.commit()
    assert sorted(found("toner")) == sorted([a.id, b.id])
    assert found("toner", statuses=("resolved",)) == [b.id]
    assert found("toner", customer_id=acme.id) == [a.id]
    assert found("toner", mailbox_id=999) == []


def test_title_matches_rank_before_comment_matches(make_ticket):
    in_comment = make_ticket(title="Something", description="x")
    ticket_service.add_comment(in_comment, "the router again and nothing else", contact=in_comment.contact)
    in_title = make_ticket(title="Router keeps rebooting", email="r@y.test")
    db.session.commit()
    assert found("router") == [in_title.id, in_comment.id]


def test_reindex_rebuilds_the_same_results(app, make_ticket):
    ticket = make_ticket(title="Broken keyboard", email="kim@keys.test")
    ticket_service.add_comment(ticket, "Spilled lemonade on it.", contact=ticket.contact)
    add_attachment(ticket, io.BytesIO(b"x"), filename="photo-of-damage.jpg", content_type="image/jpeg")
    db.session.add(InboundMail(channel="cli", dedupe_key="<k@x>", outcome="created", sender="kim@keys.test",
                               subject="Broken keyboard", message_id="<k@x>"))
    db.session.commit()
    queries = ("keyboard", "lemonade", "damage", "kim@keys.test")
    before = {q: found(q) for q in queries}
    logs_before = search.log_matches("keyboard", search.LOG_INBOUND)
    assert all(before.values()) and logs_before

    db.session.execute(text("DELETE FROM ticket_search"))
    db.session.execute(text("DELETE FROM mail_log_search"))
    db.session.commit()
    assert found("lemonade") == []

    runner = app.test_cli_runner()
    result = runner.invoke(args=["search", "reindex"])
    assert result.exit_code == 0, result.output
    assert {q: found(q) for q in queries} == before
    assert search.log_matches("keyboard", search.LOG_INBOUND) == logs_before


def test_inbound_and_email_logs_search_through_the_index(admin_client, make_ticket):
    for n in range(3):
        db.session.add(InboundMail(channel="cli", dedupe_key=f"<m{n}@x>", outcome="created",
                                   sender=f"sender{n}@shop.test", subject=f"Order {n} delayed",
                                   message_id=f"<order-{n}@shop.test>"))
    db.session.commit()
    log = "/admin/settings/email/inbound/log"

    def rows(q):
        html = admin_client.get(log, query_string={"q": q}).get_data(as_text=True)
        return re.findall(r'<td class="subject">([^<]+)</td>', html)

    assert rows("sender1@shop.test") == ["Order 1 delayed"]
    assert rows("delayed") == ["Order 2 delayed", "Order 1 delayed", "Order 0 delayed"]
    assert rows("order-2@shop.test") == ["Order 2 delayed"]
    assert rows("nothing-like-this") == []


def test_search_of_the_email_log_by_recipient(admin_client):
    from helpdesk.mail.render import RenderedMail
    from helpdesk.services import outbox

    outbox.queue_mail(kind="test", to=["zelda@hyrule.test"], rendered=RenderedMail("Your order", "x", None, ()))
    outbox.queue_mail(kind="test", to=["link@hyrule.test"], rendered=RenderedMail("Your order", "x", None, ()))
    db.session.commit()
    html = admin_client.get("/admin/settings/email/outbox", query_string={"q": "zelda"}).get_data(as_text=True)
    assert "zelda@hyrule.test" in html and "link@hyrule.test" not in html


def test_the_ticket_page_loads_its_thread_in_a_fixed_number_of_statements(admin_client, make_ticket,
                                                                           statements_asked):
    def statements_for(comments: int) -> int:
        ticket = make_ticket(title=f"Thread of {comments}", email=f"t{comments}@x.test")
        for n in range(comments):
            comment = ticket_service.add_comment(ticket, f"Reply {n}", contact=ticket.contact)
            add_attachment(ticket, io.BytesIO(b"x"), filename=f"f{n}.txt", content_type="text/plain", comment=comment)
        db.session.commit()
        ticket_id = ticket.id
        db.session.expire_all()
        with statements_asked() as asked:
            assert admin_client.get(f"/tickets/{ticket_id}").status_code == 200
        return len(asked)

    assert statements_for(2) == statements_for(12)
    assert db.session.scalar(db.select(db.func.count()).select_from(Comment)) == 14
