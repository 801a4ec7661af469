"""Scale: the console's pages on a large database against the demo database, in one run.

Run: `python bench/scale.py [--scale F] [--requests N]` with the test services' environment loaded
(`make bench` does both, on SQLite and then on PostgreSQL). HELPDESK_TEST_DATABASE=postgresql
uses a fresh PostgreSQL database, otherwise a SQLite file.

Two databases are built from the migrations: the demo one (`flask demo seed` and enough rows of
each kind to fill every list's first page) and the large one, filled in SQL (INSERT ... SELECT over a number sequence, the
search triggers firing for every row) with, at --scale 1, the sizes of a helpdesk some years
old: 200,000 tickets, 600,000 comments, 60,000 attachments, 20,000 contacts, 2,000
customers, 1,000,000 inbound log rows and 300,000 outbound mails. Each page is then asked
--requests times of each database through the app (Flask's test client: the app's own time,
no HTTP), and the p50s are compared. Last, the same 200 mails are ingested into each database
(the `flask email ingest` path) and the time per mail is compared.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402
from inbound import Database  # noqa: E402  (bench/ is on the path: this script's own folder)
from sqlalchemy import text  # noqa: E402

DATABASE = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")
FULL = dict(customers=2_000, contacts=20_000, tickets=200_000, comments=600_000, attachments=60_000,
            inbound=1_000_000, outbound=300_000)
# Enough rows that every list's first page is full, as it is on the large database.
DEMO = dict(customers=20, contacts=100, tickets=600, comments=1_800, attachments=60, inbound=300, outbound=100)
RARE, COMMON = "quixotically", "shipment"
SYLLABLES = ["ba", "ko", "ri", "tu", "me", "la", "po", "sen", "dar", "vi", "no", "gel", "fa", "zu", "mor", "tin"]


def words() -> list[str]:
    """Return 400 distinct made-up words: the vocabulary of the generated text."""
    out = []
    for a in SYLLABLES:
        for b in SYLLABLES:
            for c in ("", "x", "ne", "ta"):
                if len(out) < 400 and a != b:
                    out.append(a + b + c)
    return out


def make_app(uri: str, workdir: Path):
    from flask_migrate import upgrade

    from helpdesk import create_app
    from helpdesk.extensions import db

    app = create_app({
        "SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "bench-secret", "CREDENTIALS_KEY": Fernet.generate_key().decode(),
        "S3_ENDPOINT": None, "ATTACHMENT_FOLDER": str(workdir / "attachments"), "REDIS_URL": None,
        "JOBS_INLINE": False, "PUBLIC_BASE_URL": "http://helpdesk.bench", "COMPANY_NAME": "Bench",
        "WTF_CSRF_ENABLED": False,
    })
    with app.app_context():
        upgrade()
    return app, db


def _ago(seconds: str) -> str:
    """Return the SQL of the UTC time `seconds` (an SQL expression) ago, as the app stores times."""
    if DATABASE == "postgresql":
        return f"((now() at time zone 'utc') - (({seconds}) * interval '1 second'))"
    return f"(strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || ({seconds}) || ' seconds') || '.000000')"


def _seq(count: int) -> str:
    if DATABASE == "postgresql":
        return f"generate_series(1, {count}) AS s(n)"
    return f"(SELECT n FROM bench_seq WHERE n <= {count}) AS s"


def _blob(size: int) -> str:
    return f"convert_to(repeat('x', {size}), 'UTF8')" if DATABASE == "postgresql" else f"randomblob({size})"


def fill(db, sizes: dict) -> float:
    """Add the generated rows; return the seconds it took."""
    started = time.perf_counter()
    conn = db.session.connection()
    run = lambda sql: conn.execute(text(sql))  # noqa: E731
    vocabulary = words()
    run("CREATE TABLE bench_words (i integer PRIMARY KEY, w varchar(40) NOT NULL)")
    conn.execute(text("INSERT INTO bench_words (i, w) VALUES (:i, :w)"), [{"i": i, "w": w} for i, w in
                                                                          enumerate(vocabulary)])
    if DATABASE != "postgresql":
        biggest = max(sizes.values())
        run("CREATE TABLE bench_seq (n integer PRIMARY KEY)")
        run(f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {biggest}) "
            "INSERT INTO bench_seq SELECT n FROM s")
    W = len(vocabulary)

    def word(expr: str, alias: str) -> str:
        return f"JOIN bench_words {alias} ON {alias}.i = ({expr}) % {W}"

    first_id = lambda table: conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar() + 1  # noqa: E731
    c0 = first_id("customers")
    run(f"INSERT INTO customers (name, notes, created_at) SELECT 'Customer ' || n || ' ' || w1.w, '', {_ago('n * 600')} "
        f"FROM {_seq(sizes['customers'])} {word('n * 7', 'w1')}")
    p0 = first_id("contacts")
    C, K = sizes["contacts"], sizes["customers"]
    run(f"INSERT INTO contacts (name, email, customer_id, created_at) "
        f"SELECT initcap_first || ' ' || w2.w, 'c' || n || '@client' || (n % {K}) || '.example', "
        f"CASE WHEN n % 5 = 0 THEN NULL ELSE {c0} + n % {K} END, {_ago('n * 300')} "
        f"FROM (SELECT n, w1.w AS initcap_first FROM {_seq(C)} {word('n * 11', 'w1')}) AS s {word('n * 13', 'w2')}")
    T = sizes["tickets"]
    t0 = first_id("tickets")
    agents = [row[0] for row in conn.execute(text("SELECT id FROM agents ORDER BY id"))]
    run(f"INSERT INTO tickets (title, description, status, priority, contact_id, customer_id, assignee_id, source, "
        f"message_id, created_at, updated_at) "
        f"SELECT w1.w || ' ' || w2.w || ' problem ' || n, 'Hello, the ' || w3.w || ' ' || w1.w || ' stopped ' || "
        f"w4.w || ' since the update. Order ' || n || '.', "
        f"CASE WHEN n > {T} - {max(T // 20, 1)} THEN (CASE n % 3 WHEN 0 THEN 'new' WHEN 1 THEN 'open' ELSE 'pending' END) "
        f"ELSE (CASE WHEN n % 4 = 0 THEN 'closed' ELSE 'resolved' END) END, "
        f"CASE n % 7 WHEN 0 THEN 'high' WHEN 1 THEN 'low' ELSE 'normal' END, {p0} + n % {C}, "
        f"CASE WHEN n % 5 = 0 THEN NULL ELSE {c0} + (n % {C}) % {K} END, "
        f"CASE WHEN n % 3 = 0 THEN NULL ELSE {agents[-1]} END, "
        f"'email', '<t' || n || '@client.example>', {_ago(f'({T} - n) * 60 + 60')}, {_ago(f'({T} - n) * 60')} "
        f"FROM {_seq(T)} {word('n * 17', 'w1')} {word('n * 19 + 3', 'w2')} {word('n * 23 + 5', 'w3')} "
        f"{word('n * 29 + 7', 'w4')}")
    m0 = first_id("comments")
    run(f"INSERT INTO comments (ticket_id, public, body_text, source, created_at, author_contact_id) "
        f"SELECT {t0} + n % {T}, n % 4 <> 0, 'About the ' || w1.w || ': we tried ' || w2.w || ' and ' || w3.w || "
        f"CASE WHEN n % 5 = 0 THEN ' before the {COMMON} left' ELSE '' END || '. Reply ' || n || '.', 'email', "
        f"{_ago(f'({T} - n % {T}) * 60 - 1 - n / {T}')}, {p0} + (n % {T}) % {C} "
        f"FROM {_seq(sizes['comments'])} {word('n * 31', 'w1')} {word('n * 37 + 1', 'w2')} {word('n * 41 + 2', 'w3')}")
    run(f"INSERT INTO attachments (ticket_id, comment_id, filename, content_type, size, sha256, storage_key, inline, "
        f"created_at) SELECT {t0} + (n * 3) % {T}, NULL, w1.w || '-' || n || '.pdf', 'application/pdf', 1000 + n, "
        f"'0', 'bench/' || n, FALSE, {_ago(f'({T} - (n * 3) % {T}) * 60')} "
        f"FROM {_seq(sizes['attachments'])} {word('n * 43', 'w1')}")
    M = sizes["inbound"]
    run(f"INSERT INTO inbound_mails (channel, mailbox_id, uid, dedupe_key, message_id, sender, subject, size, outcome, "
        f"reason, ticket_id, processing_ms, created_at) "
        f"SELECT 'cli', NULL, NULL, '<m' || n || '@client.example>', '<m' || n || '@client.example>', "
        f"'c' || (n % {C}) || '@client' || ((n % {C}) % {K}) || '.example', "
        f"'Re: ' || w1.w || ' ' || w2.w || ' ' || n, 2000 + n % 9000, "
        f"CASE WHEN n % 10 < 6 THEN 'created' WHEN n % 10 < 9 THEN 'appended' ELSE 'ignored' END, '', "
        f"CASE WHEN n % 10 < 9 THEN {t0} + n % {T} ELSE NULL END, 4, {_ago(f'({M} - n) * 12')} "
        f"FROM {_seq(M)} {word('n * 47', 'w1')} {word('n * 53 + 1', 'w2')}")
    O = sizes["outbound"]
    run(f"INSERT INTO outbound_messages (ticket_id, kind, automatic, recipient, \"to\", cc, from_address, from_name, "
        f"subject, text_body, headers, attachment_ids, message_id, \"references\", status, attempts, last_error, "
        f"server_reply, raw_sent, raw_size, created_at, sent_at, updated_at) "
        f"SELECT {t0} + n % {T}, 'agent_reply', FALSE, 'c' || (n % {C}) || '@client.example', "
        f"'c' || (n % {C}) || '@client.example', '', 'support@helpdesk.bench', 'Support', "
        f"'[#' || n || '] ' || w1.w || ' ' || w2.w, 'Hello, about the ' || w1.w, '{{}}', '[]', "
        f"'<o' || n || '@helpdesk.bench>', '', 'sent', 1, '', '250 OK', "
        f"CASE WHEN n % 3 = 0 THEN {_blob(600)} ELSE NULL END, CASE WHEN n % 3 = 0 THEN 600 ELSE NULL END, "
        f"{_ago(f'({O} - n) * 40')}, {_ago(f'({O} - n) * 40')}, {_ago(f'({O} - n) * 40')} "
        f"FROM {_seq(O)} {word('n * 59', 'w1')} {word('n * 61 + 1', 'w2')}")
    # One comment holds the rare word.
    run(f"UPDATE comments SET body_text = body_text || ' Handled {RARE}.' WHERE id = {m0 + sizes['comments'] // 2}")
    run("DROP TABLE bench_words")
    if DATABASE != "postgresql":
        run("DROP TABLE bench_seq")
    db.session.commit()
    if DATABASE == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
            auto.execute(text("VACUUM ANALYZE"))
    else:
        db.session.execute(text("INSERT INTO ticket_search (ticket_search) VALUES ('optimize')"))
        db.session.execute(text("INSERT INTO mail_log_search (mail_log_search) VALUES ('optimize')"))
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        # A database in service has its write-ahead log copied back all along; the bulk fill's would
        # otherwise be copied back during the timed requests and ingest.
        db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return time.perf_counter() - started


def long_thread(db) -> int:
    """Add a ticket with 50 comments, each with a file; return its id."""
    import io

    from helpdesk.models import Contact
    from helpdesk.services import tickets
    from helpdesk.services.attachments import add_attachment

    contact = db.session.scalar(db.select(Contact).order_by(Contact.id).limit(1))
    ticket = tickets.open_ticket(title="A long thread", description="Fifty comments.", contact=contact, notify=False)
    for n in range(50):
        comment = tickets.add_comment(ticket, f"Comment {n}: still broken.", contact=contact)
        add_attachment(ticket, io.BytesIO(b"log line\n" * 10), filename=f"log-{n}.txt", content_type="text/plain",
                       comment=comment)
    db.session.commit()
    return ticket.id


def pages(app, db, thread_id: int) -> dict[str, str]:
    """Return the URLs to time, by name, for this database."""
    from helpdesk.models import Customer, InboundMail, OutboundMessage, Ticket
    from helpdesk.services.listing import cursor_of

    with app.app_context():
        total = db.session.scalar(db.select(db.func.count(Ticket.id)))
        deep = db.session.execute(db.select(Ticket.created_at, Ticket.id)
                                  .order_by(Ticket.created_at.desc(), Ticket.id.desc())
                                  .offset(min(total - 26, 100_000)).limit(1)).one()
        customer = db.session.scalar(db.select(Customer.name).order_by(Customer.id.desc()).limit(1))
        sender = db.session.scalar(db.select(InboundMail.sender).order_by(InboundMail.id.desc()).limit(1))
        recipient = db.session.scalar(db.select(OutboundMessage.recipient).order_by(OutboundMessage.id.desc()).limit(1))
    email = "/admin/settings/email"
    return {
        "Tickets, first page": "/tickets",
        "Tickets, deep page (load older from row 100,000)": f"/tickets?before={cursor_of(*deep)}",
        "Tickets, not resolved": "/tickets?status=open",
        "Tickets, one customer": f"/tickets?customer={customer}",
        f"Tickets, search for a rare word ({RARE})": f"/tickets?q={RARE}",
        f"Tickets, search for a common word ({COMMON})": f"/tickets?q={COMMON}",
        "A ticket with 50 comments and files": f"/tickets/{thread_id}",
        "Contacts, first page": "/contacts",
        "Customer type-ahead": "/customers/options?customer=Custo",
        "Inbound log, first page": f"{email}/inbound/log",
        "Inbound log, sender search": f"{email}/inbound/log?q={sender}",
        "Email log, first page": f"{email}/outbox",
        "Email log, recipient search": f"{email}/outbox?q={recipient}",
        "Retention screen": f"{email}/retention",
        "Settings: Outbound (SMTP)": f"{email}/outbound",
    }


def timed(app, url: str, requests: int) -> float:
    """Return the median milliseconds of `requests` GETs of `url` (after two unmeasured ones)."""
    from helpdesk.models import Agent
    from helpdesk.extensions import db

    client = app.test_client()
    with app.app_context():
        admin = db.session.scalar(db.select(Agent).where(Agent.role == "admin").limit(1))
        signed_in_as = admin.get_id()  # the id and session token Flask-Login keeps in the session
    with client.session_transaction() as session:
        session["_user_id"] = signed_in_as
        session["_fresh"] = True
    samples = []
    for n in range(requests + 2):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
        if n >= 2:
            samples.append(elapsed)
    return statistics.median(samples)


def mails(count: int, tag: str, customers: int) -> list[bytes]:
    """Return customer mails: half from senders the large database knows, half from new ones."""
    out = []
    for n in range(count):
        msg = EmailMessage()
        known = f"c{n * 7}@client{(n * 7) % customers}.example"
        sender = known if n % 2 else f"new{n}.{tag}@fresh{n % 9}.example"
        msg["From"] = f"Customer {n} <{sender}>"
        msg["To"] = "support@helpdesk.bench"
        msg["Subject"] = f"Question {n} about the delivery"
        msg["Message-ID"] = make_msgid(f"i{n}.{tag}", domain="client.example")
        msg.set_content(f"Hello,\n\nquestion number {n}: when does the order ship?\n\nRegards\nCustomer {n}\n")
        out.append(msg.as_bytes(policy=SMTP))
    return out


def ingest_ms(app, batch: list[bytes]) -> float:
    """Ingest the mails one by one; return the milliseconds per mail."""
    from helpdesk.services.ingest import ingest_mail

    with app.app_context():
        started = time.perf_counter()
        for raw in batch:
            result = ingest_mail(raw, channel="cli")
            if result.outcome not in ("created", "appended"):
                raise SystemExit(f"ingest: {result.outcome} {result.reason}")
        return (time.perf_counter() - started) * 1000 / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=float(os.environ.get("SCALE_FACTOR", 1.0)),
                        help="fraction of the full sizes (1 = 200,000 tickets, 1,000,000 inbound rows)")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per page and database")
    parser.add_argument("--mails", type=int, default=200, help="mails ingested into each database")
    args = parser.parse_args()
    logging.getLogger("helpdesk").setLevel(logging.ERROR)  # the ingested mails' notifications wait for SMTP
    sizes = {k: max(int(v * args.scale), DEMO[k]) for k, v in FULL.items()}
    workdir = Path(tempfile.mkdtemp(prefix="hd-scale-"))
    databases = {"demo": Database(workdir, "scale_demo"), "large": Database(workdir, "scale_large")}
    results: dict[str, dict[str, float]] = {}
    try:
        apps = {}
        for name, database in databases.items():
            app, db = make_app(database.uri, workdir / name)
            with app.app_context():
                from helpdesk.services import demo

                demo.seed("admin@helpdesk.bench")
                seconds = fill(db, DEMO if name == "demo" else sizes)
                thread_id = long_thread(db)
            print(f"{name}: filled in {seconds:.0f} s ({DATABASE})", file=sys.stderr, flush=True)
            apps[name] = (app, db, thread_id)
        urls = {name: pages(app, db, thread) for name, (app, db, thread) in apps.items()}
        for label in urls["demo"]:
            results[label] = {name: timed(apps[name][0], urls[name][label], args.requests) for name in apps}
            print(f"{label}: {results[label]['demo']:.1f} ms / {results[label]['large']:.1f} ms",
                  file=sys.stderr, flush=True)
        tag = uuid.uuid4().hex[:6]
        batch = mails(args.mails, tag, sizes["customers"])
        # By turns, a slice of the mails into each database per round, the order swapped every round:
        # one pass into each, one after the other, moved with the machine's speed by up to 2x.
        rounds = 5
        size = len(batch) // rounds
        timings: dict[str, list[float]] = {name: [] for name in apps}
        for n in range(rounds):
            for name in (list(apps) if n % 2 == 0 else list(reversed(apps))):
                timings[name].append(ingest_ms(apps[name][0], batch[n * size:(n + 1) * size]))
        per_mail = {name: statistics.median(values) for name, values in timings.items()}
        ingest_ratio = statistics.median(large / demo for demo, large in zip(timings["demo"], timings["large"]))
    finally:
        for database in databases.values():
            database.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n### {DATABASE}: {sizes['tickets']:,} tickets, {sizes['comments']:,} comments, "
          f"{sizes['inbound']:,} inbound log rows, {sizes['outbound']:,} outbound mails\n")
    print("| page | demo p50 | large p50 | large / demo |")
    print("|---|---:|---:|---:|")
    for label, figures in results.items():
        print(f"| {label} | {figures['demo']:.1f} ms | {figures['large']:.1f} ms | "
              f"{figures['large'] / figures['demo']:.2f}× |")
    print(f"| ingest, per mail ({args.mails} mails, `flask email ingest` path, by turns) | {per_mail['demo']:.1f} ms | "
          f"{per_mail['large']:.1f} ms | {ingest_ratio:.2f}× |")


if __name__ == "__main__":
    main()
