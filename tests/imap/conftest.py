"""Fixtures for the IMAP session tests: settings for the real Dovecot and a private folder per test."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from helpdesk.mail.imap import ImapSession, ImapSettings

HOST = "127.0.0.1"


@pytest.fixture
def imap_settings(services) -> Callable[..., ImapSettings]:
    """Return a factory of settings for the test Dovecot (STARTTLS port, support user by default)."""

    def make(**overrides) -> ImapSettings:
        values = {
            "host": HOST,
            "port": int(services["HELPDESK_TEST_IMAP_PORT"]),
            "security": "starttls",
            "username": "support@example.test",
            "password": "supportpw",
            "ca_file": services["HELPDESK_TEST_CA"],
            "timeout": 10.0,
        }
        values.update(overrides)
        return ImapSettings(**values)

    return make


@pytest.fixture
def folder(imap_settings) -> Iterator[str]:
    """Create a uuid-named folder under INBOX for this test alone and remove it afterwards."""
    name = f"INBOX.t{uuid.uuid4().hex}"
    with ImapSession(imap_settings()) as session:
        session.create_folder(name)
    yield name
    with ImapSession(imap_settings()) as session:
        # Children first: Dovecot refuses to delete a folder that still has sub-folders.
        mine = [f for f in session.list_folders() if f == name or f.startswith(name + ".")]
        for each in sorted(mine, key=len, reverse=True):
            session.delete_folder(each)


@pytest.fixture
def make_message() -> Callable[[int], bytes]:
    """Return a factory of small raw messages with CRLF line ends and 8-bit text, unique per test."""
    tag = uuid.uuid4().hex

    def make(n: int) -> bytes:
        return (
            f"From: Customer {n} <c{n}@example.test>\r\n"
            f"To: support@example.test\r\n"
            f"Subject: Ticket {n} {tag}\r\n"
            f"Message-ID: <{tag}.{n}@example.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n"
            f"Bonjour, message numéro {n}.\r\n"
            f"{'x' * (n * 100)}\r\n"
        ).encode("utf-8")

    return make
