"""`flask email ingest`: files or stdin through the same pipeline, one JSON line per mail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpdesk import events
from helpdesk.extensions import db
from helpdesk.models import InboundMail, OutboundMessage, Ticket

pytestmark = pytest.mark.usefixtures("clean_bucket")
ROOT = Path(__file__).resolve().parents[2]


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_files_are_ingested_in_order_with_one_json_line_each(app, make_mail, tmp_path):
    first, second = tmp_path / "first.eml", tmp_path / "second.eml"
    first.write_bytes(make_mail(subject="Printer on fire", message_id="<cli-1@customer.test>"))
    second.write_bytes(make_mail(subject="Scanner jammed", message_id="<cli-2@customer.test>"))
    result = app.test_cli_runner().invoke(args=["email", "ingest", str(first), str(second), str(first)])
    assert result.exit_code == 0, result.output
    out = lines(result.output)
    titles = [db.session.get(Ticket, line["ticket_id"]).title for line in out]
    assert titles == ["Printer on fire", "Scanner jammed", "Printer on fire"]
    assert [(line["file"], line["message_id"], line["outcome"]) for line in out] == [
        (str(first), "<cli-1@customer.test>", "created"),
        (str(second), "<cli-2@customer.test>", "created"),
        (str(first), "<cli-1@customer.test>", "duplicate"),
    ]
    assert set(out[0]) == {"file", "message_id", "outcome", "ticket_id", "reason"}
    assert {row.channel for row in db.session.scalars(db.select(InboundMail))} == {"cli"}


def test_without_files_the_mail_is_read_from_stdin(app, make_mail):
    raw = make_mail(subject="Piped by the MTA", message_id="<stdin@customer.test>")
    result = app.test_cli_runner().invoke(args=["email", "ingest"], input=raw)
    assert result.exit_code == 0, result.output
    [line] = lines(result.output)
    assert (line["file"], line["outcome"], line["message_id"]) == ("-", "created", "<stdin@customer.test>")
    assert db.session.get(Ticket, line["ticket_id"]).title == "Piped by the MTA"


def test_quarantined_mail_still_exits_zero_because_it_is_recorded(app, make_mail, tmp_path):
    def explode(ticket, **data):
        raise RuntimeError("boom")

    path = tmp_path / "bad.eml"
    path.write_bytes(make_mail(subject="Unlucky"))
    events.ticket_created.connect(explode)
    try:
        result = app.test_cli_runner().invoke(args=["email", "ingest", str(path)])
    finally:
        events.ticket_created.disconnect(explode)
    assert result.exit_code == 0, result.output
    [line] = lines(result.output)
    assert (line["outcome"], line["ticket_id"], line["reason"]) == (
        "quarantined", None, "processing failed: RuntimeError: boom")


def test_an_unreadable_file_is_reported_and_fails_the_command_after_the_others(app, make_mail, tmp_path):
    good = tmp_path / "good.eml"
    good.write_bytes(make_mail())
    result = app.test_cli_runner().invoke(args=["email", "ingest", str(tmp_path / "missing.eml"), str(good)])
    assert result.exit_code == 1
    missing, done = lines(result.output.split("Error:")[0])
    assert (missing["outcome"], missing["ticket_id"]) == ("unreadable", None)
    assert "No such file" in missing["reason"]
    assert done["outcome"] == "created"
    assert "1 file(s) could not be read" in result.output


def piped(app_config: dict, raw: bytes, **settings: str) -> subprocess.CompletedProcess:
    """Run `flask email ingest` as an MTA does: a fresh process, the mail on stdin, no Redis."""
    env = {**os.environ, "DATABASE_URL": app_config["SQLALCHEMY_DATABASE_URI"],
           "SECRET_KEY": app_config["SECRET_KEY"], "CREDENTIALS_KEY": app_config["CREDENTIALS_KEY"],
           "ATTACHMENT_FOLDER": app_config["ATTACHMENT_FOLDER"], "PUBLIC_BASE_URL": "http://helpdesk.test",
           "REDIS_URL": "", "JOBS_INLINE": "", **settings}
    if app_config.get("S3_ENDPOINT"):
        env.update(S3_ENDPOINT=app_config["S3_ENDPOINT"], S3_ACCESS_KEY=app_config["S3_ACCESS_KEY"],
                   S3_SECRET_KEY=app_config["S3_SECRET_KEY"], S3_BUCKET=app_config["S3_BUCKET"], S3_SECURE="0")
    # The timeout is not a speed limit: without a bound, a command that never ends would stall the run.
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "email", "ingest"], input=raw,
                          capture_output=True, cwd=ROOT, env=env, check=False, timeout=120)


def test_an_mta_pipe_runs_the_real_command_in_its_own_process(app, app_config, make_mail):
    """The way an MTA calls it: a fresh process, the mail on stdin, no web request anywhere."""
    raw = make_mail(subject="Through the pipe", message_id="<pipe@customer.test>",
                    attachments=[("log.txt", "text/plain", b"error 42\n")])
    done = piped(app_config, raw, JOBS_INLINE="1")
    assert done.returncode == 0, done.stderr.decode()
    [line] = lines(done.stdout.decode())
    assert line["outcome"] == "created", line["reason"]
    db.session.expire_all()
    ticket = db.session.get(Ticket, line["ticket_id"])
    assert (ticket.title, [a.filename for a in ticket.attachments]) == ("Through the pipe", ["log.txt"])


@pytest.fixture
def outbound(app, smtp_server):
    """Return a function that makes a test SMTP server of a kind (or a silent port) the helpdesk's Outbound."""
    from helpdesk.services.smtp_config import save_config

    def configure(kind: str = "plain", port: int | None = None, **options):
        server = smtp_server(kind, **options) if port is None else None
        save_config({"host": "127.0.0.1", "port": port or server.port, "security": "none",
                     "from_address": "support@helpdesk.test", "from_name": "Support", "timeout": 10}, None)
        db.session.commit()
        return server

    return configure


