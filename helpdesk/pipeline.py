"""PostgreSQL in a poll: a transaction's INSERTs go with its COMMIT, its BEGIN with its first query.

A poll writes each mail in a transaction of its own (outcome row, ticket, event, contact,
attachments, confirmation). Sent one at a time, each INSERT waits for its own round trip to
the server, and on a busy machine that wait, not the work, is most of a mail's time. Rows
queued here take their id from a batch of sequence values fetched ahead, so nothing waits
for a RETURNING; their INSERTs go out in one pipeline just before the next statement on the
connection, or together with the COMMIT; `one_row` sends the BEGIN with the transaction's first
query. A failing INSERT surfaces at that statement or at
the commit as the same IntegrityError the immediate INSERT raises, and the transaction rolls
back as before: each commit stays all or nothing.
"""
from __future__ import annotations

from collections import deque
from functools import cache
from typing import Any

from sqlalchemy import Table, event, exc, text
from sqlalchemy.engine import Compiled, Connection, Engine
from sqlalchemy.sql import Executable

from helpdesk import sqlite_direct

_PENDING = "helpdesk_pending_inserts"  # Connection.info: [(sql, params)] not sent yet
_AT_COMMIT = "helpdesk_at_commit"  # Connection.info: statements that go right before the COMMIT
ID_BATCH = 64  # the most ids taken ahead at once


class Ids:
    """Ids taken ahead from the tables' sequences, for one run of grouped commits (a poll).

    One at first, then twice as many each time up to ID_BATCH: a poll of one mail leaves no gap in
    the ticket numbers, a poll of hundreds asks the sequence a few times. What a run leaves unused
    is a gap, as after a rollback; it is not kept for later, where it would number a new ticket
    below the ones made since.
    """

    def __init__(self) -> None:
        self._free: dict[str, deque[int]] = {}
        self._wanted: dict[str, int] = {}

    def take(self, connection: Connection, table: Table) -> int:
        """Return an unused id of `table`."""
        free = self._free.get(table.name)
        if not free:
            count = self._wanted.get(table.name, 1)
            self._wanted[table.name] = min(count * 2, ID_BATCH)
            # In the pipeline, with the INSERTs queued so far: one round trip for both.
            rows = _send(connection, query=_query(connection, _NEXT_IDS, {"table": table.name, "count": count}))
            free = self._free[table.name] = deque(row[0] for row in rows)
        return free.popleft()


_SQL: dict[str, str] = {}
_COMPILED: dict[Executable, Compiled] = {}  # for callers' statements built once, at import
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)")


def available(connection: Connection) -> bool:
    """Tell whether this connection can pipeline (PostgreSQL through psycopg with libpq 14 or newer)."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(getattr(connection.connection.driver_connection, "pipeline", None)) and _pipeline_supported()


def insert(connection: Connection, table: Table, row: dict[str, Any], ids: Ids) -> int:
    """Queue an INSERT of `row` (every column but the id) in the connection's transaction; return its id."""
    row = {**row, "id": ids.take(connection, table)}
    connection.info.setdefault(_PENDING, []).append((_insert_sql(connection, table, row), row))
    return row["id"]


def one_row(connection: Connection, statement: Executable, params: dict[str, Any]) -> tuple:
    """Run a query that returns exactly one row: on PostgreSQL its round trip carries the BEGIN, on SQLite
    it runs on the driver's cursor (`sqlite_direct`).

    For the first query of each transaction of a poll: through SQLAlchemy, the driver would send
    the BEGIN alone and wait for it before sending the query.
    """
    if connection.dialect.name == "sqlite":
        return sqlite_direct.one_row(connection, statement, params)
    if not available(connection):
        return tuple(connection.execute(statement, params).one())
    rows = _send(connection, query=_query(connection, statement, params))
    if len(rows) != 1:
        raise exc.MultipleResultsFound("expected one row") if rows else exc.NoResultFound("expected one row")
    return tuple(rows[0])


def _query(connection: Connection, statement: Executable, params: dict[str, Any]) -> tuple[str, dict]:
    compiled = _COMPILED.get(statement)
    if compiled is None:
        compiled = _COMPILED[statement] = statement.compile(dialect=connection.dialect)
    return compiled.string, compiled.construct_params(params)


def at_commit(connection: Connection, sql: str) -> None:
    """Send `sql` (a SET LOCAL, say) just before this transaction's COMMIT, in the same round trip."""
    connection.info.setdefault(_AT_COMMIT, []).append(sql)


def _insert_sql(connection: Connection, table: Table, row: dict[str, Any]) -> str:
    sql = _SQL.get(table.name)
    if sql is None:
        compiled = table.insert().compile(dialect=connection.dialect, column_keys=list(row))
        sql = _SQL[table.name] = str(compiled)
    return sql


@event.listens_for(Engine, "before_cursor_execute")
def _send_before_statement(conn: Connection, _cursor, _statement, _parameters, _context, _executemany) -> None:
    # Whatever comes next may read those rows, or refer to them: they go first.
    if conn.info.get(_PENDING):
        _send(conn)


@event.listens_for(Engine, "commit")
def _send_with_commit(conn: Connection) -> None:
    if conn.info.get(_PENDING) or conn.info.get(_AT_COMMIT):
        _send(conn, commit=True)


@event.listens_for(Engine, "rollback")
def _drop_on_rollback(conn: Connection) -> None:
    # Also fires when a connection goes back to the pool with its transaction open.
    conn.info.pop(_PENDING, None)
    conn.info.pop(_AT_COMMIT, None)


def _send(conn: Connection, *, query: tuple[str, dict] | None = None, commit: bool = False) -> list:
    """Send the queued INSERTs, then `query` (returning its rows) or the COMMIT, in one round trip."""
    import psycopg

    pending = conn.info.pop(_PENDING, None) or []
    before_commit = (conn.info.pop(_AT_COMMIT, None) or []) if commit else []
    raw = conn.connection.driver_connection
    rows: list = []
    reader = raw.cursor() if query is not None else None
    try:
        with raw.pipeline():
            with raw.cursor() as cursor:
                for sql, params in pending:
                    cursor.execute(sql, params)
                for sql in before_commit:
                    cursor.execute(sql)
                if commit:
                    # A statement of the pipeline: the driver's commit() would first wait for the
                    # results so far, a round trip more. The commit SQLAlchemy asks for next finds
                    # no transaction open and sends nothing.
                    cursor.execute("COMMIT")
            if reader is not None:
                reader.execute(*query)
        if reader is not None:
            # Fetched after the pipeline's one Sync: fetching inside it asks the server to flush
            # first, another round trip.
            rows = reader.fetchall()
    except psycopg.Error as error:
        # The transaction stays open (aborted) on the connection, as after a failed statement:
        # the caller's rollback ends it.
        what = query[0] if query else f"{len(pending)} queued INSERT(s)" + (" and the COMMIT" if commit else "")
        raise exc.DBAPIError.instance(what, query[1] if query else None, error, psycopg.Error) from error
    finally:
        if reader is not None:
            reader.close()
    return rows


@cache
def _pipeline_supported() -> bool:
    import psycopg

    return psycopg.Pipeline.is_supported()
