"""Grouped commits: atomic each, durable together at the next durable commit (SQLite and PostgreSQL)."""
from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from helpdesk import pipeline
from helpdesk.extensions import db, durable_commit, group_commits, one_connection
from helpdesk.models import Contact
from helpdesk.models._rows import insert_id, insert_row
from helpdesk.services import lookups


@pytest.fixture
def commit_waits_for_disk(app):
    """Return a function that commits the session and tells whether that commit waited for the disk."""
    if db.engine.dialect.name == "sqlite":
        def commit() -> bool:
            waits = db.session.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL; NORMAL is 1
            db.session.commit()
            return waits

        yield commit
        return
    # PostgreSQL reads synchronous_commit when the COMMIT runs, so that is when it is recorded:
    # a deferred trigger fires inside the COMMIT, after whatever the transaction set before it.
    db.session.execute(text("CREATE TABLE commit_modes (id serial PRIMARY KEY, mode text)"))
    db.session.execute(text(
        "CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE commit_modes SET mode = current_setting('synchronous_commit') WHERE id = NEW.id; "
        "RETURN NULL; END $$"))
    db.session.execute(text(
        "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON commit_modes DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION record_commit_mode()"))
    db.session.commit()

    def commit() -> bool:
        row_id = db.session.execute(text("INSERT INTO commit_modes DEFAULT VALUES RETURNING id")).scalar()
        db.session.commit()
        mode = db.session.execute(text("SELECT mode FROM commit_modes WHERE id = :id"), {"id": row_id}).scalar()
        db.session.rollback()
        assert mode in ("on", "off")
        return mode == "on"

    yield commit


def test_only_the_durable_commit_of_a_group_waits_for_the_disk(commit_waits_for_disk):
    assert commit_waits_for_disk()
    with group_commits():
        assert not commit_waits_for_disk()
        with durable_commit():
            assert commit_waits_for_disk()
        assert not commit_waits_for_disk()
    # Outside a group (every web request) each commit waits for the disk again.
    assert commit_waits_for_disk()


def test_shared_lookups_outlive_commits_and_transaction_lookups_do_not(app):
    loads = []

    def load():
        loads.append(1)
        return len(loads)

    assert lookups.cached("answer", load) == 1 and lookups.cached("answer", load) == 1
    db.session.commit()
    assert lookups.cached("answer", load) == 2  # a new transaction reads afresh
    with lookups.shared():
        assert lookups.cached("answer", load) == 3
        db.session.commit()
        assert lookups.cached("answer", load) == 3  # one read for the whole poll
        lookups.forget("answer")
        assert lookups.cached("answer", load) == 4
    db.session.commit()
    assert lookups.cached("answer", load) == 5


def contact(email: str) -> dict:
    return {"email": email, "name": email.split("@")[0], "customer_id": None}


def emails() -> set[str]:
    found = set(db.session.scalars(select(Contact.email)))
    db.session.rollback()
    return found


def test_rows_written_in_a_group_are_read_back_in_their_transaction_and_committed_with_it(app):
    with group_commits():
        first = insert_row(Contact, contact("first@example.com"))
        # The next statement sees the row (on PostgreSQL it went out just before that statement).
        assert db.session.scalar(select(Contact.email).where(Contact.id == first.id)) == "first@example.com"
        second = insert_row(Contact, contact("second@example.com"))
        third_id = insert_id(Contact, contact("third@example.com"))
        assert len({first.id, second.id, third_id}) == 3
        db.session.commit()
    assert emails() == {"first@example.com", "second@example.com", "third@example.com"}
    assert db.session.get(Contact, second.id).name == "second"


def test_rows_of_a_rolled_back_group_transaction_are_never_written(app):
    with group_commits():
        insert_row(Contact, contact("dropped@example.com"))
        db.session.rollback()
        insert_row(Contact, contact("kept@example.com"))
        db.session.commit()
    assert emails() == {"kept@example.com"}


def test_a_refused_row_fails_its_transaction_whole_and_the_session_goes_on(app):
    insert_row(Contact, contact("taken@example.com"))
    db.session.commit()
    with group_commits():
        insert_row(Contact, contact("new@example.com"))
        # Refused at the INSERT (SQLite) or at the COMMIT it was sent with (PostgreSQL): the same error.
        with pytest.raises(IntegrityError):
            insert_row(Contact, contact("taken@example.com"))
            db.session.commit()
        db.session.rollback()
        insert_row(Contact, contact("later@example.com"))
        db.session.commit()
    assert emails() == {"taken@example.com", "later@example.com"}


@pytest.mark.parametrize("one", [False, True], ids=["pooled", "one connection"])
def test_many_rows_of_one_transaction_are_written_all_or_none(app, one):
    with one_connection() if one else contextlib.nullcontext(), group_commits():
        for n in range(20):
            insert_id(Contact, contact(f"c{n}@example.com"))
        db.session.commit()
        with pytest.raises(IntegrityError):
            for n in range(20, 40):
                insert_id(Contact, contact(f"c{n}@example.com"))
            insert_id(Contact, contact("c3@example.com"))  # taken: the whole transaction fails
            db.session.commit()
        db.session.rollback()
    assert emails() == {f"c{n}@example.com" for n in range(20)}


