"""PostgreSQL in a poll: a transaction's BEGIN, INSERTs and COMMIT go in one round trip, with the next mail's query.

A poll writes each mail in a transaction of its own (outcome row, ticket, event, contact,
attachments, confirmation). Sent one at a time, each statement waits for its own round trip to
the server, and on a busy machine that wait, not the work, is most of a mail's time. Rows
queued here take their id from a batch of sequence values fetched ahead, so nothing waits
for a RETURNING; their INSERTs go out in one pipeline just before the next statement on the
connection, or together with the COMMIT. Inside `own_begin()` the BEGIN goes with the
transaction's first statements (the driver would send it alone and wait), and
`query_after_commit` has the COMMIT's round trip also bring the next mail's first query.
A round trip goes out through the driver's libpq connection itself, its statements prepared once
(`_RoundTrip`): psycopg's own pipeline cost the poller more CPU than the statements did.
A failing INSERT surfaces at that statement or at the commit as the same IntegrityError the
immediate INSERT raises, and the transaction rolls back as before: each commit stays all or nothing.
"""
from __future__ import annotations

import logging
import re
import select
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Table, event, exc, text
from sqlalchemy.engine import Compiled, Connection, Engine
from sqlalchemy.pool import Pool
from sqlalchemy.sql import Executable

from helpdesk import sqlite_direct

log = logging.getLogger(__name__)

_PENDING = "helpdesk_pending_inserts"  # Connection.info: [(sql, params)] not sent yet (INSERTs, `later`)
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


def later(connection: Connection, statement: Executable, params: dict[str, Any]) -> None:
    """Run a statement whose result nobody reads (an UPDATE): on PostgreSQL queued with the INSERTs, elsewhere now."""
    # Only the values in `params` are written: a column's `onupdate` default is not applied when queued.
    if available(connection):
        connection.info.setdefault(_PENDING, []).append(_query(connection, statement, params))
    else:
        connection.execute(statement, params)


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
            _rolling_back(raw, connection.connection.info)
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
    _connection_rolling_back(conn)


@event.listens_for(Engine, "rollback_savepoint")
def _drop_on_rollback_to_savepoint(conn: Connection, _name: str, _context: object) -> None:
    _connection_rolling_back(conn)


def _connection_rolling_back(conn: Connection) -> None:
    try:
        pooled = conn.connection
    except exc.SQLAlchemyError:
        return  # closed or invalidated: its driver connection and what we kept for it are gone
    _rolling_back(pooled.dbapi_connection, pooled.info)


@event.listens_for(Pool, "reset")
def _drop_on_reset(dbapi_connection: Any, record: Any, _state: object) -> None:
    _rolling_back(dbapi_connection, record.info)


def _rolling_back(raw: Any, info: dict) -> None:
    """Forget our prepared statements where the driver is about to roll a transaction back: psycopg then
    drops every prepared statement of the session (DEALLOCATE ALL), ours too."""
    state = info.get(_STATE)
    if state is not None and state.names and getattr(raw, "pgconn", None) is not None and not _idle(raw):
        state.forget()


