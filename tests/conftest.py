"""Fixtures shared by every test: the real servers, the app, clients and factories."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SERVICE_VARS = ("HELPDESK_TEST_REDIS_URL", "HELPDESK_TEST_S3_ENDPOINT", "HELPDESK_TEST_IMAP_PORT",
                "HELPDESK_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def services():
    """Return the real servers' addresses, starting them when `make test` has not."""
    if all(os.environ.get(v) for v in SERVICE_VARS):
        yield dict(os.environ)
        return
    import tempfile

    # Not under pytest's tmp folder: that one is private to root, and Dovecot and PostgreSQL run as other users.
    state = Path(tempfile.mkdtemp(prefix="helpdesk-services."))
    try:
        # Inside the try: servers started before a failing one are stopped too.
        subprocess.run(["bash", str(HERE / "services" / "start.sh"), str(state), sys.executable], check=True)
        env = {}
        for line in (state / "env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        yield env
    finally:
        subprocess.run(["bash", str(HERE / "services" / "stop.sh"), str(state)], check=False)
        shutil.rmtree(state, ignore_errors=True)


# --- the app, on SQLite (default) or PostgreSQL (HELPDESK_TEST_DATABASE=postgresql) -------------

from cryptography.fernet import Fernet  # noqa: E402

from helpdesk import create_app  # noqa: E402
from helpdesk.extensions import db  # noqa: E402

DATABASE = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")
# The PostgreSQL pass also keeps attachments in S3 and runs jobs through Redis-backed code paths where asked.
STORE = os.environ.get("HELPDESK_TEST_STORE", "s3" if DATABASE == "postgresql" else "local")
CREDENTIALS_KEY = Fernet.generate_key().decode()


def _upgrade(uri: str) -> None:
    from flask_migrate import upgrade

    app = create_app({"SQLALCHEMY_DATABASE_URI": uri, "TESTING": True, "SECRET_KEY": "x",
                      "CREDENTIALS_KEY": CREDENTIALS_KEY})
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def database_template(tmp_path_factory, request):
    """Migrate once per session; each test then gets a fresh copy of the migrated database."""
    if DATABASE == "postgresql":
        env = request.getfixturevalue("services")
        base = env["HELPDESK_TEST_POSTGRES_URL"]
        from sqlalchemy import create_engine, text

        # The superuser creates and drops the per-test databases (FORCE may have to end any backend).
        admin_url = env.get("HELPDESK_TEST_POSTGRES_ADMIN_URL") or base
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"hd_template_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER helpdesk'))
        _upgrade(base.rsplit("/", 1)[0] + "/" + name)
        yield ("postgresql", base, name, admin)
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("db") / "template.sqlite"
        _upgrade(f"sqlite:///{path}")
        yield ("sqlite", path)


@pytest.fixture
def database_uri(database_template, tmp_path):
    """Return the URI of a fresh, migrated database for one test."""
    if database_template[0] == "sqlite":
        path = tmp_path / "helpdesk.sqlite"
        shutil.copy(database_template[1], path)
        yield f"sqlite:///{path}"
        return
    _, base, template, admin = database_template
    from sqlalchemy import text

    name = f"hd_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER helpdesk'))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def app_config(database_uri, tmp_path, request) -> dict:
    """Return the config overrides of the test app; tests may add to it before `app` is built."""
    config = {
        "TESTING": True, "SECRET_KEY": "test-secret", "SQLALCHEMY_DATABASE_URI": database_uri,
        "CREDENTIALS_KEY": CREDENTIALS_KEY, "ATTACHMENT_FOLDER": str(tmp_path / "attachments"),
        "JOBS_INLINE": True, "REDIS_URL": None, "S3_ENDPOINT": None,
        "PUBLIC_BASE_URL": "http://helpdesk.test", "COMPANY_NAME": "Example Support",
        "RETRY_INTERVALS": [0, 0, 0],
    }
    uses_s3 = STORE == "s3" or "services" in request.fixturenames
    env = request.getfixturevalue("services") if uses_s3 else {}
    if STORE == "s3":
        config.update(S3_ENDPOINT=env["HELPDESK_TEST_S3_ENDPOINT"], S3_ACCESS_KEY=env["HELPDESK_TEST_S3_ACCESS_KEY"],
                      S3_SECRET_KEY=env["HELPDESK_TEST_S3_SECRET_KEY"], S3_SECURE=False,
                      S3_BUCKET=f"hd-{uuid.uuid4().hex[:12]}")
    yield config
    if uses_s3 and config.get("S3_ENDPOINT"):
        # Tests may have pointed the app elsewhere (a closed port, a wrong secret): clean the real server.
        remove_bucket(env, config["S3_BUCKET"])


def remove_bucket(env: dict, bucket: str) -> None:
    """Delete a test's S3 bucket and its objects, so the test server does not fill up."""
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    s3 = Minio(env["HELPDESK_TEST_S3_ENDPOINT"], access_key=env["HELPDESK_TEST_S3_ACCESS_KEY"],
               secret_key=env["HELPDESK_TEST_S3_SECRET_KEY"], secure=False)
    if not s3.bucket_exists(bucket):
        return
    objects = [DeleteObject(o.object_name) for o in s3.list_objects(bucket, recursive=True)]
    for error in s3.remove_objects(bucket, objects):
        raise AssertionError(f"could not delete {error.name} from the test bucket: {error}")
    s3.remove_bucket(bucket)


@pytest.fixture
def app(app_config):
    """The helpdesk app on a fresh database."""
    app = create_app(app_config)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


class Auth:
    """Sign a test client in and out, and carry its CSRF token for form posts."""

    def __init__(self, client):
        self.client = client
        self.token = ""

    def refresh_token(self, url: str = "/login") -> str:
        page = self.client.get(url)
        match = CSRF_META.search(page.get_data(as_text=True))
        assert match, f"no CSRF token on {url}"
        self.token = match.group(1)
        return self.token

    def login(self, email: str, password: str = "correct horse battery"):
        self.refresh_token("/login")
        return self.client.post("/login", data={"email": email, "password": password, "csrf_token": self.token})

    def post(self, url: str, data: dict | None = None, **kwargs):
        """POST a form with the CSRF token, as the browser would."""
        if not self.token:
            self.refresh_token("/tickets")
        return self.client.post(url, data={"csrf_token": self.token, **(data or {})}, **kwargs)


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture
def make_agent(app):
    """Return a factory that adds an agent with the password 'correct horse battery'."""
    from helpdesk.models import Agent

    def make(email: str = "agent@example.test", role: str = "agent", name: str = "Alex Agent") -> Agent:
        agent = Agent(email=email, name=name, role=role)
        agent.set_password("correct horse battery")
        db.session.add(agent)
        db.session.commit()
        return agent

    return make


@pytest.fixture
def admin(make_agent):
    return make_agent("admin@example.test", role="admin", name="Ada Admin")


@pytest.fixture
def admin_client(client, auth, admin):
    """A client signed in as an admin; `client.auth` posts forms with CSRF."""
    auth.login(admin.email)
    auth.refresh_token("/tickets")
    client.auth = auth
    return client


@pytest.fixture
def agent_client(client, auth, make_agent):
    """A client signed in as a plain agent."""
    agent = make_agent("agent@example.test")
    auth.login(agent.email)
    auth.refresh_token("/tickets")
    client.auth = auth
    return client


@pytest.fixture
def make_ticket(app):
    """Return a factory that opens a ticket for a contact (created when new)."""
    from helpdesk.models import Contact
    from helpdesk.services.tickets import open_ticket

    def make(title: str = "Printer on fire", email: str = "jane@customer.test", description: str = "It smokes.",
             notify: bool = False, **kwargs):
        contact = db.session.scalar(db.select(Contact).filter_by(email=email)) or Contact(email=email, name="Jane Doe")
        db.session.add(contact)
        ticket = open_ticket(title=title, description=description, contact=contact, notify=notify, **kwargs)
        db.session.commit()
        return ticket

    return make


@pytest.fixture
def statements_asked(app):
    """Return a context manager that lists the statements sent through SQLAlchemy's cursor while it lasts."""
    # A poll's pipelined round trips (PostgreSQL) and direct INSERTs and lookups (SQLite) do not pass
    # there: what it lists asked the database on its own.
    from sqlalchemy import event

    @contextmanager
    def recording() -> Iterator[list[str]]:
        asked: list[str] = []

        def record(_connection, _cursor, statement, *_rest) -> None:
            asked.append(statement)

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            yield asked
        finally:
            event.remove(db.engine, "before_cursor_execute", record)

    return recording


# --- browser tests: Debian Chromium driven by Playwright, against the app served on a free port ------

@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's Chromium (Playwright's own download is not reachable here)."""
    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }


@pytest.fixture
def live_url(app):
    """Serve the test app on a free loopback port in a thread; return its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


