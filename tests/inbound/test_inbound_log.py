"""The Inbound log: every polled mail with its outcome, filters, Reprocess and the raw mail of quarantined ones."""
from __future__ import annotations

import re

import pytest

from helpdesk.extensions import db
from helpdesk.models import InboundMail, Mailbox
from helpdesk.services import inbound

LOG = "/admin/settings/email/inbound/log"


@pytest.fixture
def app_config(app_config) -> dict:
    # A low loop limit lets a test quarantine a mail the way the loop guard would.
    app_config["INBOUND_LOOP_LIMIT"] = 2
    return app_config


@pytest.fixture
def polled(admin_client, make_mailbox, append, customer_mail):
    """Poll four mails: two created, one quarantined (loop guard), one ignored (our own address)."""
    mailbox = make_mailbox()
    looping = [customer_mail(n, sender="robot@example.org", subject=f"Alarm {n}") for n in range(3)]
    own = customer_mail(7, sender="support@example.test", subject="Sent by ourselves")
    append(*looping, own)
    report = inbound.poll_mailbox(mailbox.id)
    assert report.ok, report.error
    assert dict(report.outcomes) == {"created": 2, "quarantined": 1, "ignored": 1}
    return mailbox, looping


def rows_in(html: str) -> list[str]:
    return re.findall(r'<tr id="inbound-(\d+)">', html)


def test_log_lists_every_mail_newest_first_with_its_outcome(admin_client, polled):
    mailbox, _ = polled
    html = admin_client.get(LOG).get_data(as_text=True)

    ids = [int(i) for i in rows_in(html)]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True)
    for outcome in ("created", "quarantined", "ignored"):
        assert f'<span class="badge outcome-{outcome}">{outcome}</span>' in html
    assert "robot@example.org" in html and "Alarm 0" in html
    assert html.count("Reprocess</button>") == 1 and html.count(">Raw mail</a>") == 1
    row = db.session.scalar(db.select(InboundMail).filter_by(outcome="created"))
    assert f'href="/tickets/{row.ticket_id}"' in html
    assert f"<td>{mailbox.name}</td>" in html


@pytest.mark.parametrize("query, expected", [
    ({"outcome": "quarantined"}, 1), ({"outcome": "ignored"}, 1), ({"q": "Alarm"}, 3), ({"q": "ROBOT@"}, 3),
    ({"q": "ourselves"}, 1), ({"q": "nothing like this"}, 0)])
def test_log_filters(admin_client, polled, query, expected):
    html = admin_client.get(LOG, query_string=query, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="inbound-rows">')
    assert len(rows_in(html)) == expected
    if expected == 0:
        assert "No mail matches." in html and "Clear the filters" in html


def test_log_filters_by_mailbox(admin_client, polled):
    mailbox, _ = polled
    other = Mailbox(name="Billing")
    db.session.add(other)
    db.session.commit()
    assert len(rows_in(admin_client.get(LOG, query_string={"mailbox": mailbox.id}).get_data(as_text=True))) == 4
    assert len(rows_in(admin_client.get(LOG, query_string={"mailbox": other.id}).get_data(as_text=True))) == 0


def test_raw_mail_of_a_quarantined_mail_downloads_through_the_app(admin_client, polled):
    _, looping = polled
    row = db.session.scalar(db.select(InboundMail).filter_by(outcome="quarantined"))

    response = admin_client.get(f"{LOG}/{row.id}/raw")

    assert response.status_code == 200
    assert response.mimetype == "message/rfc822"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.get_data() == looping[2]


def test_reprocess_turns_a_quarantined_mail_into_a_ticket(admin_client, polled):
    row = db.session.scalar(db.select(InboundMail).filter_by(outcome="quarantined"))

    page = admin_client.auth.post(f"{LOG}/{row.id}/reprocess", {"next": f"{LOG}?outcome=quarantined"})

    assert page.status_code == 302 and page.headers["Location"].endswith("?outcome=quarantined")
    followed = admin_client.get(page.headers["Location"]).get_data(as_text=True)
    assert "created" in followed and "Reprocessed mail" in followed
    db.session.expire_all()
    again = db.session.scalar(db.select(InboundMail).where(InboundMail.subject == "Alarm 2"))
    assert again.outcome == "created" and again.ticket_id is not None


def test_reprocess_of_a_mail_that_is_not_quarantined_is_refused_politely(admin_client, polled):
    row = db.session.scalar(db.select(InboundMail).filter_by(outcome="created"))
    page = admin_client.auth.post(f"{LOG}/{row.id}/reprocess", follow_redirects=True)
    assert "not a quarantined mail" in page.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(InboundMail, row.id).outcome == "created"


def test_log_paginates_and_agents_are_kept_out(admin_client, app, client):
    for n in range(55):
        db.session.add(InboundMail(channel="cli", dedupe_key=f"<{n}@x>", outcome="ignored", subject=f"Mail {n}"))
    db.session.commit()
    first = admin_client.get(LOG).get_data(as_text=True)
    assert len(rows_in(first)) == 50 and "55 mails" in first
    older = re.search(r'href="([^"]+before=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = admin_client.get(older, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert len(rows_in(second)) == 5 and "Load older" not in second


def test_empty_log_says_so(admin_client):
    html = admin_client.get(LOG).get_data(as_text=True)
    assert "<h1>Inbound log</h1>" in html and "Mail fetched from the mailboxes shows up here" in html


def test_agents_cannot_read_raw_mail_or_reprocess(agent_client):
    row = InboundMail(channel="cli", dedupe_key="<a@x>", outcome="quarantined", raw_key="att/2024/01/abc")
    db.session.add(row)
    db.session.commit()
    assert agent_client.get(f"{LOG}/{row.id}/raw").status_code == 403
    assert agent_client.auth.post(f"{LOG}/{row.id}/reprocess").status_code == 403
