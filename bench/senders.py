"""Known senders: a poll of mail from people who wrote before, against one of mail from new senders.

Run: `python bench/senders.py [--rounds N]` with the test services' environment loaded (`make bench`
does both). SQLite, or PostgreSQL with HELPDESK_TEST_DATABASE=postgresql, attachments in S3.

Most mail to a support mailbox comes from contacts the helpdesk knows. A round, on a fresh
database where every tenth of the senders' 37 domains is a customer's (Customer Domains):

  new senders    a poll of 300 plain customer mails from 300 senders never seen: each makes its
                 contact (under the domain's customer, where there is one) and its ticket;
  known senders  a poll of 300 other mails from the same 300 senders, now contacts: each finds
                 its contact and customer.

Both polls are timed as bench/inbound.py times its pipeline (300 mails, six batches).
Reported per round: each poll's seconds, the poller's CPU, and the statements it sent outside
the lookup every mail asks anyway (SQLAlchemy's cursor; on PostgreSQL the poll's pipelined round
trips are not counted, on SQLite its direct INSERTs and lookups are not). The ratio known / new
should stay at or below 1: finding a contact should cost no more than making one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "helpdesk" not in sys.modules:
    sys.path.insert(0, str(ROOT))

import inbound  # noqa: E402  (this folder's: the same app, database and folder setup as the main bench)
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

MAILS = 300
DOMAINS = 37
DATABASE = os.environ.get("HELPDESK_TEST_DATABASE", "sqlite")  # as inbound.Database chooses


def mail(n: int, tag: str, poll: str) -> bytes:
    """Return customer mail number `n` of `poll`; the sender depends on `n` alone."""
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <c{n}.{tag}@client{n % DOMAINS}.example>"
    msg["To"] = inbound.USER
    msg["Subject"] = f"Question {n} ({poll}, {tag})"
    msg["Message-ID"] = make_msgid(f"s{n}.{poll}.{tag}", domain="client.example")
    msg.set_content(f"Hello,\n\nour question number {n}: when does the order ship?\n\nRegards\nCustomer {n}\n")
    return msg.as_bytes(policy=SMTP)


def one_round(bucket: str) -> dict:
    """Poll the new senders' mails, then the known senders', into one fresh database; return both polls' figures."""
    from helpdesk.models import Customer, CustomerDomain

    tag = uuid.uuid4().hex[:8]
    folders = {poll: f"INBOX.senders{tag}{poll}" for poll in ("new", "known")}
    for poll, folder in folders.items():
        inbound.fill_folder(folder, [("customer", mail(n, tag, poll)) for n in range(MAILS)])
    workdir = Path(tempfile.mkdtemp(prefix="hd-senders-"))
    database = inbound.Database(workdir)
    app = None
    figures = {}
    try:
        app, db = inbound.make_app(database.uri, workdir, bucket)
        with app.app_context():
            for d in range(0, DOMAINS, 10):
                db.session.add(CustomerDomain(domain=f"client{d}.example", customer=Customer(name=f"Client {d}")))
            db.session.commit()
            for poll, folder in folders.items():
                statements = []

                def count(_conn, _cursor, statement, *_args, statements=statements) -> None:
                    statements.append(statement)

                event.listen(Engine, "before_cursor_execute", count)
                try:
                    result = inbound.pipeline(app, db, folder, None)
                finally:
                    event.remove(Engine, "before_cursor_execute", count)
                if not result["ok"] or result["outcomes"] != {"created": MAILS}:
                    raise SystemExit(f"the {poll} senders' poll went wrong: {result['outcomes']} {result['error']}")
                figures[poll] = {"seconds": result["seconds"], "cpu_seconds": result["cpu_seconds"],
                                 "statements": len(statements)}
            db.session.remove()
            db.engine.dispose()
    finally:
        if app is not None:
            inbound._flush_bench_redis(app)
        inbound._empty_bucket(bucket)
        database.drop()
        shutil.rmtree(workdir, ignore_errors=True)
        with inbound.ImapSession(inbound.imap_settings()) as session:
            for folder in folders.values():
                session.delete_folder(folder)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the two polls (default 3)")
    args = parser.parse_args()
    bucket = f"hd-senders-{uuid.uuid4().hex[:10]}"
    inbound._prepare_bucket(bucket)
    try:
        rounds = [one_round(bucket) for _ in range(args.rounds)]
    finally:
        inbound._empty_bucket(bucket)
        inbound._s3_client().remove_bucket(bucket)
    ratios = [r["known"]["seconds"] / r["new"]["seconds"] for r in rounds]
    print(json.dumps({"database": DATABASE, "mails": MAILS, "rounds": rounds,
                      "known_over_new": [round(x, 3) for x in ratios],
                      "known_over_new_median": round(statistics.median(ratios), 3)}))
    print()
    print(f"| {MAILS} mails ({DATABASE}) | "
          + " | ".join(f"round {n + 1}" for n in range(len(rounds))) + " | median |")
    print("|---|" + "---:|" * (len(rounds) + 1))
    for poll in ("new", "known"):
        seconds = [r[poll]["seconds"] for r in rounds]
        print(f"| {poll} senders: poll s (poller CPU s, statements of their own) | "
              + " | ".join(f"{r[poll]['seconds']:.3f} ({r[poll]['cpu_seconds']:.2f}, {r[poll]['statements']})"
                           for r in rounds) + f" | {statistics.median(seconds):.3f} |")
    print("| known / new | " + " | ".join(f"{x:.2f}" for x in ratios) + f" | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
