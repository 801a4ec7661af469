"""Fixtures of the template editor tests."""
import pytest


@pytest.fixture
def plain_smtp_server(smtp_server):
    """A real SMTP server on 127.0.0.1 (no TLS, no AUTH) that records what it receives."""
    return smtp_server("plain")
