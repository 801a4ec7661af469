"""Fixtures for polling tests: the real Dovecot, a private folder per test, mailbox rows pointing at it."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

import pytest

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSession, ImapSettings
from helpdesk.mail.secrets import CredentialBox
from helpdesk.models import InboundMail, Mailbox, Ticket

HOST = "127.0.0.1"
USER, PASSWORD = "support@example.test", "supportpw"


@pytest.fixture
def app_config(app_config, services) -> dict:
    """Trust the test CA the way an admin points TLS_CA_FILE at an in-house CA."""
    app_config["TLS_CA_FILE"] = services["HELPDESK_TEST_CA"]
    return app_config


@pytest.fixture
def imap(dovecot) -> Callable[..., ImapSettings]:
    """Return a factory of settings for the test Dovecot's implicit-TLS port."""
    return dovecot


@pytest.fixture
def make_mailbox(app, services, folder) -> Callable[..., Mailbox]:
    """Return a factory of enabled mailbox rows reading this test's folder over implicit TLS."""

    def make(**overrides) -> Mailbox:
        password = overrides.pop("password", PASSWORD)
        values = dict(name="Support", host=HOST, port=int(services["HELPDESK_TEST_IMAPS_PORT"]), security="ssl",
                      username=USER, folder=folder, enabled=True, after_processing="seen",
                      reply_from_address="support@example.test")
        values.update(overrides)
        mailbox = Mailbox(**values, password_encrypted=CredentialBox(app.config["CREDENTIALS_KEY"]).seal(password))
        db.session.add(mailbox)
        db.session.commit()
        return mailbox

    return make


@pytest.fixture
def append(imap, folder) -> Callable[..., list[int]]:
    """Return a function that APPENDs raw mails to the test folder (or another) and returns their UIDs."""

    def put(*mails: bytes, to: str | None = None) -> list[int]:
        with ImapSession(imap()) as session:
            return [session.append(to or folder, raw) for raw in mails]

    return put


@pytest.fixture
def server_state(imap, folder) -> Callable[..., dict[int, set[bytes]]]:
    """Return a function reading {uid: flags} of a folder through a second, independent connection."""

    def read(name: str | None = None) -> dict[int, set[bytes]]:
        with ImapSession(imap()) as session:
            session.select(name or folder, readonly=True)
            uids = session.client.search(["ALL"])
            if not uids:
                return {}
            return {uid: set(data[b"FLAGS"]) for uid, data in session.client.fetch(uids, ["FLAGS"]).items()}

    return read


@pytest.fixture
def customer_mail() -> Callable[..., bytes]:
    """Return a factory of customer mails, unique per test, optionally with a PDF attached."""
    tag = uuid.uuid4().hex[:12]

    def make(n: int = 1, *, attachment: bytes | None = None, sender: str | None = None, subject: str | None = None,
             headers: dict[str, str] | None = None, body: str | None = None) -> bytes:
        msg = EmailMessage()
        msg["From"] = f"Customer {n} <{sender or f'customer{n}.{tag}@example.org'}>"
        msg["To"] = USER
        msg["Subject"] = subject or f"Printer {n} is on fire ({tag})"
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg["Message-ID"] = make_msgid(f"m{n}.{tag}", domain="example.org")
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body or f"Hello,\n\nprinter number {n} smokes since this morning.\n\nRegards\nCustomer {n}\n")
        if attachment is not None:
            msg.add_attachment(attachment, maintype="application", subtype="pdf", filename=f"photo-{n}.pdf")
        return msg.as_bytes(policy=SMTP)  # CRLF, as mail arrives on the server

    return make


@pytest.fixture
def read_tickets(app) -> Callable[[], list[Ticket]]:
    """Return a function reading every ticket afresh from the database, oldest first."""

    def read() -> list[Ticket]:
        db.session.expire_all()
        return list(db.session.scalars(db.select(Ticket).order_by(Ticket.id)))

    return read


@pytest.fixture
def read_inbound(app) -> Callable[[], list[InboundMail]]:
    """Return a function reading the inbound log afresh, oldest first."""

    def read() -> list[InboundMail]:
        db.session.expire_all()
        return list(db.session.scalars(db.select(InboundMail).order_by(InboundMail.id)))

    return read
