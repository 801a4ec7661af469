"""SQLite in a poll: the statements run for every mail go to the driver's cursor, compiled once.

Through SQLAlchemy, what SQLite itself does for a one-row INSERT or a lookup is about a quarter
of the statement's cost; the rest is the engine's per-statement work (cache lookups, execution
context, events, result objects). Here the values still pass through SQLAlchemy's own bind
processors, a failure raises the same wrapped exception, and the statement runs on the session's
connection, in its transaction.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Table, exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

Prepared = tuple[Any, list[tuple[str, Any]]]  # the compiled statement, each parameter's name and bind processor
_INSERTS: dict[tuple[str, tuple[str, ...]], Prepared | None] = {}
_QUERIES: dict[Select, Prepared | None] = {}  # None: a result column needs converting; SQLAlchemy runs it


def insert(connection: Connection, table: Table, row: dict[str, Any]) -> int:
    """INSERT `row` into `table`; return the new row's id (a row without every column goes through SQLAlchemy)."""
    key = (table.name, tuple(row))
    if key not in _INSERTS:
        compiled = table.insert().compile(dialect=connection.dialect, column_keys=list(row))
        # Columns left out take their defaults, which only SQLAlchemy's execution computes.
        complete = set(compiled.positiontup) <= set(row)
        _INSERTS[key] = _prepare(connection, compiled) if complete else None
    prepared = _INSERTS[key]
    if prepared is None:
        return connection.execute(table.insert().returning(table.c.id), row).scalar_one()
    cursor = _execute(connection, prepared, row)
    try:
        return cursor.lastrowid
    finally:
        cursor.close()


def one_row(connection: Connection, statement: Select, params: dict[str, Any]) -> tuple:
    """Run a query that returns exactly one row, and return that row."""
    if statement not in _QUERIES:
        dialect = connection.dialect
        converted = any(column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
                        for column in statement.selected_columns)
        prepared = None if converted else _prepare(connection, statement.compile(dialect=dialect))
        _QUERIES[statement] = prepared
    prepared = _QUERIES[statement]
    if prepared is None:
        return tuple(connection.execute(statement, params).one())
    cursor = _execute(connection, prepared, params)
    try:
        rows = cursor.fetchmany(2)
    finally:
        cursor.close()
    if len(rows) != 1:
        raise exc.MultipleResultsFound("expected one row") if rows else exc.NoResultFound("expected one row")
    return tuple(rows[0])


def _prepare(connection: Connection, compiled: Any) -> Prepared | None:
    dialect = connection.dialect
    if any(bind.expanding for bind in compiled.binds.values()):
        return None  # IN lists: SQLAlchemy writes the placeholders at each execution
    return compiled, [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                      for name in compiled.positiontup]


def _execute(connection: Connection, prepared: Prepared, values: dict[str, Any]) -> Any:
    compiled, binds = prepared
    sql = compiled.string
    values = compiled.construct_params(values)  # adds the statement's own literal values
    params = []
    for name, process in binds:
        value = values[name]
        params.append(value if process is None or value is None else process(value))
    dbapi = connection.dialect.dbapi
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, params)
    except dbapi.Error as error:
        cursor.close()
        raise exc.DBAPIError.instance(sql, params, error, dbapi.Error) from error
    return cursor
