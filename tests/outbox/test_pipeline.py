"""The send pipeline against real SMTP servers: outbox row first, then the job, never lost, never twice."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from helpdesk.extensions import db
from helpdesk.mail import tokens
from helpdesk.mail.render import RenderedMail
from helpdesk.models import Mailbox, OutboundMessage, TicketEvent
from helpdesk.models._time import utcnow
from helpdesk.services import outbox

MAIL = RenderedMail(subject="We received your request", text="Hello Jane,\n\nThanks.\n",
                    html="<p>Hello Jane,</p><p>Thanks.</p>", unknown=())


def queue(to="jane@customer.test", **kwargs) -> OutboundMessage | None:
    kwargs.setdefault("kind", "new_ticket")
    message = outbox.queue_mail(to=[to], rendered=kwargs.pop("rendered", MAIL), **kwargs)
    db.session.commit()
    return message


def row(message_id: int) -> OutboundMessage:
    db.session.expire_all()
    return db.session.get(OutboundMessage, message_id)


def test_queued_mail_is_sent_with_our_message_id_tag_and_both_bodies(app, smtp, make_ticket):
    ticket = make_ticket()
    message = queue(ticket=ticket, automatic=True)

    sent = row(message.id)
    assert sent.status == "sent" and sent.attempts == 1 and sent.sent_at is not None
    assert sent.server_reply.startswith("250 ")
    [received] = smtp.received
    assert received.rcpt_tos == ["jane@customer.test"]
    assert received.mail_from == "support@helpdesk.test"
    # The log keeps exactly the bytes the server took.
    assert received.data == sent.raw_sent and sent.raw_size == len(sent.raw_sent)
    mail = received.message
    assert mail["Message-ID"] == sent.message_id
    assert tokens.ticket_id_from_message_ids([mail["Message-ID"]], b"test-secret") == ticket.id
    assert mail["Subject"] == f"[#{ticket.number}] We received your request"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["From"] == "Example Support <support@helpdesk.test>"
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Jane,\n\nThanks.\n"
    assert "<p>Thanks.</p>" in mail.get_body(("html",)).get_content()


def test_mail_written_to_the_outbox_before_any_sending(app, smtp):
    message = outbox.queue_mail(kind="test", to=["jane@customer.test"], rendered=MAIL)
    # Not committed yet: the row exists in this transaction, and nothing went out.
    assert message.id is not None and message.status == "queued"
    assert smtp.received == []
    db.session.rollback()
    assert smtp.received == [] and db.session.scalar(db.select(db.func.count(OutboundMessage.id))) == 0


def test_human_mail_has_no_auto_submitted_header(app, smtp):
    message = queue(kind="agent_reply", automatic=False)
    assert row(message.id).status == "sent"
    assert smtp.received[0].message["Auto-Submitted"] is None


def test_implicit_tls_server_works_too(app, smtp_server, configure_smtp):
    server = configure_smtp(smtp_server("ssl"))
    message = queue(kind="test")
    assert row(message.id).status == "sent"
    assert len(server.received) == 1


def test_a_burst_goes_out_over_one_connection(app, smtp):
    for n in range(5):
        outbox.queue_mail(kind="test", to=[f"person{n}@customer.test"], rendered=MAIL)
    db.session.commit()
    assert db.session.scalar(db.select(db.func.count()).where(OutboundMessage.status == "sent")) == 5
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == [f"person{n}@customer.test" for n in range(5)]
    assert smtp.connections == 1


def test_permanent_refusal_fails_with_the_servers_reply_and_resend_tries_again(app, smtp_server, configure_smtp):
    server = configure_smtp(smtp_server("picky"))
    message = queue(to="nobody@customer.test", kind="test")
    failed = row(message.id)
    assert failed.status == "failed"
    assert failed.server_reply == "550 5.1.1 No such user here"
    assert "nobody@customer.test" in failed.last_error
    assert server.received == []
    # A second job run (a retry) does not touch a failed mail.
    assert outbox.send(message.id) == "failed"
    assert row(message.id).attempts == 1

    assert outbox.resend(message.id) is True
    db.session.commit()
    assert row(message.id).status == "failed" and row(message.id).attempts == 1
    assert outbox.resend(message.id) is True and outbox.resend(message.id) is False


def test_transient_failure_stays_queued_and_the_sweep_sends_it_later(app, smtp_server, configure_smtp):
    server = configure_smtp(smtp_server("flaky", fail_data_first=1))
    message = queue(kind="test")
    waiting = row(message.id)
    # Inline jobs do not retry; the row waits, with the reason, for a retry or the sweep.
    assert waiting.status == "queued" and waiting.attempts == 1
    assert "451" in waiting.last_error and waiting.server_reply.startswith("451")
    assert outbox.due_ids() == []  # backing off
    waiting.updated_at = utcnow() - timedelta(minutes=2)
    db.session.commit()
    outbox.sweep()
    sent = row(message.id)
    assert sent.status == "sent" and sent.attempts == 2 and sent.last_error == ""
    assert len(server.received) == 1 and server.handler.data_attempts == 2


def test_no_second_send_when_a_retry_follows_a_success(app, smtp):
    message = queue(kind="test")
    assert row(message.id).status == "sent"
    assert outbox.send(message.id) == "sent"
    assert outbox.send(message.id) == "sent"
    assert len(smtp.received) == 1 and row(message.id).attempts == 1


def test_a_mail_claimed_by_another_worker_is_not_sent_again(app, smtp):
    message = queue(kind="test")
    sending = row(message.id)
    sending.status, sending.raw_sent, sending.sent_at = "sending", None, None
    db.session.commit()
    assert outbox.send(message.id) == "sending"
    assert len(smtp.received) == 1


@pytest.fixture
def unread_redis_queue(app_config, services):
    """Send jobs to a Redis database no worker reads: as if the worker died before taking them."""
    from redis import Redis

    # A database of our own: other tests share the Redis server.
    url = services["HELPDESK_TEST_REDIS_URL"].rsplit("/", 1)[0] + f"/{uuid.uuid4().int % 14 + 2}"
    app_config.update(JOBS_INLINE=False, REDIS_URL=url)
    redis = Redis.from_url(url)
    yield redis
    redis.flushdb()
    redis.close()


def test_lost_job_is_sent_by_the_sweep_exactly_once(unread_redis_queue, request):
    # Fetched only now: pytest-flask's autouse fixture would build `app` before the config changed.
    app = request.getfixturevalue("app")
    try:
        server = request.getfixturevalue("smtp")
        message = queue(kind="test")
        assert row(message.id).status == "queued" and server.received == []
        # Fresh rows belong to their job; the sweep waits a minute before it steps in.
        assert outbox.sweep().sent == []
        waiting = row(message.id)
        waiting.created_at = waiting.updated_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
        assert outbox.sweep().sent == [message.id]
        assert outbox.sweep().sent == []
        assert row(message.id).status == "sent" and len(server.received) == 1
        assert unread_redis_queue.llen("rq:queue:helpdesk") == 1  # the job that never ran
    finally:
        if "redis" in app.extensions:
            app.extensions["redis"].close()


def test_worker_dying_mid_send_is_recovered_by_the_sweep(app, smtp):
    message = queue(kind="test")
    stuck = row(message.id)
    # As a worker that claimed the mail and died before the server answered would leave it.
    stuck.status, stuck.raw_sent, stuck.sent_at, stuck.server_reply = "sending", None, None, ""
    stuck.updated_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    assert outbox.sweep().sent == []  # it may still be sending
    stuck = row(message.id)
    stuck.updated_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    assert outbox.sweep().sent == [message.id]
    assert row(message.id).status == "sent" and len(smtp.received) == 2


def test_smtp_not_configured_keeps_the_mail_queued_with_a_clear_reason(app, smtp_server, configure_smtp):
    message = queue(kind="test")
    waiting = row(message.id)
    assert waiting.status == "queued" and waiting.attempts == 0
    assert waiting.last_error == outbox.NOT_CONFIGURED
    assert outbox.sweep().sent == []
    server = configure_smtp(smtp_server("starttls"))
    waiting = row(message.id)
    waiting.created_at = waiting.updated_at = utcnow() - timedelta(minutes=2)
    db.session.commit()
    assert outbox.sweep().sent == [message.id]
    sent = row(message.id)
    # The From Address is the one configured when it went out.
    assert sent.status == "sent" and sent.from_address == "support@helpdesk.test"
    assert len(server.received) == 1


@pytest.mark.parametrize("address, reason", [
    ("support@helpdesk.test", "our own"),
    ("SUPPORT+t1001@helpdesk.test", "our own"),
    ("help@mailbox.test", "our own"),
    ("MAILER-DAEMON@customer.test", "mail system"),
    ("postmaster@customer.test", "mail system"),
    ("no-reply@customer.test", "no-reply"),
])
def test_automatic_mail_never_goes_to_loop_addresses(app, smtp, make_ticket, address, reason):
    db.session.add(Mailbox(name="Help", username="help@mailbox.test"))
    ticket = make_ticket()
    assert queue(to=address, ticket=ticket, automatic=True) is None
    assert smtp.received == [] and db.session.scalar(db.select(db.func.count(OutboundMessage.id))) == 0
    [event] = db.session.scalars(db.select(TicketEvent).filter_by(ticket_id=ticket.id,
                                                                  kind="notification-suppressed")).all()
    assert reason in event.detail


def test_automatic_mails_per_recipient_are_capped_per_hour(app_config, request):
    app_config["AUTO_MAILS_PER_HOUR"] = 3
    request.getfixturevalue("app")
    smtp = request.getfixturevalue("smtp")
    results = [queue(to="Jane@Customer.test", kind="resolved", automatic=True) for _ in range(4)]
    assert [r is not None for r in results] == [True, True, True, False]
    # Other recipients and mails written by people are not limited.
    assert queue(to="other@customer.test", kind="resolved", automatic=True) is not None
    assert queue(to="jane@customer.test", kind="agent_reply", automatic=False) is not None
    assert len(smtp.received) == 5
    # An hour later the recipient may get automatic mail again.
    for message in db.session.scalars(db.select(OutboundMessage)):
        message.created_at -= timedelta(minutes=61)
    db.session.commit()
    assert queue(to="jane@customer.test", kind="resolved", automatic=True) is not None


def test_a_mail_refused_for_good_does_not_hold_up_the_rest_of_its_burst(app, smtp_server, configure_smtp):
    server = configure_smtp(smtp_server("picky"))
    # The first mail's job sends the burst: its own mail is refused, the others still go out.
    refused = outbox.queue_mail(kind="test", to=["nobody@customer.test"], rendered=MAIL)
    others = [outbox.queue_mail(kind="test", to=[f"person{n}@customer.test"], rendered=MAIL) for n in range(3)]
    db.session.commit()

    assert row(refused.id).status == "failed"
    assert [row(m.id).status for m in others] == ["sent"] * 3
    assert sorted(m.rcpt_tos[0] for m in server.received) == [f"person{n}@customer.test" for n in range(3)]
    for message in others:
        sent = row(message.id)
        assert sent.attempts == 1 and sent.server_reply.startswith("250 ") and sent.raw_sent
    assert server.connections == 1


def test_one_send_job_per_transaction_and_it_sends_the_whole_burst(unread_redis_queue, request):
    from jobs import rq_queue

    app = request.getfixturevalue("app")
    try:
        server = request.getfixturevalue("smtp")
        jobs = rq_queue(app)

        def commit_and_find_jobs(messages: list[OutboundMessage]) -> list:
            # Other test runs share the Redis server: look only at the jobs this commit added.
            before = set(jobs.job_ids)
            db.session.commit()
            added = [jobs.fetch_job(i) for i in set(jobs.job_ids) - before]
            return [job for job in added if job is not None and job.args[0] in {m.id for m in messages}]

        burst = [outbox.queue_mail(kind="test", to=[f"person{n}@customer.test"], rendered=MAIL) for n in range(4)]
        [burst_job] = commit_and_find_jobs(burst)
        assert burst_job.func_name == "jobs.mail.send_outbox" and burst_job.args == tuple(m.id for m in burst)
        lone = outbox.queue_mail(kind="test", to=["someone@customer.test"], rendered=MAIL)
        [lone_job] = commit_and_find_jobs([lone])
        assert lone_job.args == (lone.id,)
        assert all(row(m.id).status == "queued" for m in [*burst, lone])

        burst_job.perform()
        # The burst's job also took the mail queued after it: one connection for all five.
        assert [(row(m.id).status, row(m.id).attempts) for m in [*burst, lone]] == [("sent", 1)] * 5
        assert len(server.received) == 5 and server.connections == 1
        lone_job.perform()
        assert len(server.received) == 5 and row(lone.id).attempts == 1
    finally:
        if "redis" in app.extensions:
            app.extensions["redis"].close()


def test_queueing_again_after_a_rollback_in_the_same_session(app, smtp):
    dropped = outbox.queue_mail(kind="test", to=["first@customer.test"], rendered=MAIL)
    dropped_id = dropped.id
    db.session.rollback()
    # SQLite hands the rolled-back id out again; the row written now must not be confused with it.
    kept = outbox.queue_mail(kind="test", to=["second@customer.test"], rendered=MAIL)
    db.session.commit()

    assert kept.status == "sent" and kept.to == "second@customer.test"
    assert db.session.scalar(db.select(db.func.count(OutboundMessage.id))) == 1
    assert [m.rcpt_tos for m in smtp.received] == [["second@customer.test"]]
    assert row(kept.id).raw_sent == smtp.received[0].data
    assert dropped_id is not None


def test_a_temporary_refusal_stops_the_burst_and_the_rest_wait_uncounted(app, smtp_server, configure_smtp):
    # Queued before SMTP is set up, so the sweep sends them as one burst once it is.
    burst = [outbox.queue_mail(kind="test", to=[f"person{n}@customer.test"], rendered=MAIL) for n in range(3)]
    db.session.commit()
    server = configure_smtp(smtp_server("flaky", fail_data_first=1))

    def make_due():
        for message in db.session.scalars(db.select(OutboundMessage)):
            message.created_at = message.updated_at = utcnow() - timedelta(minutes=2)
        db.session.commit()

    make_due()
    result = outbox.sweep()
    assert result.sent == [] and sorted(result.deferred) == sorted(m.id for m in burst)
    first, *rest = (row(m.id) for m in burst)
    assert (first.status, first.attempts) == ("queued", 1) and first.server_reply.startswith("451")
    # The server said "later": the rest of the burst is not tried now, and not counted as tried.
    assert [(m.status, m.attempts) for m in rest] == [("queued", 0)] * 2
    assert all("451" in m.last_error for m in rest)
    assert server.received == [] and server.handler.data_attempts == 1

    make_due()
    assert sorted(outbox.sweep().sent) == sorted(m.id for m in burst)
    assert [(row(m.id).status, row(m.id).attempts) for m in burst] == [("sent", 2), ("sent", 1), ("sent", 1)]
    assert len(server.received) == 3
