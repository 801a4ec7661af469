"""SQLite statements on the driver's cursor give what SQLAlchemy gives, values and errors alike."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import bindparam, create_engine, func, select
from sqlalchemy.exc import IntegrityError

from helpdesk import sqlite_direct
from helpdesk.extensions import db
from helpdesk.models import OutboundMessage
from helpdesk.models._rows import _complete


@pytest.fixture
def connection(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    db.metadata.create_all(engine)
    with engine.connect() as connection, connection.begin():
        yield connection
    engine.dispose()


def _outbound(n: int, **values) -> dict:
    """Return a complete outbox row, as insert_row writes them."""
    return _complete(OutboundMessage, {
        "kind": "new_ticket", "automatic": True, "recipient": f"r{n}@example.com", "to": f"r{n}@example.com",
        "subject": f"Mail {n}", "message_id": f"<m{n}@example.com>", "created_at": datetime(2026, 12, 4, 9, 30, n),
        **values})


def test_insert_writes_what_sqlalchemy_writes(connection) -> None:
    table = OutboundMessage.__table__
    direct_id = sqlite_direct.insert(connection, table, _outbound(1))
    engine_id = connection.execute(table.insert().returning(table.c.id), _outbound(2)).scalar_one()
    assert (direct_id, engine_id) == (1, 2)
    stored = {row.id: row for row in connection.execute(select(table))}
    # Stored the same way (datetime as SQLAlchemy's text, bool as 1), so read back the same way.
    raw = connection.exec_driver_sql("SELECT automatic, created_at FROM outbound_messages ORDER BY id").all()
    assert raw[0][0] == raw[1][0] == 1 and len(raw[0][1]) == len(raw[1][1])
    assert stored[1].created_at == datetime(2026, 12, 4, 9, 30, 1) and stored[1].automatic is True
    assert (stored[1].subject, stored[1].message_id) == ("Mail 1", "<m1@example.com>")


def test_insert_of_a_partial_row_still_gets_the_defaults(connection) -> None:
    table = OutboundMessage.__table__
    row_id = sqlite_direct.insert(connection, table, {"kind": "test", "recipient": "a@example.com",
                                                      "to": "a@example.com", "subject": "S", "message_id": "<p@x>"})
    stored = connection.execute(select(table).where(table.c.id == row_id)).one()
    assert (stored.cc, stored.status, stored.attempts, stored.automatic) == ("", "queued", 0, False)
    assert stored.created_at is not None


def test_insert_failure_is_the_wrapped_integrity_error(connection) -> None:
    sqlite_direct.insert(connection, OutboundMessage.__table__, _outbound(1))
    with pytest.raises(IntegrityError):
        sqlite_direct.insert(connection, OutboundMessage.__table__, _outbound(2, message_id="<m1@example.com>"))


def test_one_row_matches_the_engine_with_the_statements_own_literals(connection) -> None:
    table = OutboundMessage.__table__
    for n in range(5):
        sqlite_direct.insert(connection, table, _outbound(n, automatic=n % 2 == 0, recipient="same@example.com"))
    statement = select(func.count(table.c.id), func.max(table.c.subject)).where(
        table.c.recipient == bindparam("recipient"), table.c.automatic.is_(True),
        table.c.created_at >= bindparam("since"))
    params = {"recipient": "same@example.com", "since": datetime(2026, 12, 4, 9, 30, 1) + timedelta(microseconds=1)}
    assert sqlite_direct.one_row(connection, statement, params) == tuple(connection.execute(statement, params).one())
    assert sqlite_direct.one_row(connection, statement, params) == (2, "Mail 4")


def test_one_row_leaves_converted_columns_to_the_engine(connection) -> None:
    table = OutboundMessage.__table__
    sqlite_direct.insert(connection, table, _outbound(3))
    statement = select(table.c.created_at).where(table.c.id == bindparam("id"))
    assert sqlite_direct.one_row(connection, statement, {"id": 1}) == (datetime(2026, 12, 4, 9, 30, 3),)
