"""Fixtures for the outbound pipeline: the test CA trusted and SMTP settings for a real test server."""
from __future__ import annotations

import pytest

from helpdesk.extensions import db

FROM_ADDRESS = "support@helpdesk.test"


@pytest.fixture
def app_config(trust_test_ca):
    return trust_test_ca


@pytest.fixture
def configure_smtp(app):
    """Return a function that stores the SMTP settings for a test server, as the Outbound screen saves them."""
    from helpdesk.services.smtp_config import save_config

    def configure(server, from_address: str = FROM_ADDRESS, from_name: str = "Example Support"):
        save_config({"host": server.host, "port": server.port, "security": server.security,
                     "username": server.username, "password": server.password, "from_address": from_address,
                     "from_name": from_name, "verify_tls": True, "timeout": 10}, None)
        db.session.commit()
        return server

    return configure


@pytest.fixture
def smtp(smtp_server, configure_smtp):
    """A STARTTLS+AUTH server with a CA-signed certificate, configured as the helpdesk's SMTP server."""
    return configure_smtp(smtp_server("starttls"))
