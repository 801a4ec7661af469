"""make soak: known mail through real pollers while the servers around them fail; count what comes out.

Run with the test services' environment loaded (`make soak` does both databases):
    HELPDESK_TEST_DATABASE=sqlite|postgresql python tests/soak/soak.py [--short]

Each inbound scenario appends its mails to a fresh Dovecot folder, runs `flask email poll` as separate
processes (as a worker or cron would) while something fails, polls again until nothing is left, then
prints `mails in N, tickets+comments+ignored+quarantined N, duplicates 0, lost 0`; the outbound ones
(a failing SMTP server, commands that exit at once, a Redis restart) print `queued N, sent N,
failed-with-reason N, sent twice 0`. The run exits non-zero when any scenario's counts disagree.
Outages are made by a TCP relay between the poller and the real server (IMAP, S3, PostgreSQL), which
drops every connection and refuses new ones for a while; Redis is a server of the soak's own, restarted.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from helpdesk import create_app  # noqa: E402
from helpdesk.extensions import db  # noqa: E402
from helpdesk.mail.imap import ImapSession, ImapSettings  # noqa: E402
from helpdesk.mail.secrets import CredentialBox  # noqa: E402
from helpdesk.models import InboundMail, Mailbox, Ticket  # noqa: E402

USER, PASSWORD = "support@example.test", "supportpw"
SECRET = "soak-secret"
CREDENTIALS_KEY = Fernet.generate_key().decode()


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: load the test services' environment (make soak does).")
    return value


def free_port() -> int:
    """Return a loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Relay:
    """A TCP relay to a real server that can drop every connection and refuse new ones for a while."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None
        self.port = free_port()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self._open())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        self.writers -= {writer, upstream_writer}

    async def _cut(self) -> None:
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def outage(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for `seconds`, then serve again."""
        self._call(self._cut())
        time.sleep(seconds)
        self._call(self._open())


def remove_bucket(bucket: str) -> None:
    """Delete a scenario's S3 bucket and its files, so the test server does not fill up."""
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    s3 = Minio(env("HELPDESK_TEST_S3_ENDPOINT"), access_key=env("HELPDESK_TEST_S3_ACCESS_KEY"),
               secret_key=env("HELPDESK_TEST_S3_SECRET_KEY"), secure=False)
    if not s3.bucket_exists(bucket):
        return
    for error in s3.remove_objects(bucket, [DeleteObject(o.object_name) for o in s3.list_objects(bucket, recursive=True)]):
        print(f"could not remove {error.name} from {bucket}: {error.message}", file=sys.stderr)
    s3.remove_bucket(bucket)


def customer_message(n: int, tag: str) -> EmailMessage:
    """Return customer mail number `n`; every third carries a PDF."""
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <customer{n}.{tag}@client{n % 13}.example>"
    msg["To"] = USER
    msg["Subject"] = f"Order {n}: the delivery arrived damaged"
    msg["Message-ID"] = make_msgid(f"soak{n}", domain="client.example")
    msg.set_content(f"Hello,\n\norder {n} arrived broken. Could you send a replacement?\n")
    if n % 3 == 0:
        msg.add_attachment(os.urandom(8_000), maintype="application", subtype="pdf", filename=f"damage-{n}.pdf")
    return msg


