"""Timestamps stored as naive UTC, so SQLite and PostgreSQL compare them alike."""
from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current UTC time without tzinfo (how the database stores it)."""
    return datetime.now(UTC).replace(tzinfo=None)
