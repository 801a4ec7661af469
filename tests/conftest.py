"""Fixtures shared by every test: the real servers, the app, clients and factories."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SERVICE_VARS = ("HELPDESK_TEST_REDIS_URL", "HELPDESK_TEST_S3_ENDPOINT", "HELPDESK_TEST_IMAP_PORT",
                "HELPDESK_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Return the real servers' addresses, starting them when `make test` has not."""
    if all(os.environ.get(v) for v in SERVICE_VARS):
        yield dict(os.environ)
        return
    state = tmp_path_factory.mktemp("services")
    subprocess.run(["bash", str(HERE / "services" / "start.sh"), str(state), sys.executable], check=True)
    env = {}
    for line in (state / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    try:
        yield env
    finally:
        subprocess.run(["bash", str(HERE / "services" / "stop.sh"), str(state)], check=False)