def _send(conn: Connection, *, query: tuple[str, dict] | None = None, commit: bool = False) -> list:
    """Send the BEGIN (inside `own_begin()`, when none is open), the queued INSERTs, then `query` (returning
    its rows) or the COMMIT and the query to run after it, in one round trip."""
    import psycopg

    raw = conn.connection.driver_connection
    # Outside `own_begin()` the driver would have begun the transaction before its first statement.
    begin = (bool(conn.info.get(_OWN_BEGIN)) or not raw.autocommit) and _idle(raw)
    pending = conn.info.pop(_PENDING, None) or []
    before_commit = (conn.info.pop(_AT_COMMIT, None) or []) if commit else []
    after = conn.info.pop(_AFTER_COMMIT, None) if commit else None
    if after is not None:
        query = after[1]
    statements = [("BEGIN", {})] if begin else []
    statements += pending
    statements += [(sql, {}) for sql in before_commit]
    if commit:
        # A statement of the round trip: the driver's commit() would be a round trip more. The
        # commit SQLAlchemy asks for next finds no transaction open and sends nothing.
        statements.append(("COMMIT", {}))
    if query is not None:
        # After a COMMIT it runs on its own (the driver is in autocommit inside own_begin()).
        statements.append(query)
    try:
        results = _RoundTrip(raw, conn.connection.info).run(statements)
    except psycopg.Error as error:
        what = query[0] if query and not commit else (
            f"{len(pending)} queued statement(s)" + (" and the COMMIT" if commit else ""))
        raise exc.DBAPIError.instance(what, query[1] if query and not commit else None, error,
                                      psycopg.Error) from error
    failed = next((n for n, result in enumerate(results) if isinstance(result, Exception)), None)
    if failed is not None:
        error = results[failed]
        if after is not None and failed == len(statements) - 1:
            # The COMMIT went through; only the query after it failed. Its mail asks again itself.
            log.warning("the query after a commit failed: %s", error)
            return []
        # The transaction stays open (aborted) on the connection, as after a failed statement:
        # the caller's rollback ends it.
        sql, params = statements[failed]
        raise exc.DBAPIError.instance(sql, params, error, psycopg.Error) from error
    rows = results[-1] if query is not None else []
    if after is not None:
        conn.info[_ANSWERED] = (after[0], rows)
    return rows