class Soak:
    """One scenario's world: a database, a store, a Dovecot folder and a mailbox row pointing at it."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.kind = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")
        self.workdir = workdir / name
        self.workdir.mkdir()
        self.folder = f"INBOX.soak{uuid.uuid4().hex[:10]}"
        self.bucket = f"hd-soak-{uuid.uuid4().hex[:10]}"
        self.appended: list[str] = []
        self.env_overrides: dict[str, str] = {}
        if self.kind == "postgresql":
            self.admin = create_engine(env("HELPDESK_TEST_POSTGRES_URL"), isolation_level="AUTOCOMMIT")
            self.database = f"hd_soak_{uuid.uuid4().hex[:8]}"
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.database}"'))
            self.uri = env("HELPDESK_TEST_POSTGRES_URL").rsplit("/", 1)[0] + "/" + self.database
        else:
            self.uri = f"sqlite:///{self.workdir / 'helpdesk.sqlite'}"
        with ImapSession(self.imap()) as session:
            session.create_folder(self.folder)
        # Jobs this process queues (the outbox's send job) run at the commit, not on a thread of their own.
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.uri, "SECRET_KEY": SECRET, "REDIS_URL": None,
                               "JOBS_INLINE": True, "CREDENTIALS_KEY": CREDENTIALS_KEY,
                               "ATTACHMENT_FOLDER": str(self.workdir / "attachments")})
        with self.app.app_context():
            upgrade()
            mailbox = Mailbox(name="Soak", host="127.0.0.1", port=int(env("HELPDESK_TEST_IMAPS_PORT")), security="ssl",
                              username=USER, password_encrypted=CredentialBox(CREDENTIALS_KEY).seal(PASSWORD),
                              folder=self.folder, enabled=True, reply_from_address=USER,
                              after_processing="delete")  # the harshest: a mail done too early is gone
            db.session.add(mailbox)
            db.session.commit()
            self.mailbox_id = mailbox.id

    def imap(self) -> ImapSettings:
        return ImapSettings(host="127.0.0.1", port=int(env("HELPDESK_TEST_IMAPS_PORT")), security="ssl",
                            username=USER, password=PASSWORD, ca_file=env("HELPDESK_TEST_CA"), timeout=30.0)

    def process_env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.uri, "SECRET_KEY": SECRET, "CREDENTIALS_KEY": CREDENTIALS_KEY,
                "S3_ENDPOINT": env("HELPDESK_TEST_S3_ENDPOINT"), "S3_ACCESS_KEY": env("HELPDESK_TEST_S3_ACCESS_KEY"),
                "S3_SECRET_KEY": env("HELPDESK_TEST_S3_SECRET_KEY"), "S3_BUCKET": self.bucket, "S3_SECURE": "0",
                "ATTACHMENT_FOLDER": str(self.workdir / "attachments"), "TLS_CA_FILE": env("HELPDESK_TEST_CA"),
                "REDIS_URL": "", "JOBS_WAIT_SECONDS": "0", "MAILBOX_LOCK_SECONDS": "1",
                "PUBLIC_BASE_URL": "http://helpdesk.soak", **self.env_overrides}

    def flask(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=self.process_env(),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def route_imap_through(self, relay: Relay) -> None:
        with self.app.app_context():
            db.session.get(Mailbox, self.mailbox_id).port = relay.port
            db.session.commit()

    def append(self, count: int) -> None:
        """APPEND `count` new customer mails; every third carries a PDF."""
        with ImapSession(self.imap()) as session:
            for _ in range(count):
                msg = customer_message(len(self.appended), self.name)
                session.append(self.folder, msg.as_bytes(policy=SMTP))
                self.appended.append(msg["Message-ID"])

    def start_poll(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "email", "poll"], cwd=ROOT,
                                env=self.process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recorded(self) -> int:
        """Return how many of this scenario's mails have an outcome committed."""
        with self.app.app_context():
            count = db.session.scalar(select(func.count(InboundMail.id))
                                      .where(InboundMail.channel == f"mailbox:{self.mailbox_id}"))
            db.session.rollback()
            return count

    def wait_for_progress(self, poller: subprocess.Popen) -> None:
        """Wait until the poller has committed mail beyond what was there (a batch), or has ended."""
        before = self.recorded()
        deadline = time.monotonic() + 60
        while self.recorded() == before and poller.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def poll_until_done(self) -> None:
        """Poll until a poll finds nothing new (the lock of a poll killed before has expired by then)."""
        for _ in range(20):
            done = self.flask("email", "poll")
            if done.returncode == 0 and not done.stdout.strip():
                return
            time.sleep(1.2)
        raise RuntimeError(f"{self.name}: polls keep failing: {done.stderr[-500:]}")

    def counts(self) -> tuple[str, bool]:
        """Return the scenario's count line and whether it balances."""
        with self.app.app_context():
            recorded = dict(db.session.execute(select(InboundMail.message_id, InboundMail.outcome)
                                               .where(InboundMail.channel == f"mailbox:{self.mailbox_id}")).all())
            per_mail = db.session.scalars(select(func.count()).where(Ticket.message_id.in_(self.appended))
                                          .group_by(Ticket.message_id)).all()
        duplicates = sum(n - 1 for n in per_mail)
        lost = sum(1 for message_id in self.appended if message_id not in recorded)
        outcomes = Counter(recorded.values())
        line = (f"mails in {len(self.appended)}, tickets+comments+ignored+quarantined {len(recorded)}, "
                f"duplicates {duplicates}, lost {lost} ({', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))})")
        return line, len(recorded) == len(self.appended) and duplicates == 0 and lost == 0

    def close(self) -> None:
        with self.app.app_context():
            db.engine.dispose()
        remove_bucket(self.bucket)
        if self.kind == "postgresql":
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            self.admin.dispose()


