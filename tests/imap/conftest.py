"""Fixtures for the IMAP session tests: settings for the real Dovecot and a private folder per test."""
from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from helpdesk.mail.imap import ImapSettings

@pytest.fixture
def imap_settings(dovecot, services) -> Callable[..., ImapSettings]:
    """Return a factory of settings for the test Dovecot's plain/STARTTLS port (STARTTLS by default)."""
    port = int(services["HELPDESK_TEST_IMAP_PORT"])
    return lambda **overrides: dovecot(**{"security": "starttls", "port": port, **overrides})

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
