"""Fixtures of the template editor tests: Debian's Chromium for Playwright and the app on a real port."""
from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from werkzeug.serving import make_server


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Drive Debian's Chromium: Playwright's own browser download is not available here."""
    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium"),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }


@pytest.fixture
def served_app(app):
    """Serve the test app over HTTP on a free local port; return its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="templates-editor-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _smtp_servers() -> ModuleType:
    """Import tests/smtp/servers.py under the one name every conftest shares it by."""
    name = "helpdesk_tests_smtp_servers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "smtp" / "servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running: its dataclasses resolve annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory):
    return _smtp_servers().make_certificates(tmp_path_factory.mktemp("smtp-certs"))


@pytest.fixture
def plain_smtp_server(smtp_certs):
    """A real SMTP server on 127.0.0.1 (no TLS, no AUTH) that records what it receives."""
    server = _smtp_servers().start_server("plain", smtp_certs)
    yield server
    server.stop()