def killed_pollers(soak: Soak, kills: int) -> tuple[str, bool]:
    """kill -9 of the poller at a random moment, again and again, new mail arriving meanwhile."""
    for _ in range(kills):
        soak.append(60)
        poller = soak.start_poll()
        soak.wait_for_progress(poller)
        time.sleep(random.uniform(0, 0.3))  # somewhere in the next batch
        poller.send_signal(signal.SIGKILL)
        poller.wait()
        time.sleep(1.1)  # the killed poll's lock expires
    soak.poll_until_done()
    return soak.counts()


def two_pollers(soak: Soak, mails: int) -> tuple[str, bool]:
    """Two workers polling the same mailbox at once, beside the IMAP IDLE watch on it."""
    watch = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "email", "watch"], cwd=ROOT,
                             env=soak.process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # the watch signs in and waits in IDLE
        soak.append(mails)
        pollers = [soak.start_poll(), soak.start_poll()]
        for poller in pollers:
            poller.wait(300)
        deadline = time.monotonic() + 120
        while soak.recorded() < mails and time.monotonic() < deadline:  # the watch may hold the last batches
            time.sleep(0.2)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(60)
    soak.poll_until_done()
    return soak.counts()


def outage(soak: Soak, mails: int, relay: Relay, seconds: float) -> tuple[str, bool]:
    """A server goes away mid-poll (its relay drops everything) and comes back."""
    soak.append(mails)
    poller = soak.start_poll()
    soak.wait_for_progress(poller)
    relay.outage(seconds)
    poller.wait(300)
    soak.poll_until_done()
    return soak.counts()


def dovecot_outage(soak: Soak, mails: int) -> tuple[str, bool]:
    relay = Relay(int(env("HELPDESK_TEST_IMAPS_PORT")))
    soak.route_imap_through(relay)
    return outage(soak, mails, relay, 3)


def s3_outage(soak: Soak, mails: int, seconds: float) -> tuple[str, bool]:
    relay = Relay(int(env("HELPDESK_TEST_S3_ENDPOINT").rsplit(":", 1)[1]))
    soak.env_overrides["S3_ENDPOINT"] = f"127.0.0.1:{relay.port}"
    return outage(soak, mails, relay, seconds)


def postgresql_outage(soak: Soak, mails: int) -> tuple[str, bool]:
    port = soak.uri.rsplit(":", 1)[1].split("/", 1)[0]
    relay = Relay(int(port))
    soak.env_overrides["DATABASE_URL"] = soak.uri.replace(f":{port}/", f":{relay.port}/")
    return outage(soak, mails, relay, 5)


