"""`flask email poll`: poll once now, one JSON line per mail processed."""
from __future__ import annotations

import json

from helpdesk.extensions import db
from helpdesk.models import Mailbox


def test_poll_prints_one_json_line_per_mail(app, make_mailbox, append, customer_mail):
    mailbox = make_mailbox()
    uids = append(customer_mail(1), customer_mail(2))

    result = app.test_cli_runner().invoke(args=["email", "poll"])

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["uid"] for line in lines] == uids
    for line in lines:
        assert set(line) == {"mailbox", "uid", "file", "message_id", "outcome", "ticket_id", "reason"}
        assert line["mailbox"] == mailbox.id and line["file"] is None
        assert line["outcome"] == "created" and isinstance(line["ticket_id"], int)
        assert line["message_id"].endswith("@example.org>")

    again = app.test_cli_runner().invoke(args=["email", "poll"])
    assert again.exit_code == 0 and again.stdout == ""


def test_poll_one_mailbox_even_when_disabled(app, make_mailbox, append, customer_mail):
    enabled = make_mailbox(name="Enabled")
    disabled = make_mailbox(name="Disabled", enabled=False)
    append(customer_mail(1))

    result = app.test_cli_runner().invoke(args=["email", "poll", "--mailbox", str(disabled.id)])

    assert result.exit_code == 0, result.output
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["mailbox"] == disabled.id
    db.session.expire_all()
    assert db.session.get(Mailbox, enabled.id).last_poll_at is None


def test_poll_reports_a_failed_mailbox_and_exits_non_zero(app, make_mailbox):
    mailbox = make_mailbox(password="wrong")
    result = app.test_cli_runner().invoke(args=["email", "poll", "--mailbox", str(mailbox.id)])
    assert result.exit_code == 1
    assert "refused the login" in result.stderr
    assert "1 mailbox poll(s) failed" in result.stderr


def test_poll_of_an_unknown_mailbox_is_an_error(app):
    result = app.test_cli_runner().invoke(args=["email", "poll", "--mailbox", "999"])
    assert result.exit_code == 1 and "No mailbox with id 999" in result.stderr


def test_a_poll_run_as_its_own_process_sends_the_confirmations_before_it_exits(app, app_config, services,
                                                                               make_mailbox, append, customer_mail,
                                                                               smtp_server):
    """Without Redis the confirmations go out on a thread of the command's process, which waits for them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from helpdesk.services.smtp_config import save_config

    server = smtp_server("plain")
    save_config({"host": server.host, "port": server.port, "security": "none",
                 "from_address": "help@helpdesk.test", "from_name": "Support"}, None)
    db.session.commit()
    make_mailbox()
    append(customer_mail(1), customer_mail(2))
    env = {**os.environ, "DATABASE_URL": app_config["SQLALCHEMY_DATABASE_URI"],
           "SECRET_KEY": app_config["SECRET_KEY"], "CREDENTIALS_KEY": app_config["CREDENTIALS_KEY"],
           "ATTACHMENT_FOLDER": app_config["ATTACHMENT_FOLDER"], "TLS_CA_FILE": services["HELPDESK_TEST_CA"],
           "REDIS_URL": "", "JOBS_INLINE": ""}
    if app_config.get("S3_ENDPOINT"):
        env.update(S3_ENDPOINT=app_config["S3_ENDPOINT"], S3_ACCESS_KEY=app_config["S3_ACCESS_KEY"],
                   S3_SECRET_KEY=app_config["S3_SECRET_KEY"], S3_BUCKET=app_config["S3_BUCKET"], S3_SECURE="0")

    # The timeout is not a speed limit: without a bound, a command that never ends would stall the run.
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "email", "poll"], capture_output=True,
                          cwd=Path(__file__).resolve().parents[2], env=env, check=False, timeout=120)

    assert done.returncode == 0, done.stderr.decode()
    assert [json.loads(line)["outcome"] for line in done.stdout.decode().splitlines()] == ["created", "created"]
    assert sorted(m.rcpt_tos[0].split(".")[0] for m in server.received) == ["customer1", "customer2"]