def confirmations() -> list[OutboundMessage]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(OutboundMessage).filter_by(kind="new_ticket")))


def test_a_piped_mails_confirmation_reaches_the_smtp_server_before_the_command_returns(app_config, outbound,
                                                                                      make_mail):
    server = outbound()
    done = piped(app_config, make_mail(subject="Printer on fire", message_id="<confirm@customer.test>"))

    assert done.returncode == 0, done.stderr.decode()
    [line] = lines(done.stdout.decode())
    [received] = server.received
    assert received.rcpt_tos == ["jane@customer.test"]
    assert received.message["In-Reply-To"] == "<confirm@customer.test>"
    number = db.session.get(Ticket, line["ticket_id"]).number
    assert received.message["Subject"].startswith(f"[#{number}]")
    assert [m.status for m in confirmations()] == ["sent"]
    assert b"JOBS_WAIT_SECONDS" not in done.stderr


def test_the_command_waits_for_the_retry_after_the_server_said_try_later(app_config, outbound, make_mail):
    server = outbound("flaky", fail_data_first=1)
    done = piped(app_config, make_mail(), RETRY_INTERVALS="1")

    assert done.returncode == 0, done.stderr.decode()
    assert len(server.received) == 1 and server.handler.data_attempts == 2
    assert [(m.status, m.attempts) for m in confirmations()] == [("sent", 2)]


def test_jobs_unfinished_after_the_wait_are_left_to_the_sweep_and_the_command_says_so(app_config, outbound,
                                                                                       silent_port, make_mail):
    outbound(port=silent_port)  # accepts the connection and never greets: the send hangs until its timeout
    done = piped(app_config, make_mail(), JOBS_WAIT_SECONDS="0.5")

    assert done.returncode == 0, done.stderr.decode()
    assert lines(done.stdout.decode())[0]["outcome"] == "created"
    assert "JOBS_WAIT_SECONDS" in done.stderr.decode() and "sweep" in done.stderr.decode()
    assert [m.sent_at for m in confirmations()] == [None]
