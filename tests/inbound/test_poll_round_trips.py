"""A poll's round trips to PostgreSQL: one per mail, its BEGIN, rows, COMMIT and the next mail's query together."""
from __future__ import annotations

import email
import os
import re
import tempfile
from email.policy import SMTP

import pytest
from sqlalchemy import event, text

from helpdesk import pipeline
from helpdesk.extensions import db, group_commits, one_connection
from helpdesk.mail import prefetch
from helpdesk.models import Contact, Customer, CustomerDomain, InboundMail, OutboundMessage
from helpdesk.models._rows import insert_row
from helpdesk.services import inbound

_STATEMENT = re.compile(r'^F\t\d+\t(?:Parse\t "[^"]*" "(?P<parsed>.*)" \d+|Query\t "(?P<query>.*)")')


@pytest.fixture(params=["helpers", "the poll"])
def parsed_by(request, monkeypatch) -> str:
    """Poll with the helper processes parsing the mails ahead (as from 100 new mails), or without."""
    if request.param == "helpers":
        monkeypatch.setattr(inbound, "PREFETCH_MIN", 1)
        monkeypatch.setattr(prefetch, "WAIT", 0.2)
    return request.param


@pytest.fixture
def round_trips(app):
    """Return a function that runs a callable and lists its round trips to PostgreSQL: the statements each carried.

    From libpq's own trace of every connection taken from the pool meanwhile: a Sync (or a simple
    Query) is the client waiting for the server.
    """
    from psycopg import pq

    def run(action) -> list[list[str]]:
        with tempfile.TemporaryFile("w+") as trace:
            return _trips(trace, action)

    def _trips(trace, action) -> list[list[str]]:
        traced = []

        def checkout(dbapi_connection, _record, _proxy):
            dbapi_connection.prepare_threshold = None  # every statement's text in the trace, never a name
            dbapi_connection.pgconn.trace(os.dup(trace.fileno()))
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            traced.append(dbapi_connection)

        def checkin(dbapi_connection, _record):
            if dbapi_connection in traced:
                dbapi_connection.pgconn.untrace()  # flushes and closes its copy of the file
                dbapi_connection.prepare_threshold = 5
                traced.remove(dbapi_connection)

        event.listen(db.engine, "checkout", checkout)
        event.listen(db.engine, "checkin", checkin)
        try:
            action()
        finally:
            event.remove(db.engine, "checkout", checkout)
            event.remove(db.engine, "checkin", checkin)
            for connection in traced:
                connection.pgconn.untrace()
                connection.prepare_threshold = 5
        trace.seek(0)
        messages: list[str] = []
        for line in trace:
            if line.startswith(("F\t", "B\t")) or not messages:
                messages.append(line.rstrip("\n"))
            else:  # a statement's text goes on over several lines
                messages[-1] += " " + line.rstrip("\n")
        trips, current = [], []
        for line in messages:
            if line.startswith("F\t4\tSync"):
                trips.append(current)
                current = []
            elif match := _STATEMENT.match(line):
                if match["query"] is not None:
                    trips.append([match["query"]])  # the simple protocol: a round trip of its own
                else:
                    current.append(match["parsed"])
        return trips

    return run


def without_message_id(raw: bytes) -> bytes:
    mail = email.message_from_bytes(raw, policy=SMTP)
    del mail["Message-ID"]
    return mail.as_bytes(policy=SMTP)


def with_inline_image(raw: bytes) -> bytes:
    mail = email.message_from_bytes(raw, policy=SMTP)
    mail.add_alternative('<p>It looks like this: <img src="cid:shot@customer.test"></p>', subtype="html")
    mail.get_body(("html",)).add_related(b"\x89PNG\r\n\x1a\n not really", "image", "png", cid="<shot@customer.test>")
    return mail.as_bytes(policy=SMTP)


def _lookup(statement: str) -> bool:
    return statement.startswith("SELECT") and "inbound_mails.dedupe_key" in statement


@pytest.mark.postgresql
def test_each_polled_mail_costs_one_round_trip_to_postgresql(parsed_by, make_mailbox, append, customer_mail,
                                                            round_trips, read_tickets):
    mailbox = make_mailbox()
    db.session.add(Contact(email="known@acme.test", name="Known", customer=Customer(name="Acme")))
    db.session.commit()
    # Plain mails, the last from a known contact of a customer; mails without a Message-ID (their
    # confirmation has no mail to thread under); mails whose HTML shows an inline image (their
    # ticket's HTML is written after the image's row).
    append(*(customer_mail(n, sender="known@acme.test" if n == 6 else None) if n % 3 == 0
             else without_message_id(customer_mail(n)) if n % 3 == 1
             else with_inline_image(customer_mail(n)) for n in range(8)))
    db.session.expire_all()  # as a worker's poll finds them: nothing loaded yet
    reports = []

    trips = round_trips(lambda: reports.append(inbound.poll_mailbox(mailbox.id)))

    assert reports[0].ok and reports[0].processed == 8
    tickets = read_tickets()
    assert len(tickets) == 8 and "/attachments/" in tickets[2].description_html
    assert (tickets[6].contact.name, tickets[6].customer.name) == ("Known", "Acme")
    assert db.session.scalar(db.select(db.func.count(OutboundMessage.id))) == 8  # each one confirmed
    commits = [n for n, trip in enumerate(trips) if any(s.startswith("INSERT INTO inbound_mails") for s in trip)]
    assert len(commits) == 8 and all("COMMIT" in trips[n] for n in commits)
    # Each COMMIT but the last brings back the next mail's query, so no mail asks it on its own...
    assert [_lookup(trips[n][-1]) for n in commits] == [True] * 7 + [False]
    # ...and after the first mail (which reads the poll's settings), the only round trips between two
    # commits are the fetches of new ids, fewer as the poll goes on: the BEGIN goes with the next one.
    for before, commit in zip(commits, commits[1:]):
        between = trips[before + 1:commit]
        assert all(any("nextval" in s for s in trip) for trip in between), between
        assert (between[0] if between else trips[commit])[0] == "BEGIN"
    alone = (["BEGIN"], ["COMMIT"], ["ROLLBACK"])
    assert not [trip for trip in trips[commits[0]:commits[-1] + 1] if trip in alone]


