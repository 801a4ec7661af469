"""Fixtures for the outbound pipeline: real aiosmtpd servers (from tests/smtp/servers.py) and SMTP settings."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from helpdesk.extensions import db

FROM_ADDRESS = "support@helpdesk.test"


def _load_smtp_servers() -> ModuleType:
    # The same module name as tests/smtp/conftest.py uses, so both share one loaded copy.
    name = "helpdesk_tests_smtp_servers"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "smtp" / "servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = _load_smtp_servers()


@pytest.fixture(scope="session")
def outbox_certs(tmp_path_factory):
    """Return the test CA and server certificates for the SMTP test servers."""
    return servers.make_certificates(tmp_path_factory.mktemp("outbox-certs"))


@pytest.fixture
def app_config(app_config, outbox_certs):
    """Trust the test CA, as an admin would set TLS_CA_FILE for an in-house CA."""
    app_config["TLS_CA_FILE"] = outbox_certs.ca_file
    return app_config


@pytest.fixture
def smtp_server(outbox_certs) -> Iterator[Callable[..., object]]:
    """Return a function that starts a real test SMTP server of a kind; all stop after the test."""
    started = []

    def start(kind: str = "starttls", **options):
        server = servers.start_server(kind, outbox_certs, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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
