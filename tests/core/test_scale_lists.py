"""Long lists page by cursor; raw mail is dropped after the retention time while the log rows stay."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from helpdesk.extensions import db
from helpdesk.models import Customer, InboundMail, OutboundMessage, Ticket
from helpdesk.models._time import utcnow
from helpdesk.services import listing, retention
from helpdesk.services.attachments import attachment_store
from helpdesk.storage import StorageError


def ticket_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/tickets/(\d+)">', html)]


def older_link(html: str) -> str | None:
    found = re.search(r'href="(/tickets\?[^"]*before=[^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_load_older_never_skips_or_repeats_a_ticket_while_new_ones_arrive(admin_client, make_ticket):
    for n in range(60):
        make_ticket(title=f"Old {n}", email=f"c{n % 7}@x.test")
    # Several tickets share one creation time: the id breaks the tie.
    same = utcnow() - timedelta(hours=1)
    for ticket in db.session.scalars(db.select(Ticket).where(Ticket.id.in_(range(20, 35)))):
        ticket.created_at = same
    db.session.commit()
    expected = db.session.scalars(db.select(Ticket.id).order_by(Ticket.created_at.desc(), Ticket.id.desc())).all()

    html = admin_client.get("/tickets").get_data(as_text=True)
    seen = ticket_ids(html)
    arrivals = 0
    while (link := older_link(html)) is not None:
        make_ticket(title=f"New {arrivals}", email="new@x.test")  # arrives between two requests
        arrivals += 1
        html = admin_client.get(link, headers={"HX-Request": "true"}).get_data(as_text=True)
        seen += ticket_ids(html)
    assert seen == expected and arrivals == 2


def test_totals_stop_counting_past_the_cap(app, make_ticket, monkeypatch):
    for n in range(4):
        make_ticket(title=f"T{n}")
    monkeypatch.setattr(listing, "COUNT_CAP", 3)
    page = listing.newest_first(db.select(Ticket), Ticket, per_page=2)
    assert page.total == 4 and page.total_label == "more than 3" and page.next_cursor


def test_contacts_load_more_by_name(admin_client, make_ticket):
    for n in range(30):
        make_ticket(title="x", email=f"person{n:02d}@x.test")
    html = admin_client.get("/contacts").get_data(as_text=True)
    emails = re.findall(r"<td>(person\d+@x.test)</td>", html)
    link = re.search(r'href="(/contacts\?[^"]*after=[^"]+)"', html).group(1).replace("&amp;", "&")
    more = admin_client.get(link, headers={"HX-Request": "true"}).get_data(as_text=True)
    emails += re.findall(r"<td>(person\d+@x.test)</td>", more)
    assert sorted(emails) == [f"person{n:02d}@x.test" for n in range(30)] and len(set(emails)) == 30


def test_customer_filter_is_a_type_ahead_field(admin_client, make_ticket):
    for n in range(40):
        db.session.add(Customer(name=f"Customer {n:02d}"))
    acme = Customer(name="Acme Rockets")
    db.session.add(acme)
    db.session.commit()
    make_ticket(title="Rocket misfires", customer=acme)
    make_ticket(title="Another", email="b@x.test")

    page = admin_client.get("/tickets").get_data(as_text=True)
    assert "Customer 39" not in page and 'list="customer-options"' in page
    options = admin_client.get("/customers/options", query_string={"customer": "rock"},
                               headers={"HX-Request": "true"}).get_data(as_text=True)
    assert options.strip().startswith('<datalist id="customer-options">') and 'value="Acme Rockets"' in options
    filtered = admin_client.get("/tickets", query_string={"customer": "Acme Rockets"}).get_data(as_text=True)
    assert "Rocket misfires" in filtered and "Another" not in filtered
    assert "No tickets match" in admin_client.get("/tickets", query_string={"customer": "Nobody Inc"}).get_data(
        as_text=True)


@pytest.fixture
def old_and_new_mail(app):
    """Sent and received mail on both sides of the 90 days, each with its raw bytes kept."""
    long_ago, lately = utcnow() - timedelta(days=91), utcnow() - timedelta(days=89)
    store = attachment_store()
    rows = {}
    for name, created in (("old", long_ago), ("new", lately)):
        rows[f"sent_{name}"] = OutboundMessage(kind="test", recipient="a@x.test", to="a@x.test", subject=name,
                                               message_id=f"<{name}@helpdesk.test>", status="sent",
                                               raw_sent=b"Subject: " + name.encode() + b"\r\n\r\nhi\r\n",
                                               raw_size=len(name) + 17,
                                               created_at=created, sent_at=created)
        for outcome in ("created", "quarantined"):
            key = store.put(f"Subject: {name} {outcome}\r\n\r\nbody".encode(), content_type="message/rfc822").key
            rows[f"{outcome}_{name}"] = InboundMail(channel="cli", dedupe_key=f"<{name}-{outcome}@x>",
                                                    outcome=outcome, raw_key=key, size=30, created_at=created)
    db.session.add_all(rows.values())
    db.session.commit()
    return rows


def test_retention_drops_old_raw_bytes_and_keeps_log_rows_and_quarantined_mail(app, old_and_new_mail):
    rows = old_and_new_mail
    keys = {name: row.raw_key for name, row in rows.items() if isinstance(row, InboundMail)}
    before = retention.summary()
    assert before.kept.count == 6 and before.due.sent_count == 1 and before.due.inbound_count == 1
    assert before.quarantined.inbound_count == 2

    dropped = retention.drop_old_raw_mail()
    assert (dropped.sent_count, dropped.inbound_count) == (1, 1)
    db.session.expire_all()
    assert db.session.scalar(db.select(db.func.count()).select_from(OutboundMessage)) == 2
    assert db.session.scalar(db.select(db.func.count()).select_from(InboundMail)) == 4
    assert rows["sent_old"].raw_sent is None and rows["sent_new"].raw_sent is not None
    assert rows["sent_old"].raw_size is None and rows["sent_new"].raw_size == len(rows["sent_new"].raw_sent)
    assert rows["created_old"].raw_key is None and rows["created_new"].raw_key == keys["created_new"]
    assert rows["quarantined_old"].raw_key == keys["quarantined_old"]
    with pytest.raises(StorageError):
        attachment_store().read(keys["created_old"])
    for name in ("created_new", "quarantined_old", "quarantined_new"):
        assert attachment_store().read(keys[name])
    assert retention.summary().due.count == 0


def test_retention_screen_shows_sizes_and_runs(admin_client, old_and_new_mail):
    page = admin_client.get("/admin/settings/email/retention").get_data(as_text=True)
    assert "90 days" in page and "Removed by the next run" in page and "Run now" in page
    done = admin_client.auth.post("/admin/settings/email/retention/run", follow_redirects=True)
    assert "Dropped the raw bytes of 1 sent and 1 received mails" in done.get_data(as_text=True)


def test_retention_is_for_admins(agent_client):
    assert agent_client.get("/admin/settings/email/retention").status_code == 403