class FlakySmtp:
    """aiosmtpd handler: 421 to the first two senders, 451 to the next two messages, 550 for refuse*@ recipients,
    and every ninth message hung up on after its data, before any answer (so not accepted)."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # Message-ID -> times the server said 250 to it
        self.mails = self.messages = 0
        self.lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        with self.lock:
            self.mails += 1
            if self.mails <= 2:
                return "421 4.3.2 Service not available, closing transmission channel"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.messages += 1
            number = self.messages
        if number in (1, 2):
            return "451 4.3.0 Temporary failure, try again later"
        if number % 9 == 0:
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        message_id = BytesParser(policy=email_policy.default).parsebytes(envelope.original_content,
                                                                         headersonly=True)["Message-ID"]
        with self.lock:
            self.accepted[str(message_id)] += 1
        return "250 2.0.0 Accepted"


def flaky_smtp(soak: Soak, mails: int) -> tuple[str, bool]:
    """Outbox mail through an SMTP server that says 421, 451 and 550 and hangs up after DATA; a worker retries."""
    from helpdesk.mail.render import RenderedMail
    from helpdesk.mail.smtp import SmtpError
    from helpdesk.models import OutboundMessage
    from helpdesk.services import outbox
    from helpdesk.services.smtp_config import save_config

    handler = FlakySmtp()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    try:
        with soak.app.app_context():
            save_config({"host": "127.0.0.1", "port": port, "security": "none",
                         "username": "", "password": "", "from_address": "support@helpdesk.soak",
                         "from_name": "Soak", "verify_tls": True, "timeout": 10}, None)
            for n in range(mails):
                to = f"refuse{n}@customer.soak" if n % 10 == 3 else f"customer{n}@customer.soak"
                outbox.queue_mail(kind="test", to=[to], rendered=RenderedMail(f"Soak {n}", "Hello.", "", ()))
            db.session.commit()
            # The send job ran at the commit; a worker retries it at once each time the server said "try later".
            for _ in range(100):
                waiting = db.session.scalars(select(OutboundMessage.id).where(OutboundMessage.status == "queued")).all()
                if not waiting:
                    break
                try:
                    outbox.send(*waiting)
                except SmtpError:
                    pass
                db.session.rollback()
            rows = db.session.execute(select(OutboundMessage.status, OutboundMessage.last_error,
                                             OutboundMessage.message_id)).all()
    finally:
        server.stop()
    sent = {row.message_id for row in rows if row.status == "sent"}
    failed = [row for row in rows if row.status == "failed" and row.last_error]
    twice = sum(n - 1 for n in handler.accepted.values() if n > 1)
    line = (f"queued {len(rows)}, sent {len(sent)}, failed-with-reason {len(failed)}, sent twice {twice} "
            f"(the server accepted {len(handler.accepted)})")
    ok = (len(sent) + len(failed) == len(rows) == mails and twice == 0 and set(handler.accepted) == sent)
    return line, ok


class RecordingSmtp:
    """aiosmtpd handler that accepts everything and counts each Message-ID it accepted."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        message_id = BytesParser(policy=email_policy.default).parsebytes(envelope.original_content,
                                                                         headersonly=True)["Message-ID"]
        with self.lock:
            self.accepted[str(message_id)] += 1
        return "250 2.0.0 Accepted"


def piped_and_gone(soak: Soak, mails: int) -> tuple[str, bool]:
    """Mails piped in by an MTA, each by a `flask email ingest` that exits at once: no Redis, jobs in the process."""
    from helpdesk.models import OutboundMessage
    from helpdesk.services.smtp_config import save_config

    smtp_port = free_port()
    handler = RecordingSmtp()
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with soak.app.app_context():
            save_config({"host": "127.0.0.1", "port": smtp_port, "security": "none", "username": "", "password": "",
                         "from_address": "support@helpdesk.soak", "from_name": "Soak", "verify_tls": True,
                         "timeout": 10}, None)
            db.session.commit()
        soak.env_overrides["JOBS_WAIT_SECONDS"] = "30"
        for n in range(mails):
            done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "email", "ingest"], cwd=ROOT,
                                  env=soak.process_env(), input=customer_message(n, soak.name).as_bytes(policy=SMTP),
                                  capture_output=True, timeout=120, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"email ingest failed: {done.stderr[-500:]!r}")
        accepted_when_done = sum(handler.accepted.values())  # before any sweep could have run
        with soak.app.app_context():
            rows = db.session.execute(select(OutboundMessage.status, OutboundMessage.message_id)).all()
    finally:
        smtp.stop()
    sent = {row.message_id for row in rows if row.status == "sent"}
    twice = sum(n - 1 for n in handler.accepted.values() if n > 1)
    line = (f"queued {len(rows)}, sent {len(sent)}, failed-with-reason 0, sent twice {twice} "
            f"(at the SMTP server when the last command returned: {accepted_when_done})")
    ok = len(rows) == mails and len(sent) == mails and accepted_when_done == mails and twice == 0
    return line, ok