def test_each_mail_sees_what_the_mail_before_it_committed(parsed_by, make_mailbox, append, customer_mail,
                                                          read_tickets, read_inbound):
    # The second mail's query is answered with the first mail's COMMIT: it must see that commit.
    mailbox = make_mailbox()
    again = customer_mail(1)
    same_sender = customer_mail(2, sender="twice@example.org")
    append(again, again, same_sender, customer_mail(3, sender="twice@example.org"))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.outcomes == {"created": 3, "duplicate": 1}
    outcomes = [row.outcome for row in read_inbound()]
    assert outcomes == ["created", "created", "created"]  # the duplicate is answered, not recorded twice
    contacts = db.session.scalars(db.select(Contact).where(Contact.email == "twice@example.org")).all()
    assert len(contacts) == 1
    assert [t.contact_id for t in read_tickets()][1:] == [contacts[0].id, contacts[0].id]


def test_a_known_senders_contact_and_customer_come_with_the_query_each_mail_asks(make_mailbox, append, customer_mail,
                                                                                 read_tickets, statements_asked):
    acme, globex = Customer(name="Acme"), Customer(name="Globex")
    db.session.add_all([Contact(email="jane@acme.test", name="", customer=acme), Contact(email="solo@example.org",
                        name="Solo"), CustomerDomain(domain="globex.test", customer=globex)])
    db.session.commit()
    mailbox = make_mailbox()
    append(customer_mail(1, sender="jane@acme.test"), customer_mail(2, sender="solo@example.org"),
           customer_mail(3, sender="hank@globex.test"), customer_mail(4, sender="jane@acme.test"))
    db.session.expire_all()  # as a worker's poll finds them: nothing loaded yet

    with statements_asked() as asked:
        report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.outcomes == {"created": 4}
    # Neither the contacts nor their customers were read by queries of their own.
    assert [statement for statement in asked if re.search(r"FROM (contacts|customers)\b", statement)] == []
    assert [(t.contact.email, t.contact.name, t.customer.name if t.customer else None) for t in read_tickets()] == [
        ("jane@acme.test", "Customer 1", "Acme"),  # a contact with no name takes the one the mail gives
        ("solo@example.org", "Solo", None),
        ("hank@globex.test", "Customer 3", "Globex"),  # a new contact, under its domain's customer
        ("jane@acme.test", "Customer 1", "Acme")]


@pytest.mark.postgresql
def test_a_next_mail_that_cannot_be_read_ahead_changes_nothing_for_the_one_before(monkeypatch, make_mailbox, append,
                                                                                  customer_mail, read_inbound):
    def broken(self, *, up_to_uid):
        raise RuntimeError("cannot look ahead")

    monkeypatch.setattr(inbound._Ahead, "next_parsed", broken)
    mailbox = make_mailbox()
    append(customer_mail(1), customer_mail(2))

    report = inbound.poll_mailbox(mailbox.id)

    assert report.ok and report.outcomes == {"created": 2}
    assert [row.outcome for row in read_inbound()] == ["created", "created"]


@pytest.mark.postgresql
def test_a_failing_query_after_a_commit_leaves_the_commit_standing(app):
    lookup, select_one = "a key", text("SELECT 1/0, 2")
    with one_connection(), group_commits():
        contact = insert_row(Contact, {"email": "kept@example.org", "name": "Kept"})
        pipeline.query_after_commit(db.session.connection(), lambda: (lookup, select_one, {}))
        db.session.commit()  # the division fails after the COMMIT went through: no error here
        # The next transaction asks again, as it would have without the query after the commit.
        with pytest.raises(Exception, match="division by zero"):
            pipeline.one_row(db.session.connection(), select_one, {}, key=lookup)
        db.session.rollback()
    db.session.expire_all()
    assert db.session.get(Contact, contact.id).email == "kept@example.org"


@pytest.mark.postgresql
def test_statements_of_a_transaction_begun_by_us_are_rolled_back_together(app):
    with one_connection():
        raw = db.session.connection().connection.driver_connection
        assert raw.autocommit  # the poll's connection: the BEGIN is ours to send
        db.session.add(Contact(email="first@example.org", name="First"))
        db.session.flush()  # an ORM INSERT, not a pipelined one: it too needs the BEGIN before it
        db.session.execute(text("UPDATE contacts SET name = 'Changed' WHERE email = 'first@example.org'"))
        db.session.rollback()
        assert db.session.scalar(db.select(db.func.count(Contact.id))) == 0
        db.session.add(Contact(email="second@example.org", name="Second"))
        db.session.commit()
    # Back in the pool, the connection begins its transactions as the driver does.
    with db.engine.connect() as connection:
        assert not connection.connection.driver_connection.autocommit
    assert [c.email for c in db.session.scalars(db.select(Contact))] == ["second@example.org"]
    assert db.session.scalar(db.select(db.func.count(InboundMail.id))) == 0
