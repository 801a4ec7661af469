"""PostgreSQL in a poll: a transaction's BEGIN, INSERTs and COMMIT go in one round trip, with the next mail's query.

A poll writes each mail in a transaction of its own (outcome row, ticket, event, contact,
attachments, confirmation). Sent one at a time, each statement waits for its own round trip to
the server, and on a busy machine that wait, not the work, is most of a mail's time. Rows
queued here take their id from a batch of sequence values fetched ahead, so nothing waits
for a RETURNING; their INSERTs go out in one pipeline just before the next statement on the
connection, or together with the COMMIT. Inside `own_begin()` the BEGIN goes with the
transaction's first statements (the driver would send it alone and wait), and
`query_after_commit` has the COMMIT's round trip also bring the next mail's first query.
A failing INSERT surfaces at that statement or at the commit as the same IntegrityError the
immediate INSERT raises, and the transaction rolls back as before: each commit stays all or nothing.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Table, event, exc, text
from sqlalchemy.engine import Compiled, Connection, Engine
from sqlalchemy.sql import Executable

from helpdesk import sqlite_direct

log = logging.getLogger(__name__)

_PENDING = "helpdesk_pending_inserts"  # Connection.info: [(sql, params)] not sent yet
_AT_COMMIT = "helpdesk_at_commit"  # Connection.info: statements that go right before the COMMIT
_OWN_BEGIN = "helpdesk_own_begin"  # Connection.info: set while `own_begin()` lasts
_AFTER_COMMIT = "helpdesk_after_commit"  # Connection.info: (key, (sql, params)) to run right after the COMMIT
_ANSWERED = "helpdesk_answered"  # Connection.info: (key, rows) of that query, for the next transaction
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


@contextmanager
def own_begin(connection: Connection) -> Iterator[None]:
    """Inside the block, begin the connection's transactions here, in the round trip of their first statements.

    psycopg begins a transaction by sending BEGIN and, in a pipeline, waiting for its answer: a
    round trip of its own for every transaction, a third of a poll's per mail. Here the driver is
    switched to autocommit and each transaction is begun by the first pipeline this module sends,
    or just before SQLAlchemy's first statement: every statement still runs inside a transaction.
    Begin it with no transaction open; the block's last transaction is rolled back unless committed.
    """
    if not available(connection) or _OWN_BEGIN in connection.info:
        yield
        return
    raw = connection.connection.driver_connection
    if raw.autocommit or not _idle(raw):
        yield  # not ours to change: the driver keeps beginning transactions
        return
    raw.autocommit = True
    connection.info[_OWN_BEGIN] = True
    try:
        yield
    finally:
        connection.info.pop(_OWN_BEGIN, None)
        for key in (_AFTER_COMMIT, _ANSWERED):
            connection.info.pop(key, None)
        try:
            raw.rollback()
            raw.autocommit = False
        except Exception:  # noqa: BLE001 - a broken connection must not go back to the pool in autocommit
            log.warning("could not restore the connection after a poll; it is discarded", exc_info=True)
            connection.invalidate()


def query_after_commit(connection: Connection,
                       question: Callable[[], tuple[Hashable, Executable, dict[str, Any]] | None]) -> None:
    """Have this transaction's COMMIT also bring back the row of a query, for the next transaction's `one_row`.

    `question()` returns (key, statement, params), or None for no query; the next
    `one_row(..., key=key)` takes the row. Read right after the COMMIT, it sees what this
    transaction wrote, as it would a moment later. Only inside `own_begin()` (`question` is not
    even called elsewhere): the next `one_row` asks then.
    """
    if connection.info.get(_OWN_BEGIN) and (asked := question()) is not None:
        key, statement, params = asked
        connection.info[_AFTER_COMMIT] = (key, _query(connection, statement, params))


def one_row(connection: Connection, statement: Executable, params: dict[str, Any], *,
            key: Hashable | None = None) -> tuple:
    """Run a query that returns exactly one row: on PostgreSQL in a pipeline (with the BEGIN inside
    `own_begin()`), on SQLite on the driver's cursor (`sqlite_direct`).

    With `key`, the row that `query_after_commit` brought back for it is taken instead, if any.
    """
    if connection.dialect.name == "sqlite":
        return sqlite_direct.one_row(connection, statement, params)
    if not available(connection):
        return tuple(connection.execute(statement, params).one())
    answered = connection.info.pop(_ANSWERED, None)
    if key is not None and answered is not None and answered[0] == key:
        rows = answered[1]
    else:
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
    # Whatever comes next may read those rows, or refer to them: they go first. Inside
    # `own_begin()` the statement's transaction is begun first, if nothing began it yet.
    if conn.info.get(_PENDING) or (conn.info.get(_OWN_BEGIN) and _idle(conn.connection.driver_connection)):
        _send(conn)


@event.listens_for(Engine, "commit")
def _send_with_commit(conn: Connection) -> None:
    conn.info.pop(_ANSWERED, None)  # meant for this transaction; the COMMIT below may bring the next one's
    if not (conn.info.get(_PENDING) or conn.info.get(_AT_COMMIT) or conn.info.get(_AFTER_COMMIT)):
        return
    if conn.info.get(_OWN_BEGIN) and _idle(conn.connection.driver_connection) and not conn.info.get(_PENDING):
        # Nothing was written or read: no transaction to commit, and no round trip to spend.
        conn.info.pop(_AT_COMMIT, None)
        conn.info.pop(_AFTER_COMMIT, None)
        return
    _send(conn, commit=True)


@event.listens_for(Engine, "rollback")
def _drop_on_rollback(conn: Connection) -> None:
    # Also fires when a connection goes back to the pool with its transaction open.
    for key in (_PENDING, _AT_COMMIT, _AFTER_COMMIT, _ANSWERED):
        conn.info.pop(key, None)


def _send(conn: Connection, *, query: tuple[str, dict] | None = None, commit: bool = False) -> list:
    """Send the BEGIN (inside `own_begin()`, when none is open), the queued INSERTs, then `query` (returning
    its rows) or the COMMIT and the query to run after it, in one round trip."""
    import psycopg

    raw = conn.connection.driver_connection
    begin = bool(conn.info.get(_OWN_BEGIN)) and _idle(raw)
    pending = conn.info.pop(_PENDING, None) or []
    before_commit = (conn.info.pop(_AT_COMMIT, None) or []) if commit else []
    after = conn.info.pop(_AFTER_COMMIT, None) if commit else None
    if after is not None:
        query = after[1]
    rows: list = []
    reader = raw.cursor() if query is not None else None
    committer = raw.cursor() if commit else None
    try:
        with raw.pipeline():
            with raw.cursor() as cursor:
                if begin:
                    cursor.execute("BEGIN")
                for sql, params in pending:
                    cursor.execute(sql, params)
                for sql in before_commit:
                    cursor.execute(sql)
            if committer is not None:
                # A statement of the pipeline: the driver's commit() would first wait for the
                # results so far, a round trip more. The commit SQLAlchemy asks for next finds
                # no transaction open and sends nothing.
                committer.execute("COMMIT")
            if reader is not None:
                # After a COMMIT it runs on its own (the driver is in autocommit inside own_begin()).
                reader.execute(*query)
        if reader is not None:
            # Fetched after the pipeline's one Sync: fetching inside it asks the server to flush
            # first, another round trip.
            rows = reader.fetchall()
    except psycopg.Error as error:
        if after is not None and _committed(committer):
            # The COMMIT went through; only the query after it failed. Its mail asks again itself.
            log.warning("the query after a commit failed: %s", error)
            return []
        # The transaction stays open (aborted) on the connection, as after a failed statement:
        # the caller's rollback ends it.
        what = query[0] if query and not commit else (
            f"{len(pending)} queued INSERT(s)" + (" and the COMMIT" if commit else ""))
        raise exc.DBAPIError.instance(what, query[1] if query and not commit else None, error,
                                      psycopg.Error) from error
    finally:
        for used in (reader, committer):
            if used is not None:
                used.close()
    if after is not None:
        conn.info[_ANSWERED] = (after[0], rows)
    return rows


def _idle(raw: Any) -> bool:
    """Tell whether the driver's connection has no transaction open."""
    from psycopg.pq import TransactionStatus

    return raw.pgconn.transaction_status == TransactionStatus.IDLE


def _committed(committer: Any) -> bool:
    """Tell whether the COMMIT this cursor sent was answered as one (not skipped, not turned into a ROLLBACK)."""
    from psycopg.pq import ExecStatus

    result = committer.pgresult if committer is not None else None
    return result is not None and result.status == ExecStatus.COMMAND_OK and result.command_status == b"COMMIT"


@cache
def _pipeline_supported() -> bool:
    import psycopg

    return psycopg.Pipeline.is_supported()
