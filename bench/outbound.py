"""Outbound throughput: the outbox pipeline against bare smtplib, into the same local SMTP sink.

Run: `python bench/outbound.py [N [ROUNDS]]` (`make bench` runs it). One process, one aiosmtpd
sink on 127.0.0.1 (plain SMTP, no auth: the sink's cost is the same for every variant), N mails
(text + HTML, one recipient each):

  bare, pre-built   smtplib.sendmail of already-flattened bytes over one connection: the wire alone.
  bare, same mails  for each mail compose() (the helpdesk's MIME builder, text+HTML), flatten and
                    smtplib.sendmail over one connection: what a script sending these mails does.
  pipeline          queue_mail() for each mail (an outbox row in a fresh SQLite database, in one
                    transaction, as a burst of notifications is), commit, then the dispatched job
                    claims the rows and sends them over one SmtpSession, recording each result
                    (status, server reply, the bytes as sent). Timed from the first queue_mail()
                    to the last result committed.

The fair comparison is pipeline / bare-same-mails (target: at least 80 %): both send the same
MIME mails and both build them; the pipeline adds the outbox around it. The variants run
ROUNDS times, interleaved, so a busy moment on a shared machine slows all three alike. The
report gives the best and the median rate of each, and the median of the per-round ratios.
"""
from __future__ import annotations

import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpdesk.mail.compose import OutgoingMail, compose  # noqa: E402
from helpdesk.mail.render import RenderedMail, render_mail  # noqa: E402

FROM = "support@bench.test"
ROUNDS = 5
TEXT = ("Hello $contact_name,\n\nThanks for the details. I have reset the account lock; please sign in "
        "again and tell us if the problem comes back.\n\nKind regards,\nSam\n") * 3


class Sink:
    """Count what arrives; keep nothing (the bench measures the sender)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self.count += 1
        return "250 OK"


class _Controller(Controller):
    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def rendered(i: int) -> RenderedMail:
    return render_mail(f"Re: Account locked ({i})", TEXT, {"contact_name": f"Customer {i}"})


def mail(i: int) -> OutgoingMail:
    r = rendered(i)
    return OutgoingMail(to=[f"customer{i}@example.test"], subject=f"[#{1000 + i}] {r.subject}", text=r.text,
                        html=r.html, from_address=FROM, from_name="Bench Support",
                        message_id=f"<bench.{i}@bench.test>")


def bare_prebuilt(port: int, n: int) -> float:
    messages = [compose(mail(i)) for i in range(n)]
    raws = [(m["To"], m.as_bytes()) for m in messages]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for to, raw in raws:
            smtp.sendmail(FROM, [str(to)], raw)
    return time.perf_counter() - start


def bare_same_mails(port: int, n: int) -> float:
    mails = [mail(i) for i in range(n)]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for m in mails:
            smtp.sendmail(FROM, m.to, compose(m).as_bytes())
    return time.perf_counter() - start


def pipeline(port: int, n: int, folder: Path) -> float:
    from flask_migrate import upgrade

    from helpdesk import create_app
    from helpdesk.extensions import db
    from helpdesk.models import OutboundMessage
    from helpdesk.services import outbox
    from helpdesk.services.smtp_config import save_config

    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.sqlite'}", "SECRET_KEY": "bench",
        "CREDENTIALS_KEY": Fernet.generate_key().decode(), "JOBS_INLINE": True, "REDIS_URL": None,
        "ATTACHMENT_FOLDER": str(folder / "attachments"), "PUBLIC_BASE_URL": "http://bench.test",
    })
    with app.app_context():
        upgrade()
        save_config({"host": "127.0.0.1", "port": port, "security": "none", "username": "", "password": "",
                     "from_address": FROM, "from_name": "Bench Support", "verify_tls": True, "timeout": 10}, None)
        db.session.commit()
        # A warm-up burst: the first job imports the sending modules, which a running worker has done long ago.
        for i in range(20):
            outbox.queue_mail(kind="bench", to=[f"warmup{i}@example.test"], rendered=rendered(i))
        db.session.commit()
        renders = [rendered(i) for i in range(n)]  # rendering belongs to the event, not to sending
        start = time.perf_counter()
        for i in range(n):
            outbox.queue_mail(kind="bench", to=[f"customer{i}@example.test"], rendered=renders[i])
        db.session.commit()  # the jobs run now (inline), the first one sends the whole burst
        elapsed = time.perf_counter() - start
        sent = db.session.scalar(db.select(db.func.count()).where(OutboundMessage.status == "sent"))
        assert sent == n + 20, f"only {sent} of {n + 20} mails were sent"
        db.engine.dispose()
    return elapsed


def main(n: int = 500, rounds: int = ROUNDS) -> None:
    sink = Sink()
    controller = _Controller(sink, hostname="127.0.0.1", port=0)
    controller.start()
    prebuilt: list[float] = []
    same: list[float] = []
    piped: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bare_prebuilt(controller.port, 20)  # warm up imports and the sink
            for round_ in range(rounds):
                prebuilt.append(n / bare_prebuilt(controller.port, n))
                same.append(n / bare_same_mails(controller.port, n))
                folder = Path(tmp) / f"round{round_}"
                folder.mkdir()
                piped.append(n / pipeline(controller.port, n, folder))
    finally:
        controller.stop()
    ratios = [p / s for p, s in zip(piped, same)]
    median = statistics.median
    print(f"Outbound throughput, {n} mails, local aiosmtpd sink, one connection each, {rounds} rounds:")
    print("                                    best     median  (mails/s)")
    print(f"  bare smtplib, pre-built bytes : {max(prebuilt):8.1f} {median(prebuilt):8.1f}")
    print(f"  bare smtplib, same mails      : {max(same):8.1f} {median(same):8.1f}  (compose + flatten + sendmail)")
    print(f"  pipeline (outbox -> sent)     : {max(piped):8.1f} {median(piped):8.1f}  (queue_mail, commit, job burst)")
    print(f"  pipeline / bare same mails    : {max(piped) / max(same):8.1%} {median(ratios):8.1%}  "
          "(best / best; median of the rounds' ratios; target >= 80%)")
    print(f"  pipeline / bare pre-built     : {max(piped) / max(prebuilt):8.1%}")
    print("  rounds, pipeline / same mails : " + "  ".join(f"{r:.0%}" for r in ratios))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