class _RoundTrip:
    """Statements sent over the driver's libpq connection in one pipeline, answered after one Sync.

    psycopg's own pipeline costs the poll about 0.7 ms of CPU a round trip, three times the
    statements' own cost: a cursor per statement, a check of the socket after each, its results
    walked in Python. Here each statement is sent with the libpq calls alone, its values as text by
    the connection's own adapters, and prepared once per connection: not where psycopg prepares
    nothing (`prepare_threshold` None, as behind PgBouncer), nor with a libpq too old to close a
    statement that may be gone.
    """

    _MOST_PREPARED = 200  # per connection; more statements go unprepared

    def __init__(self, raw: Any, info: dict) -> None:
        """`info` lasts as long as the driver's connection (SQLAlchemy's pool entry): what it keeps is per connection."""
        self.raw = raw
        self.pgconn = raw.pgconn
        self.state: _ConnectionState = info.get(_STATE) or info.setdefault(_STATE, _ConnectionState())
        if self.state.utf8 is None:
            # What psycopg's own text dumper encodes with (it takes UTF-8 for an ASCII connection).
            self.state.utf8 = raw.info.encoding in ("utf-8", "ascii")
        usable = raw.prepare_threshold is not None and _can_close_prepared()
        self.prepared = self.state.names if usable else None

    def run(self, statements: list[tuple[str, dict]]) -> list:
        """Return, for each statement, its rows (a SELECT), None (done) or its error (and it undone)."""
        from psycopg import errors, pq

        # Values are turned to text first: one that cannot be sent fails before anything is.
        sent = []
        for statement, params in statements:
            sql, names = _positional_sql(statement) if params else (statement.encode(), ())
            sent.append((sql, [self._dump(params[name]) for name in names]))
        in_transaction = not _idle(self.raw)
        out = self._send(sent)
        failure = next((outcome for outcome in out if isinstance(outcome, Exception)), None)
        if isinstance(failure, errors.InvalidSqlStatementName) and not in_transaction:
            # Our prepared statements were dropped behind our back (psycopg sends DEALLOCATE ALL
            # after some statements): nothing of this round trip stands, so it goes again, prepared afresh.
            self.state.forget()
            rollback = [] if _idle(self.raw) else [(b"ROLLBACK", [])]
            out = self._send(rollback + sent)[len(rollback):]
        return out

    def _send(self, sent: list[tuple[bytes, list]]) -> list:
        from psycopg import pq

        pgconn = self.pgconn
        answers: list[bool] = []  # per message sent: True for a statement, False for a PREPARE or Close
        fresh: list[bytes] = []  # the statements prepared in this round trip
        closed: list[bytes] = []
        state = self.state
        pgconn.enter_pipeline_mode()
        try:
            while self.prepared is not None and state.stale:
                # Perhaps gone already: closing a statement that does not exist is no error. Closed
                # first in the round trip, its name can be given to a statement prepared after.
                closed.append(state.stale.pop())
                pgconn.send_close_prepared(closed[-1])
                answers.append(False)
            state.free.extend(closed)
            for sql, values in sent:
                name = self.prepared.get(sql) if self.prepared is not None and values else None
                if name is None and values and self.prepared is not None and (
                        state.free or state.count < self._MOST_PREPARED):
                    if state.free:
                        name = state.free.pop()
                    else:
                        name, state.count = b"helpdesk_%d" % state.count, state.count + 1
                    self.prepared[sql] = name
                    pgconn.send_prepare(name, sql)
                    fresh.append(sql)
                    answers.append(False)
                if name is None:
                    pgconn.send_query_params(sql, values)
                else:
                    pgconn.send_query_prepared(name, values)
                answers.append(True)
            pgconn.pipeline_sync()
            results = self._results()
        except BaseException:
            self._forget(fresh)  # their names, closed here or not, are closed again
            # The names closed here and not given out again: perhaps their Close was never sent.
            unused = [name for name in state.free if name in closed]
            state.free = [name for name in state.free if name not in closed]
            state.stale.extend(unused)
            self._drain()
            raise
        finally:
            if pgconn.status == pq.ConnStatus.OK and pgconn.pipeline_status != pq.PipelineStatus.OFF:
                pgconn.exit_pipeline_mode()
        out, prepare = [], None
        for result, statement in zip(results, answers):
            if not statement:
                prepare = result
                continue
            # A statement whose PREPARE failed was skipped: the PREPARE's error tells why.
            failed_prepare = prepare is not None and prepare.status == pq.ExecStatus.FATAL_ERROR
            out.append(self._outcome(prepare if failed_prepare else result))
            prepare = None
        if any(isinstance(outcome, Exception) for outcome in out):
            self._forget(fresh)  # a failure skips the PREPAREs after it
        return out

    def _drain(self) -> None:
        """After a failure while sending, end the round trip so the connection can leave pipeline mode."""
        from psycopg import pq

        pgconn = self.pgconn
        try:
            if pgconn.status == pq.ConnStatus.OK and pgconn.pipeline_status != pq.PipelineStatus.OFF:
                pgconn.pipeline_sync()
                self._results()
        except Exception:  # noqa: BLE001 - the first failure is the one to report
            log.warning("could not end a failed round trip to PostgreSQL", exc_info=True)

    def _forget(self, fresh: list[bytes]) -> None:
        """Forget statements prepared in a round trip that failed: perhaps never prepared, or rolled back."""
        for sql in fresh:
            name = self.state.names.pop(sql, None)
            if name is not None:
                self.state.stale.append(name)

    def _results(self) -> list:
        """Read the answers up to the Sync, waiting for the socket between them."""
        import psycopg
        from psycopg import pq

        pgconn = self.pgconn
        poller = select.poll()
        while pgconn.flush():
            poller.register(pgconn.socket, select.POLLOUT)
            poller.poll()
            poller.unregister(pgconn.socket)
        poller.register(pgconn.socket, select.POLLIN)
        results, ended = [], False
        while True:
            while pgconn.is_busy():
                poller.poll()
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                if ended or pgconn.status != pq.ConnStatus.OK:  # two ends in a row: nothing more will come
                    raise psycopg.OperationalError(
                        f"the connection to PostgreSQL ended a round trip early: {pgconn.get_error_message()}")
                ended = True  # the end of one statement's answer
                continue
            ended = False
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(result)

    def _outcome(self, result: Any) -> list | None | Exception:
        from psycopg import errors, pq

        if result.status == pq.ExecStatus.TUPLES_OK:
            loaders = [self._loader(result.ftype(column)) for column in range(result.nfields)]
            return [tuple(None if (value := result.get_value(row, column)) is None else loader.load(value)
                          for column, loader in enumerate(loaders)) for row in range(result.ntuples)]
        if result.status == pq.ExecStatus.COMMAND_OK:
            return None
        if result.status == pq.ExecStatus.PIPELINE_ABORTED:
            return errors.InFailedSqlTransaction("skipped: an earlier statement of the round trip failed")
        sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        message = result.error_message.decode(self.raw.info.encoding, "replace").strip()
        try:
            error_class = errors.lookup(sqlstate)
        except KeyError:  # no SQLSTATE, or one psycopg does not know
            error_class = errors.DatabaseError
        return error_class(message, info=result, encoding=self.raw.info.encoding)

    def _dump(self, value: Any) -> bytes | None:
        from psycopg.adapt import PyFormat

        if value is None:
            return None
        # The poll's most common values (ids, and text on a UTF-8 connection) without a dumper's
        # call: the same bytes for a fraction of the CPU. Text with a NUL goes to the dumper, which refuses it.
        kind = type(value)
        if kind is int:
            return b"%d" % value
        if kind is str and self.state.utf8 and "\x00" not in value:
            return value.encode()
        dumper = self.state.dumpers.get(kind)
        if dumper is None:
            dumper = self.raw.adapters.get_dumper(kind, PyFormat.TEXT)(kind, self.raw)
            dumper = self.state.dumpers[kind] = dumper.upgrade(value, PyFormat.TEXT)
        return dumper.dump(value)

    def _loader(self, oid: int) -> Any:
        from psycopg import pq

        loader = self.state.loaders.get(oid)
        if loader is None:
            adapters = self.raw.adapters
            loader = self.state.loaders[oid] = (adapters.get_loader(oid, pq.Format.TEXT)
                                                or adapters.get_loader(0, pq.Format.TEXT))(oid, self.raw)
        return loader


