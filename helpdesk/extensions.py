"""Flask extensions, created unbound and bound in create_app."""
import sqlite3

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from htmx_flask import Htmx
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    # Named constraints so Alembic migrations are identical on SQLite and PostgreSQL.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = Htmx()


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