def test_a_group_takes_no_more_ids_than_it_uses_at_first_and_keeps_none_for_later(app):
    with group_commits():
        first = insert_id(Contact, contact("first@example.com"))
        db.session.commit()
    # Ids taken ahead (PostgreSQL) are not left to number later rows out of order, nor skipped.
    after = insert_id(Contact, contact("after@example.com"))
    db.session.commit()
    with group_commits():
        many = [insert_id(Contact, contact(f"c{n}@example.com")) for n in range(10)]
        db.session.commit()
    last = insert_id(Contact, contact("last@example.com"))
    db.session.commit()
    assert after == first + 1
    assert many == sorted(many) and many[0] == after + 1
    assert last > many[-1]


def test_insert_row_gives_a_persistent_object_as_a_query_would_load_it(app, statements_asked) -> None:
    from sqlalchemy import inspect

    from helpdesk.models import Customer, Ticket

    customer = Customer(name="Acme")
    db.session.add(customer)
    db.session.commit()
    contact = insert_row(Contact, {"email": "jane@acme.test", "name": "Jane", "customer_id": customer.id},
                         customer=customer)
    ticket = insert_row(Ticket, {"title": "Broken", "contact_id": contact.id, "customer_id": customer.id,
                                 "status": "new", "priority": "normal", "source": "email"},
                        contact=contact, customer=customer)
    state = inspect(ticket)
    assert state.persistent and not state.modified and ticket in db.session
    with statements_asked() as queries:
        # Columns and the relationships given are there without a query; defaults filled in.
        assert (ticket.title, ticket.status, ticket.contact, ticket.customer) == ("Broken", "new", contact, customer)
        assert ticket.created_at is not None and contact.customer is customer
    assert not queries, queries
    db.session.commit()
    loaded = db.session.scalars(select(Ticket).where(Ticket.id == ticket.id)).one()
    assert (loaded.title, loaded.contact_id, loaded.customer_id) == ("Broken", contact.id, customer.id)


@pytest.mark.postgresql
@pytest.mark.parametrize("dropped_by", ["a rollback after the driver prepared its own", "DEALLOCATE ALL"])
def test_a_polls_round_trips_go_on_when_the_session_drops_their_prepared_statements(app, dropped_by):
    # psycopg drops every prepared statement of the session after a rollback once it prepared some of
    # its own; a poll's round trips prepare theirs on the same connection.
    def written(n: int) -> None:
        insert_id(Contact, contact(f"c{n}@example.com"))
        db.session.commit()

    with one_connection(), group_commits():
        for round_ in range(4):
            for n in range(3 * round_, 3 * round_ + 3):
                written(n)
            if dropped_by == "DEALLOCATE ALL":
                db.session.execute(text("DEALLOCATE ALL"))  # unseen by the round trips' own bookkeeping
                db.session.commit()
            else:
                for _ in range(6):  # psycopg prepares a statement on its fifth run
                    db.session.execute(text("SELECT count(*) FROM contacts")).scalar()
                db.session.rollback()
        written(12)
        # Prepared afresh each time under the names given before, not new ones for ever.
        ours = set(db.session.scalars(text("SELECT name FROM pg_prepared_statements WHERE name LIKE 'helpdesk%'")))
        db.session.commit()
    assert emails() == {f"c{n}@example.com" for n in range(13)}
    assert ours and ours <= {"helpdesk_0", "helpdesk_1", "helpdesk_2"}, ours


@pytest.mark.postgresql
def test_a_statement_the_server_cannot_prepare_fails_with_its_own_error_and_the_next_round_trip_works(app):
    with one_connection():
        with pytest.raises(ProgrammingError, match="nosuchcolumn"):  # the PREPARE's error, not "skipped"
            pipeline.one_row(db.session.connection(), text("SELECT nosuchcolumn FROM contacts WHERE id = :id"),
                             {"id": 1})
        db.session.rollback()
        counted = pipeline.one_row(db.session.connection(), text("SELECT count(*) FROM contacts WHERE id >= :id"),
                                   {"id": 1})
        db.session.rollback()
    assert counted == (0,)


@pytest.mark.postgresql
def test_a_round_trip_on_a_connection_the_server_ended_fails_at_once(app):
    raised = []
    with pytest.raises(DBAPIError):  # the poll's connection is gone: its last rollback fails too
        with one_connection():
            connection = db.session.connection()
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with db.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
            try:
                pipeline.one_row(connection, text("SELECT count(*) FROM contacts WHERE id >= :id"), {"id": 1})
            except DBAPIError as error:  # an error, not a wait for answers that will never come
                raised.append(error)
    assert raised and "connection" in str(raised[0]).lower()
    db.session.rollback()
    assert db.session.scalar(select(db.func.count(Contact.id))) == 0  # the pool gives a working connection


@pytest.mark.postgresql
def test_a_round_trip_sends_numbers_and_text_as_the_driver_would_and_refuses_a_nul(app):
    values = [0, -7, 2**62, "", "plain", "Grüße, 東京 ☃", "quote ' and \\ backslash"]
    asked = text("SELECT CAST(CAST(:number AS numeric) AS text), CAST(:words AS text), octet_length(:words)")
    with one_connection():
        connection = db.session.connection()
        for value in values:
            number, words = (value, "x") if isinstance(value, int) else (1, value)
            got = pipeline.one_row(connection, asked, {"number": number, "words": words})
            assert got == (str(number), words, len(words.encode())), value
        with pytest.raises(DBAPIError, match="NUL"):
            pipeline.one_row(connection, asked, {"number": 1, "words": "a\x00b"})
        db.session.rollback()
