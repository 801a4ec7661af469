"""Fixtures for the Outbound (SMTP) screen: the real aiosmtpd servers of tests/smtp, and the app trusting their CA."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


def load_smtp_servers() -> ModuleType:
    """Import tests/smtp/servers.py under the same name tests/smtp/conftest.py uses, so both share one module."""
    name = "helpdesk_tests_smtp_servers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "smtp" / "servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running: dataclasses resolve the module's annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = load_smtp_servers()


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory: pytest.TempPathFactory):
    """Return the test CA and the server certificates (one CA-signed, one self-signed)."""
    return servers.make_certificates(tmp_path_factory.mktemp("smtp-certs"))


@pytest.fixture
def app_config(app_config, smtp_certs) -> dict:
    """Trust the test CA the way an admin would point TLS_CA_FILE at an in-house CA."""
    app_config["TLS_CA_FILE"] = smtp_certs.ca_file
    return app_config


@pytest.fixture
def smtp_server(smtp_certs) -> Iterator[Callable[..., object]]:
    """Return a function that starts a real test SMTP server of a kind; all stop after the test."""
    started = []

    def start(kind: str = "starttls", **options: object):
        server = servers.start_server(kind, smtp_certs, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Return a port where connections are refused."""
    closed = servers.ClosedPort()
    yield closed.port
    closed.close()
