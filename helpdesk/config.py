"""Settings from the environment; the defaults run the whole helpdesk on one bare machine."""
from __future__ import annotations

import os
from pathlib import Path


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def from_environment(instance_path: str) -> dict:
    """Read every setting the helpdesk knows from environment variables."""
    env = os.environ
    instance = Path(instance_path)
    return {
        "SECRET_KEY": env.get("SECRET_KEY") or _instance_secret(instance, "secret_key"),
        "SQLALCHEMY_DATABASE_URI": _database_url(env.get("DATABASE_URL"), instance),
        "REDIS_URL": env.get("REDIS_URL") or None,
        "S3_ENDPOINT": env.get("S3_ENDPOINT") or None,
        "S3_ACCESS_KEY": env.get("S3_ACCESS_KEY", ""),
        "S3_SECRET_KEY": env.get("S3_SECRET_KEY", ""),
        "S3_BUCKET": env.get("S3_BUCKET", "helpdesk-attachments"),
        "S3_SECURE": _flag(env.get("S3_SECURE"), default=True),
        "ATTACHMENT_FOLDER": env.get("ATTACHMENT_FOLDER") or str(instance / "attachments"),
        "CREDENTIALS_KEY": env.get("CREDENTIALS_KEY") or _instance_secret(instance, "credentials_key", fernet=True),
        "PUBLIC_BASE_URL": (env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "COMPANY_NAME": env.get("COMPANY_NAME", "Helpdesk"),
        "MAIL_MAX_SIZE": int(env.get("MAIL_MAX_SIZE", 25 * 1024 * 1024)),
        "AUTO_MAILS_PER_HOUR": int(env.get("AUTO_MAILS_PER_HOUR", 10)),
        "INBOUND_CREATE_CONTACTS": _flag(env.get("INBOUND_CREATE_CONTACTS"), default=True),
        # More than INBOUND_LOOP_LIMIT mails from one sender within INBOUND_LOOP_WINDOW seconds: a mail loop.
        "INBOUND_LOOP_LIMIT": int(env.get("INBOUND_LOOP_LIMIT", 20)),
        "INBOUND_LOOP_WINDOW": int(env.get("INBOUND_LOOP_WINDOW", 600)),
        # Raw bytes of quarantined mails go here when the attachment store itself is down
        # (unset: an inbound-spool folder beside ATTACHMENT_FOLDER).
        "INBOUND_SPOOL_FOLDER": env.get("INBOUND_SPOOL_FOLDER") or None,
        # A poll that dies (a killed worker) keeps its mailbox locked this long at most.
        "MAILBOX_LOCK_SECONDS": int(env.get("MAILBOX_LOCK_SECONDS", 300)),
        # Days the exact bytes of sent and of processed inbound mail are kept (quarantined mail: until handled).
        "MAIL_RETENTION_DAYS": int(env.get("MAIL_RETENTION_DAYS", 90)),
        "INVITE_TTL_HOURS": int(env.get("INVITE_TTL_HOURS", 72)),
        "OUTBOX_MAX_ATTEMPTS": int(env.get("OUTBOX_MAX_ATTEMPTS", 20)),
        "TLS_CA_FILE": env.get("TLS_CA_FILE") or None,
        "JOBS_INLINE": _flag(env.get("JOBS_INLINE")),
        # Without Redis, `email ingest` and `email poll` wait this long for the jobs they queued
        # (confirmation mails) before they exit; the outbox sweep sends what is left.
        "JOBS_WAIT_SECONDS": float(env.get("JOBS_WAIT_SECONDS") or 30),
        # Seconds between send retries after a transient SMTP failure (RQ's Retry intervals).
        "RETRY_INTERVALS": [int(x) for x in env.get("RETRY_INTERVALS", "10,30,60,300,900").split(",")],
        # How many reverse proxies stand in front of the console; their X-Forwarded-* headers are
        # believed only then (client address for sign-in throttling, https for cookies and links).
        "PROXY_COUNT": int(env.get("PROXY_COUNT") or 0),
        # Failed sign-ins allowed per account and per client address before sign-in is refused for a while.
        "LOGIN_LIMIT_ACCOUNT": env.get("LOGIN_LIMIT_ACCOUNT") or "10 per 15 minutes",
        "LOGIN_LIMIT_ADDRESS": env.get("LOGIN_LIMIT_ADDRESS") or "50 per 15 minutes",
    }


def _database_url(url: str | None, instance: Path) -> str:
    if not url:
        return f"sqlite:///{instance / 'helpdesk.sqlite'}"
    # Heroku-style URLs name the driver "postgres"; SQLAlchemy wants a dialect+driver.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgres://")
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file that does not exist yet readable by its owner only, as the key files are.

    SQLite gives its -wal and -shm files the mode of the database file, so they stay private too.
    Other URLs, and files that exist, are left alone.
    """
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return
    path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))  # an empty file is an empty database


def _instance_secret(instance: Path, name: str, fernet: bool = False) -> str:
    """Keep a generated secret in the instance folder so a bare machine needs no setup."""
    path = instance / name
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    if fernet:
        from cryptography.fernet import Fernet

        value = Fernet.generate_key().decode()
    else:
        value = os.urandom(32).hex()
    path.write_text(value)
    path.chmod(0o600)
    return value
