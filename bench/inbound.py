"""Inbound throughput: mailbox polling to committed tickets, against a bare fetch-and-parse loop.

Run: `python bench/inbound.py [--profile FILE]` with the test services' environment loaded
(`make bench` does both). One process, the test Dovecot (implicit TLS), a fresh uuid folder:

  mix       ~500 mails: parsing-stalwart (107, every one), malformed-spamscope (23, some over
            1 MB), sisimai bounces/auto-replies (150, every fourth file) and synthesized customer
            mails (text, text+HTML, PDF attachments, inline images) to make up 500. All APPENDed
            before any timing starts.
  bare      connect, SELECT, SEARCH, FETCH BODY.PEEK[] in batches of 50 and parse() every mail,
            storing nothing: the floor any poller pays.
  pipeline  poll_mailbox() on a fresh app: each batch of 50 mails in one transaction, a savepoint
            per mail (attachments in S3, outcome row), then marked \\Seen, checkpoint committed. SQLite
            file database (WAL), or PostgreSQL with HELPDESK_TEST_DATABASE=postgresql. Jobs (the
            confirmation mails) go to RQ on a private database of the test Redis (REDIS_URL):
            enqueued, not run, as with a production worker pool; the output says how many.
  delay     APPEND one new mail, poll, time until its ticket row is committed; median of 10.
            The delay a user sees adds the wait for the next poll (half the interval on average).
  reference with --reference (make bench passes it): django-helpdesk over a fresh copy of the
            same mails, in each round after the pipeline (bench/reference.py): a well-known Python
            helpdesk, measured on this machine.

A round is one bare run then one pipeline run on a fresh database and an emptied bucket; rounds
are repeated (--rounds, default 3) and each round's ratio is reported, with the median: the
machine's noise hits both halves of a round alike. Every timed run starts with parse's header cache
empty. The run's one S3 bucket is made before any timing, as an installation's is at setup; it,
the folder and the PostgreSQL databases of the run are removed afterwards.

Prints a JSON line and a markdown table. Floor: 8x django-helpdesk; aim: 40 % of bare.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "helpdesk" not in sys.modules:  # bench/compare.py imports another revision's first
    sys.path.insert(0, str(ROOT))

import reference  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from helpdesk.mail.imap import ImapSession, ImapSettings  # noqa: E402
from helpdesk.mail.parse import clear_header_cache, parse  # noqa: E402

TARGET = 500
BATCH = 50
DELAY_SAMPLES = 10
USER, PASSWORD = "support@example.test", "supportpw"


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: load the test services' environment (make bench does).")
    return value


def imap_settings() -> ImapSettings:
    return ImapSettings(host="127.0.0.1", port=int(env("HELPDESK_TEST_IMAPS_PORT")), security="ssl", username=USER,
                        password=PASSWORD, ca_file=env("HELPDESK_TEST_CA"), timeout=60.0)


# --- the mix -------------------------------------------------------------------------------

def corpus_mails(corpus: Path) -> list[tuple[str, bytes]]:
    """Return (kind, raw) for the real mails of the mix."""
    picked: list[tuple[str, bytes]] = []
    for path in sorted((corpus / "parsing-stalwart" / "eml").rglob("*.eml")):
        picked.append(("stalwart", path.read_bytes()))
    for path in sorted((corpus / "malformed-spamscope").iterdir()):
        if path.is_file() and not path.name.startswith("LICENSE"):
            picked.append(("spamscope", path.read_bytes()))
    bounces = sorted((corpus / "bounces-autoreplies-sisimai" / "bsd").glob("*.eml"))
    picked += [("sisimai", p.read_bytes()) for p in bounces[::4][:150]]
    return picked


def customer_mail(n: int, tag: str) -> bytes:
    """Return a synthesized customer mail; every fourth has a PDF, every sixth an inline image."""
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <customer{n}.{tag}@client{n % 37}.example>"
    msg["To"] = USER
    msg["Subject"] = f"Order {10000 + n}: the delivery arrived damaged ({tag})"
    msg["Message-ID"] = make_msgid(f"b{n}.{tag}", domain="client.example")
    text = (f"Hello,\n\nour order {10000 + n} arrived today, but two of the boxes were crushed and the "
            "contents are broken. Could you send replacements? Photos attached.\n\n"
            "Best regards,\nCustomer\n\n-- \nClient Ltd, 1 Main Street\n") + ("> earlier quoted text\n" * (n % 20))
    msg.set_content(text)
    if n % 2:
        msg.add_alternative(f"<p>Hello,</p><p>our order <b>{10000 + n}</b> arrived today, but two boxes were "
                            "crushed.</p><p>Best regards,<br>Customer</p>", subtype="html")
    if n % 4 == 0:
        msg.add_attachment(os.urandom(20_000 + 1000 * (n % 100)), maintype="application", subtype="pdf",
                           filename=f"damage-report-{n}.pdf")
    if n % 6 == 0:
        msg.add_attachment(os.urandom(30_000), maintype="image", subtype="jpeg", filename=f"photo-{n}.jpg",
                           disposition="inline", cid=f"<photo{n}.{tag}@client.example>")
    return msg.as_bytes(policy=SMTP)


def build_mix(corpus: Path, tag: str) -> list[tuple[str, bytes]]:
    mails = corpus_mails(corpus)
    mails += [("synthesized", customer_mail(n, tag)) for n in range(max(0, TARGET - len(mails)))]
    return mails


# --- the app under test ---------------------------------------------------------------------

class Database:
    """A fresh database: a SQLite file, or a new PostgreSQL database dropped afterwards (scale.py too)."""

    def __init__(self, workdir: Path, name: str = "bench") -> None:
        self.kind = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")
        self.name = f"hd_{name}_{uuid.uuid4().hex[:8]}"
        if self.kind == "postgresql":
            from sqlalchemy import create_engine, text

            base = env("HELPDESK_TEST_POSTGRES_URL")
            self.admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.uri = base.rsplit("/", 1)[0] + "/" + self.name
        else:
            self.uri = f"sqlite:///{workdir / (self.name + '.sqlite')}"

    def drop(self) -> None:
        if self.kind == "postgresql":
            from sqlalchemy import text

            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def make_app(uri: str, workdir: Path, bucket: str):
    from flask_migrate import upgrade

    from helpdesk import create_app
    from helpdesk.extensions import db

    redis_url = env("HELPDESK_TEST_REDIS_URL").rsplit("/", 1)[0] + "/13"  # a database of its own
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "bench-secret", "CREDENTIALS_KEY": Fernet.generate_key().decode(),
        "S3_ENDPOINT": env("HELPDESK_TEST_S3_ENDPOINT"), "S3_ACCESS_KEY": env("HELPDESK_TEST_S3_ACCESS_KEY"),
        "S3_SECRET_KEY": env("HELPDESK_TEST_S3_SECRET_KEY"), "S3_SECURE": False,
        "S3_BUCKET": bucket, "ATTACHMENT_FOLDER": str(workdir / "attachments"),
        "REDIS_URL": redis_url, "JOBS_INLINE": False, "TLS_CA_FILE": env("HELPDESK_TEST_CA"),
        "PUBLIC_BASE_URL": "http://helpdesk.bench", "COMPANY_NAME": "Bench",
    })
    with app.app_context():
        upgrade()
    return app, db


# --- the measurements ------------------------------------------------------------------------

def bare_loop(folder: str) -> tuple[int, float]:
    clear_header_cache()
    started = time.perf_counter()
    count = 0
    with ImapSession(imap_settings()) as session:
        session.select(folder, readonly=True)
        for _uid, raw in session.fetch_since(0, batch=BATCH):
            parse(raw)
            count += 1
    return count, time.perf_counter() - started


def pipeline(app, db, folder: str, profile: str | None) -> dict:
    from helpdesk.mail.secrets import CredentialBox
    from helpdesk.models import InboundMail, Mailbox, Ticket
    from helpdesk.services.inbound import poll_mailbox

    mailbox = Mailbox(name="Bench", host="127.0.0.1", port=int(env("HELPDESK_TEST_IMAPS_PORT")), security="ssl",
                      username=USER, password_encrypted=CredentialBox(app.config["CREDENTIALS_KEY"]).seal(PASSWORD),
                      folder=folder, enabled=True, reply_from_address=USER)
    db.session.add(mailbox)
    db.session.commit()
    clear_header_cache()
    profiler = cProfile.Profile() if profile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    report = poll_mailbox(mailbox.id)
    if profiler:
        profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if profiler:
        profiler.dump_stats(profile)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue(), file=sys.stderr)
    tickets = db.session.scalar(db.select(db.func.count(Ticket.id)))
    rows = db.session.scalar(db.select(db.func.count(InboundMail.id)))
    return {"mailbox_id": mailbox.id, "ok": report.ok, "error": report.error, "processed": report.processed,
            "outcomes": dict(report.outcomes), "seconds": seconds, "cpu_seconds": cpu_seconds, "tickets": tickets,
            "inbound_rows": rows}


def arrival_delay(app, db, mailbox_id: int, folder: str, tag: str) -> list[float]:
    from helpdesk.models import Ticket
    from helpdesk.services.inbound import poll_mailbox

    samples = []
    with ImapSession(imap_settings()) as session:
        for n in range(DELAY_SAMPLES):
            raw = customer_mail(100_000 + n, tag)
            message_id = parse(raw).message_id
            session.append(folder, raw)
            arrived = time.perf_counter()
            report = poll_mailbox(mailbox_id)
            assert report.ok, report.error
            db.session.expire_all()
            ticket = db.session.scalar(db.select(Ticket.id).where(Ticket.message_id == message_id))
            assert ticket is not None, f"no ticket for {message_id}"
            samples.append(time.perf_counter() - arrived)
    return samples


def idle_arrival_delay(app, db, mailbox_id: int, folder: str, tag: str) -> list[float]:
    """Time APPEND → committed ticket while `watch_mailbox` waits in IMAP IDLE (no poll started by us)."""
    import threading

    from helpdesk.models import Ticket
    from helpdesk.services.watch import watch_mailbox

    stop = threading.Event()

    def watch():
        with app.app_context():
            watch_mailbox(mailbox_id, stop, idle_seconds=30)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    samples = []
    try:
        time.sleep(1)  # let the watcher log in, catch up and enter IDLE
        with ImapSession(imap_settings()) as session:
            for n in range(DELAY_SAMPLES):
                raw = customer_mail(200_000 + n, tag)
                message_id = parse(raw).message_id
                session.append(folder, raw)
                arrived = time.perf_counter()
                while True:
                    db.session.rollback()
                    if db.session.scalar(db.select(Ticket.id).where(Ticket.message_id == message_id)):
                        break
                    if time.perf_counter() - arrived > 60:
                        raise RuntimeError(f"no ticket for {message_id} after 60 s of IDLE")
                    time.sleep(0.005)
                samples.append(time.perf_counter() - arrived)
    finally:
        stop.set()
        watcher.join(60)
    return samples


def one_round(folder: str, tag: str, workdir: Path, bucket: str, profile: str | None, with_delays: bool) -> dict:
    """Run the bare loop, then the pipeline on a fresh database (emptying the bucket after); return the figures."""
    bare_count, bare_seconds = bare_loop(folder)
    database = Database(workdir)
    app = None
    delays: list[float] = []
    idle_delays: list[float] = []
    try:
        app, db = make_app(database.uri, workdir, bucket)
        with app.app_context():
            result = pipeline(app, db, folder, profile)
            if with_delays:
                delays = arrival_delay(app, db, result["mailbox_id"], folder, tag)
                idle_delays = idle_arrival_delay(app, db, result["mailbox_id"], folder, tag)
            db.session.remove()
            db.engine.dispose()
    finally:
        jobs = _flush_bench_redis(app) if app is not None else 0
        _empty_bucket(bucket)
        database.drop()
    return {"database": database.kind, "bare_rate": bare_count / bare_seconds, "bare_seconds": bare_seconds,
            "rate": result["processed"] / result["seconds"], "result": result, "delays": delays,
            "idle_delays": idle_delays, "jobs": jobs, "redis": _redacted(app.config["REDIS_URL"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="write a cProfile of the last round's pipeline run to this file")
    parser.add_argument("--rounds", type=int, default=3, help="bare loop + pipeline pairs (default 3)")
    parser.add_argument("--reference", action="store_true",
                        help="in each round also time django-helpdesk on the same mails (bench/reference.py)")
    args = parser.parse_args()
    corpus = Path(os.environ.get("HELPDESK_CORPUS") or ROOT.parent / "shared" / "corpus")
    tag = uuid.uuid4().hex[:10]
    folder = f"INBOX.bench{tag}"
    mix = build_mix(corpus, tag)
    kinds: dict[str, int] = {}
    for kind, _raw in mix:
        kinds[kind] = kinds.get(kind, 0) + 1

    fill_folder(folder, mix)
    # One bucket for the run, made before any timing, as a production bucket is made at setup:
    # SeaweedFS allocates a new bucket's volumes on its first write, which takes 0.2-1 s.
    bucket = f"hd-bench-{tag}"
    _prepare_bucket(bucket)
    reference_python = None
    if args.reference:
        try:
            reference_python = reference.ensure_installed()
        except (OSError, subprocess.CalledProcessError) as exc:
            # Our own figures stand without it: say why the comparison is missing, and go on.
            print(f"django-helpdesk could not be installed ({exc}); running without the reference", file=sys.stderr)
    rounds = []
    try:
        for n in range(args.rounds):
            last = n == args.rounds - 1
            workdir = Path(tempfile.mkdtemp(prefix="hd-bench-"))
            try:
                # Each round re-polls the same folder into a new database (the bench's pipeline
                # is read-only on the server: \Seen is set, nothing moved), paired with its own bare run.
                rounds.append(one_round(folder, tag, workdir, bucket, args.profile if last else None, with_delays=last))
                if reference_python is not None:
                    rounds[-1]["reference"] = reference_round(reference_python, mix, f"{tag}r{n}")
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        with ImapSession(imap_settings()) as session:
            session.delete_folder(folder)
        _empty_bucket(bucket)
        _s3_client().remove_bucket(bucket)

    ratios = [r["rate"] / r["bare_rate"] for r in rounds]
    compared = [r for r in rounds if "reference" in r]
    references = [r["reference"] for r in compared]
    over_reference = [r["rate"] / r["reference"]["rate"] for r in compared]
    final = rounds[-1]
    result, delays, idle_delays = final["result"], final["delays"], final["idle_delays"]
    figures = {
        "database": final["database"], "mails": len(mix), "mix": kinds, "rounds": len(rounds),
        "bare_mails_per_s": [round(r["bare_rate"], 1) for r in rounds],
        "pipeline_mails_per_s": [round(r["rate"], 1) for r in rounds],
        "pipeline_cpu_seconds_this_process": [round(r["result"]["cpu_seconds"], 2) for r in rounds],
        # ru_maxrss is in KiB on Linux; for children, the largest of any child so far (shared pages count).
        "peak_rss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "ratio": [round(x, 3) for x in ratios], "ratio_median": round(statistics.median(ratios), 3),
        "outcomes": result["outcomes"], "tickets": result["tickets"],
        "poll_ok": all(r["result"]["ok"] for r in rounds), "poll_error": result["error"],
        "arrival_to_ticket_median_ms": round(statistics.median(delays) * 1000, 1),
        "arrival_to_ticket_max_ms": round(max(delays) * 1000, 1),
        "idle_arrival_to_ticket_median_ms": round(statistics.median(idle_delays) * 1000, 1),
        "idle_arrival_to_ticket_max_ms": round(max(idle_delays) * 1000, 1),
        "jobs": f"enqueued to RQ on {final['redis']}, not run", "jobs_enqueued": final["jobs"],
    }
    if references:
        figures["reference"] = {"helpdesk": reference.PACKAGES[0],
                                "mails_per_s": [round(r["rate"], 1) for r in references],
                                "tickets": [r["tickets"] for r in references],
                                "pipeline_over_reference": [round(x, 2) for x in over_reference],
                                "pipeline_over_reference_median": round(statistics.median(over_reference), 2)}
    print(json.dumps(figures))
    print()
    print(f"| inbound ({final['database']}, {len(mix)} mails) | " + " | ".join(f"round {n + 1}" for n in range(len(rounds)))
          + " | median |")
    print("|---|" + "---:|" * (len(rounds) + 1))
    print("| bare fetch + parse, mails/s | " + " | ".join(f"{r['bare_rate']:.0f}" for r in rounds)
          + f" | {statistics.median(r['bare_rate'] for r in rounds):.0f} |")
    print("| poll → committed tickets, mails/s | " + " | ".join(f"{r['rate']:.0f}" for r in rounds)
          + f" | {statistics.median(r['rate'] for r in rounds):.0f} |")
    print("| ratio pipeline / bare | " + " | ".join(f"{x:.0%}" for x in ratios) + f" | {statistics.median(ratios):.0%} |")
    if references:
        print(f"| {reference.PACKAGES[0]}, mails/s | " + " | ".join(f"{r['rate']:.0f}" for r in references)
              + f" | {statistics.median(r['rate'] for r in references):.0f} |")
        print("| pipeline / django-helpdesk | " + " | ".join(f"{x:.1f}×" for x in over_reference)
              + f" | {statistics.median(over_reference):.1f}× |")
    print(f"\narrival → ticket (poll right after APPEND), median of {DELAY_SAMPLES}: "
          f"{statistics.median(delays) * 1000:.0f} ms; with the IMAP IDLE watch: "
          f"{statistics.median(idle_delays) * 1000:.0f} ms")
    print(f"peak memory (RSS): this process {figures['peak_rss_mb_this_process']} MB (the mails APPENDed are held "
          f"in it too), largest child process {figures['peak_rss_mb_largest_child']} MB")
    print(f"outcomes: {result['outcomes']}; {final['jobs']} jobs (confirmation mails) enqueued to RQ on "
          f"{final['redis']}, not run, as a production poll does; floor 8× django-helpdesk, aim 40 % of bare")


def fill_folder(folder: str, mix: list[tuple[str, bytes]]) -> None:
    """Create `folder` and APPEND the mails to it (before any timing)."""
    with ImapSession(imap_settings()) as session:
        session.create_folder(folder)
        for _kind, raw in mix:
            session.append(folder, raw)


def reference_round(python: Path, mix: list[tuple[str, bytes]], tag: str) -> dict:
    """Copy the mails to a folder of their own and time django-helpdesk over it (it deletes what it takes)."""
    folder = f"INBOX.reference{tag}"
    fill_folder(folder, mix)
    try:
        figures = reference.measure(python, "127.0.0.1", int(env("HELPDESK_TEST_IMAPS_PORT")), USER, PASSWORD, folder)
    finally:
        with ImapSession(imap_settings()) as session:
            session.delete_folder(folder)
    return {**figures, "rate": len(mix) / figures["seconds"]}


def _flush_bench_redis(app) -> int:
    """Drop the jobs the run enqueued (nobody works the bench's private Redis database); return their number."""
    from redis import Redis

    from jobs import rq_queue

    enqueued = len(rq_queue(app))
    Redis.from_url(app.config["REDIS_URL"]).flushdb()
    return enqueued


def _s3_client():
    from minio import Minio

    return Minio(env("HELPDESK_TEST_S3_ENDPOINT"), access_key=env("HELPDESK_TEST_S3_ACCESS_KEY"),
                 secret_key=env("HELPDESK_TEST_S3_SECRET_KEY"), secure=False)


def _prepare_bucket(bucket: str) -> None:
    """Create the run's S3 bucket and write (then remove) one object, so its volumes exist."""
    client = _s3_client()
    client.make_bucket(bucket)
    client.put_object(bucket, "warm-up", io.BytesIO(b"warm-up"), 7)
    client.remove_object(bucket, "warm-up")


def _empty_bucket(bucket: str) -> None:
    """Remove every object of the run's bucket (a round's attachments), keeping the bucket."""
    from minio.deleteobjects import DeleteObject

    client = _s3_client()
    if not client.bucket_exists(bucket):
        return
    names = [DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True)]
    for error in client.remove_objects(bucket, names):
        print(f"could not remove {error.name} from the bench bucket: {error.message}", file=sys.stderr)


def _redacted(url: str) -> str:
    """Return a URL without its user and password."""
    return re.sub(r"//[^/@]*@", "//", url)


if __name__ == "__main__":
    main()
