"""Writing one row with a Core INSERT and keeping it as a loaded object, for the paths that write many."""
from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from helpdesk import pipeline, sqlite_direct
from helpdesk.extensions import db, grouped_ids

M = TypeVar("M", bound=db.Model)
_INSERTS: dict[type, Any] = {}
_CONFIGURED: set[type] = set()


def insert_row(model: type[M], values: dict[str, Any], **related: Any) -> M:
    """INSERT a row in the session's transaction and return it as a persistent object.

    A Core INSERT costs a fraction of the ORM's flush of one object; the object is built from
    the values written (column defaults filled in here), so reading it back needs no query.
    The INSERT runs now, or, on PostgreSQL inside `group_commits()`, goes with the transaction's
    next statement or its commit (`helpdesk.pipeline`).
    `related` sets relationships (already written objects) on the returned object, without
    backref events: a loaded collection on the other side does not list the new object.
    """
    row = _complete(model, values)
    row["id"] = _insert(model, row)
    obj = _built(model, row)
    for name, value in related.items():
        set_committed_value(obj, name, value)
    make_transient_to_detached(obj)
    # SQLite gives a rolled-back row's id out again; an object left from that row is stale.
    stale = db.session.identity_map.get(inspect(obj).key)
    if stale is not None:
        db.session.expunge(stale)
    db.session.add(obj)
    return obj


def loaded(model: type[M], row: dict[str, Any]) -> M:
    """Return the persistent object of a row read elsewhere (its id and some of its columns), as a query would."""
    obj = db.session.identity_map.get(inspect(model).identity_key_from_primary_key([row["id"]]))
    if obj is None:
        obj = _built(model, row)
        make_transient_to_detached(obj)  # the columns not in `row` load when first used
        db.session.add(obj)
        return obj
    state = inspect(obj)
    for name, value in row.items():
        if name in state.unloaded:  # expired at the last commit; a change not flushed yet stays
            set_committed_value(obj, name, value)
    return obj


def _built(model: type[M], row: dict[str, Any]) -> M:
    # Built as the ORM builds a loaded row: values straight into the instance's dict. The
    # constructor would run an attribute event for each column, and mark every one changed.
    if model not in _CONFIGURED:
        configure_mappers()  # the constructor would have; a bare instance needs the attributes set up
        _CONFIGURED.add(model)
    obj = model.__mapper__.class_manager.new_instance()
    obj.__dict__.update(row)
    return obj


def insert_id(model: type[db.Model], values: dict[str, Any]) -> int:
    """INSERT a row in the session's transaction and return its id (for rows nobody reads back)."""
    return _insert(model, _complete(model, values))


def _complete(model: type[db.Model], values: dict[str, Any]) -> dict[str, Any]:
    """Return `values` with every other column's default, as the ORM would have written them."""
    row = {}
    for column in model.__table__.columns:
        if column.name in values:
            row[column.name] = values[column.name]
        elif column.primary_key:
            continue
        elif column.default is None:
            row[column.name] = None
        elif column.default.is_scalar:
            row[column.name] = column.default.arg
        else:
            row[column.name] = column.default.arg(None)  # SQLAlchemy wraps plain callables to take a context
    return row


def _insert(model: type[db.Model], row: dict[str, Any]) -> int:
    connection = db.session.connection()
    ids = grouped_ids(db.session())
    if ids is not None and pipeline.available(connection):
        return pipeline.insert(connection, model.__table__, row, ids)  # sent with what comes next
    if connection.dialect.name == "sqlite":
        return sqlite_direct.insert(connection, model.__table__, row)
    statement = _INSERTS.get(model)
    if statement is None:
        table = model.__table__
        statement = _INSERTS[model] = table.insert().returning(table.c.id)
    return connection.execute(statement, row).scalar_one()