ARTIFACTS = HERE.parent / "test-artifacts"


@pytest.fixture
def screenshot(page):
    """Return a function that saves a full-page screenshot to test-artifacts/NAME.png."""

    def take(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def signed_in_page(page, live_url, admin):
    """A browser page signed in as the admin."""
    page.goto(live_url + "/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_url + "/tickets")
    return page


def pytest_collection_modifyitems(config, items):
    """On the PostgreSQL pass, run only the tests that use a database; the rest ran on the SQLite pass.

    Tests marked `postgresql` check what only PostgreSQL has (round trips, the driver's transactions):
    they run on the PostgreSQL pass only.
    """
    if DATABASE != "postgresql":
        keep = [item for item in items if item.get_closest_marker("postgresql") is None]
    else:
        keep = [item for item in items if "database_uri" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _push_request_context():
    """Replace pytest-flask's: tests run with an app context only, as jobs and the CLI do.

    A request pushed around every test hid code that needs one (url_for in mail rendering).
    """
    yield


# --- real SMTP servers (aiosmtpd, in-process; see tests/smtp/servers.py) ---------------------------------

def _load_smtp_servers():
    """Import tests/smtp/servers.py once under one name (test folders are not packages here)."""
    import importlib.util

    name = "helpdesk_tests_smtp_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "smtp" / "servers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running: its dataclasses resolve annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


smtp_servers = _load_smtp_servers()


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory):
    """Return the test CA, a CA-signed certificate for localhost/127.0.0.1 and an untrusted one."""
    return smtp_servers.make_certificates(tmp_path_factory.mktemp("smtp-certs"))


@pytest.fixture(autouse=True)
def smtp_guard(monkeypatch):
    """Fail any test that opens an SMTP connection it did not ask for (a server from these fixtures).

    Hosts under .invalid are let through: they never resolve, which is what the DNS tests want.
    Returns the set of allowed ports, which the server fixtures fill.
    """
    import smtplib

    allowed: set[int] = set()
    strays: list[str] = []
    connect = smtplib.SMTP.connect

    def guarded(self, host="localhost", port=0, source_address=None):
        if not str(host).endswith(".invalid") and int(port or 0) not in allowed:
            strays.append(f"{host}:{port}")
            raise AssertionError(f"SMTP connection to {host}:{port}, which this test did not start")
        return connect(self, host, port, source_address)

    monkeypatch.setattr(smtplib.SMTP, "connect", guarded)
    yield allowed
    assert not strays, f"unexpected SMTP connections: {strays}"


@pytest.fixture
def smtp_server(smtp_certs, smtp_guard):
    """Return a function that starts a real test SMTP server of a kind; all stop after the test."""
    started = []

    def start(kind: str = "starttls", **options):
        server = smtp_servers.start_server(kind, smtp_certs, **options)
        started.append(server)
        smtp_guard.add(server.port)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def silent_port(smtp_guard):
    """Return a port that accepts TCP connections and never greets."""
    silent = smtp_servers.SilentServer()
    smtp_guard.add(silent.port)
    yield silent.port
    silent.close()


@pytest.fixture
def closed_port(smtp_guard):
    """Return a port where connections are refused."""
    closed = smtp_servers.ClosedPort()
    smtp_guard.add(closed.port)
    yield closed.port
    closed.close()


@pytest.fixture
def trust_test_ca(app_config, smtp_certs) -> dict:
    """Trust the test CA, as an admin would point TLS_CA_FILE at an in-house CA."""
    app_config["TLS_CA_FILE"] = smtp_certs.ca_file
    return app_config


# --- the real Dovecot -------------------------------------------------------------------------------

@pytest.fixture
def dovecot(services):
    """Return a factory of IMAP settings for the test Dovecot: implicit TLS and the support user by default."""
    from helpdesk.mail.imap import ImapSettings

    def make(**overrides):
        security = overrides.get("security", "ssl")
        port = services["HELPDESK_TEST_IMAPS_PORT" if security == "ssl" else "HELPDESK_TEST_IMAP_PORT"]
        values = dict(host="127.0.0.1", port=int(port), security=security, username="support@example.test",
                      password="supportpw", ca_file=services["HELPDESK_TEST_CA"], timeout=10.0)
        values.update(overrides)
        return ImapSettings(**values)

    return make


@pytest.fixture
def folder(dovecot):
    """Create a uuid-named folder under INBOX for this test alone (others share the Dovecot users)."""
    from helpdesk.mail.imap import ImapSession

    name = f"INBOX.t{uuid.uuid4().hex}"
    with ImapSession(dovecot()) as session:
        session.create_folder(name)
    yield name
    with ImapSession(dovecot()) as session:
        # Children first: Dovecot refuses to delete a folder that still has sub-folders.
        mine = [f for f in session.list_folders() if f == name or f.startswith(name + ".")]
        for each in sorted(mine, key=len, reverse=True):
            session.delete_folder(each)
