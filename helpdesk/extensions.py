"""Flask extensions, created unbound and bound in create_app."""
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_wtf import CSRFProtect
from htmx_flask import Htmx
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session

from helpdesk import pipeline


class Base(DeclarativeBase):
    # Named constraints so Alembic migrations are identical on SQLite and PostgreSQL.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


_ONE_CONNECTION = "helpdesk_one_connection"


class _Session(FlaskSession):
    """Flask-SQLAlchemy's session, which keeps to one connection while `one_connection()` lasts."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):  # noqa: ANN001, ANN201 - as overridden
        """Return the connection of `one_connection()` when there is one, else the model's engine."""
        kept = self.info.get(_ONE_CONNECTION)
        if bind is None and kept is not None:
            return kept
        return super().get_bind(mapper, clause=clause, bind=bind, **kwargs)


db = SQLAlchemy(model_class=Base, session_options={"class_": _Session})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = Htmx()
# No default limits: only the routes that name a limit (sign-in) are throttled.
limiter = Limiter(key_func=get_remote_address)


@event.listens_for(Engine, "connect")
def _sqlite_write_ahead_log(dbapi_connection, _connection_record) -> None:
    """Put a SQLite database in WAL mode; other databases are left alone."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    # The rollback journal pays several fsyncs per commit, the write-ahead log one, and
    # readers no longer block the writer. synchronous stays FULL: a commit must be on disk
    # before the poller marks the mail done on the IMAP server (NORMAL could lose the last
    # commits on power loss, and with them moved or deleted mail).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


_GROUP_COMMITS = "helpdesk_group_commits"


@contextmanager
def group_commits() -> Iterator[None]:
    """Let the block's commits skip the wait for the disk, until a `durable_commit()` makes them all durable.

    Each commit stays atomic; only its durability waits for the next durable commit, which
    flushes everything written before it in one go (SQLite's WAL, PostgreSQL's WAL alike).
    A poll writes each mail in its own commit and tells the IMAP server only after a durable one.
    """
    session = db.session()
    session.info[_GROUP_COMMITS] = pipeline.Ids()  # on PostgreSQL, the ids its rows take
    try:
        yield
    finally:
        session.info.pop(_GROUP_COMMITS, None)


@contextmanager
def one_connection() -> Iterator[None]:
    """Run the block's transactions on one connection, not one taken from the pool and given back for each.

    A poll commits each mail on its own; the pool's checkout and reset cost more than a small
    mail's INSERTs. On PostgreSQL the block's transactions are begun by `pipeline.own_begin()`, each
    BEGIN in the round trip of what follows it. Begin it with no transaction open: whatever the
    block leaves open is rolled back.
    """
    session = db.session()
    if _ONE_CONNECTION in session.info:
        yield
        return
    with db.engine.connect() as connection:
        session.info[_ONE_CONNECTION] = connection
        try:
            with pipeline.own_begin(connection):
                try:
                    yield
                finally:
                    session.rollback()
        finally:
            session.info.pop(_ONE_CONNECTION, None)


@contextmanager
def durable_commit() -> Iterator[None]:
    """Make the block's commit wait for the disk, and with it every commit of the group before it."""
    session = db.session()
    grouped = session.info.pop(_GROUP_COMMITS, None)
    try:
        yield
    finally:
        if grouped:
            session.info[_GROUP_COMMITS] = grouped


@event.listens_for(Session, "after_begin")
def _commit_durability(session: Session, _transaction, connection) -> None:
    grouped = bool(session.info.get(_GROUP_COMMITS))
    name = connection.dialect.name
    if name == "sqlite":
        wanted = "NORMAL" if grouped else "FULL"
        dbapi = connection.connection.dbapi_connection
        # SQLite refuses the change inside a transaction; the next begin applies it then.
        if connection.info.get("synchronous", "FULL") != wanted and not dbapi.in_transaction:
            connection.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            connection.info["synchronous"] = wanted
    elif name == "postgresql" and grouped:
        if pipeline.available(connection):
            # Read when the COMMIT runs: sent with it, it costs no round trip of its own.
            pipeline.at_commit(connection, "SET LOCAL synchronous_commit TO OFF")
        else:
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def grouped_ids(session: Session) -> pipeline.Ids | None:
    """Return the ids of the session's `group_commits()`; None outside one (or in its `durable_commit()`)."""
    return session.info.get(_GROUP_COMMITS)