def redis_restart(soak: Soak, mails: int) -> tuple[str, bool]:
    """Confirmation mails queued as RQ jobs, then Redis restarted (it keeps nothing on disk): the sweep sends them."""
    from helpdesk.models import OutboundMessage
    from helpdesk.services import outbox
    from helpdesk.services.smtp_config import save_config

    redis_port, smtp_port = free_port(), free_port()

    def start_redis() -> subprocess.Popen:
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", redis_port)) == 0:
                    return redis
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    handler = RecordingSmtp()
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    redis = start_redis()
    try:
        with soak.app.app_context():
            save_config({"host": "127.0.0.1", "port": smtp_port, "security": "none", "username": "", "password": "",
                         "from_address": "support@helpdesk.soak", "from_name": "Soak", "verify_tls": True,
                         "timeout": 10}, None)
            db.session.commit()
        files = []
        for n in range(mails):
            path = soak.workdir / f"mail{n}.eml"
            path.write_bytes(customer_message(n, soak.name).as_bytes(policy=SMTP))
            files.append(str(path))
        soak.env_overrides["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        piped = soak.flask("email", "ingest", *files)  # an MTA's pipe: the confirmations' jobs go to Redis
        if piped.returncode != 0:
            raise RuntimeError(f"email ingest failed: {piped.stderr[-500:]}")
        redis.send_signal(signal.SIGKILL)  # no worker took the jobs; what Redis held is gone
        redis.wait()
        redis = start_redis()
        time.sleep(outbox.SWEEP_AFTER.total_seconds() + 1)
        with soak.app.app_context():
            outbox.sweep()  # what `rq cron` runs every minute
            rows = db.session.execute(select(OutboundMessage.status, OutboundMessage.message_id)).all()
    finally:
        redis.send_signal(signal.SIGKILL)
        redis.wait()
        smtp.stop()
    sent = {row.message_id for row in rows if row.status == "sent"}
    twice = sum(n - 1 for n in handler.accepted.values() if n > 1)
    line = f"queued {len(rows)}, sent {len(sent)}, failed-with-reason 0, sent twice {twice}"
    return line, len(rows) == mails and sent == set(handler.accepted) and len(sent) == mails and twice == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer kills and mails, short outages (CI)")
    args = parser.parse_args()
    kills, mails, s3_seconds = (3, 150, 5.0) if args.short else (20, 300, 30.0)
    workdir = Path(tempfile.mkdtemp(prefix="hd-soak-"))
    kind = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")
    scenarios = [
        ("kill -9 of the poller", lambda soak: killed_pollers(soak, kills)),
        ("two pollers and the IDLE watch at once", lambda soak: two_pollers(soak, mails)),
        ("Dovecot gone mid-fetch", lambda soak: dovecot_outage(soak, mails)),
        (f"S3 unreachable for {s3_seconds:.0f} s mid-poll", lambda soak: s3_outage(soak, mails, s3_seconds)),
    ]
    if kind == "postgresql":
        scenarios.append(("PostgreSQL gone mid-poll", lambda soak: postgresql_outage(soak, mails)))
    scenarios.append(("SMTP answering 421, 451, 550 and hanging up after DATA", lambda soak: flaky_smtp(soak, mails)))
    scenarios.append(("each mail piped by an email ingest that exits at once",
                      lambda soak: piped_and_gone(soak, 10 if args.short else 50)))
    if not args.short:  # it waits out the sweep's minute
        scenarios.append(("Redis restarted with send jobs queued", lambda soak: redis_restart(soak, 50)))
    failed = 0
    try:
        for number, (title, run) in enumerate(scenarios, 1):
            soak = Soak(f"s{number}", workdir)
            try:
                line, ok = run(soak)
            except Exception as exc:  # noqa: BLE001 - a scenario that cannot finish is a failed one
                line, ok = f"{type(exc).__name__}: {exc}", False
            finally:
                soak.close()
            failed += not ok
            print(f"{kind}, {title}: {line}{'' if ok else '  <-- FAILED'}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