class _ConnectionState:
    """What `_RoundTrip` keeps for one connection: its prepared statements by SQL (and how many names were
    given out), the names to close before they are given again, the dumpers and loaders of its adapters."""

    def __init__(self) -> None:
        self.names: dict[bytes, bytes] = {}
        self.count = 0
        self.stale: list[bytes] = []  # names perhaps still prepared, to close
        self.free: list[bytes] = []  # names closed, to give again
        self.dumpers: dict[type, Any] = {}
        self.utf8: bool | None = None  # whether the connection's text goes as UTF-8, once known
        self.loaders: dict[int, Any] = {}

    def forget(self) -> None:
        """Forget the prepared statements, which may be gone: they are closed, and prepared afresh when needed."""
        self.stale.extend(self.names.values())
        self.names.clear()


_STATE = "helpdesk_round_trip"  # the pool entry's info: its _ConnectionState

_BIND = re.compile(r"%\((\w+)\)s|%%")


@lru_cache(maxsize=512)
def _positional_sql(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """Return `sql` with its %(name)s placeholders numbered ($1, $2...) as libpq wants, and the names in order."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _BIND.sub(number, sql).encode(), tuple(names)


def _idle(raw: Any) -> bool:
    """Tell whether the driver's connection has no transaction open."""
    from psycopg.pq import TransactionStatus

    return raw.pgconn.transaction_status == TransactionStatus.IDLE


@cache
def _pipeline_supported() -> bool:
    import psycopg

    return psycopg.Pipeline.is_supported()


@cache
def _can_close_prepared() -> bool:
    import psycopg

    return psycopg.capabilities.has_send_close_prepared()
