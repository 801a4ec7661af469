"""Fixtures for the SMTP tests: real aiosmtpd servers on 127.0.0.1 with test certificates."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


def load_smtp_servers() -> ModuleType:
    """Import tests/smtp/servers.py once, under one name, from any conftest that needs it."""
    name = "helpdesk_tests_smtp_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("servers.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered before running so dataclasses can resolve the module's own annotations.
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = load_smtp_servers()


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory: pytest.TempPathFactory):
    """Return the test CA, a CA-signed certificate for localhost/127.0.0.1 and an untrusted one."""
    return servers.make_certificates(tmp_path_factory.mktemp("smtp-certs"))


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
def silent_port() -> Iterator[int]:
    """Return a port that accepts TCP connections and never greets."""
    silent = servers.SilentServer()
    yield silent.port
    silent.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Return a port where connections are refused."""
    closed = servers.ClosedPort()
    yield closed.port
    closed.close()
