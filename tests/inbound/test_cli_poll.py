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
