"""Retries through RQ itself: a real Redis, a real (burst) worker, RQ's Retry re-running the job."""
from __future__ import annotations

import uuid

import pytest

from helpdesk.extensions import db
from helpdesk.mail.render import RenderedMail
from helpdesk.models import OutboundMessage
from helpdesk.services import background, outbox

MAIL = RenderedMail(subject="Your ticket", text="Hello.\n", html="<p>Hello.</p>", unknown=())


@pytest.fixture
def redis_jobs(app_config, services):
    """Run jobs through RQ on a Redis database of this test's own (others share the server)."""
    from redis import Redis

    url = services["HELPDESK_TEST_REDIS_URL"].rsplit("/", 1)[0] + f"/{uuid.uuid4().int % 14 + 2}"
    app_config.update(JOBS_INLINE=False, REDIS_URL=url, RETRY_INTERVALS=[0, 0, 0])
    redis = Redis.from_url(url)
    yield redis
    redis.flushdb()
    redis.close()


def run_worker(app) -> None:
    from rq import SimpleWorker

    from jobs import rq_queue

    queue = rq_queue(app)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_transient_failures_are_retried_by_rq_and_the_mail_is_sent_once(redis_jobs, request):
    # Fetched only now: pytest-flask's autouse fixture would build `app` before the config changed.
    app = request.getfixturevalue("app")
    server = request.getfixturevalue("configure_smtp")(request.getfixturevalue("smtp_server")("flaky",
                                                                                            fail_data_first=2))
    message = outbox.queue_mail(kind="test", to=["jane@customer.test"], rendered=MAIL)
    db.session.commit()
    assert server.handler.data_attempts == 0  # queued in Redis, not sent inline

    try:
        run_worker(app)
        db.session.expire_all()
        sent = db.session.get(OutboundMessage, message.id)
        assert sent.status == "sent"
        assert sent.attempts == 3
        assert server.handler.data_attempts == 3
        assert len(server.received) == 1
        assert server.received[0].message["Message-ID"] == sent.message_id

        # The job run again (a duplicate delivery of the job, a late retry) sends nothing.
        background.send_outbox_after_commit(message.id)
        db.session.commit()
        run_worker(app)
        assert len(server.received) == 1 and server.handler.data_attempts == 3
    finally:
        app.extensions["redis"].close()


def test_rq_gives_up_after_its_retries_and_the_mail_waits_for_the_sweep(redis_jobs, request):
    app = request.getfixturevalue("app")
    server = request.getfixturevalue("configure_smtp")(request.getfixturevalue("smtp_server")("flaky",
                                                                                            fail_data_first=10))
    message = outbox.queue_mail(kind="test", to=["jane@customer.test"], rendered=MAIL)
    db.session.commit()
    try:
        run_worker(app)
        db.session.expire_all()
        waiting = db.session.get(OutboundMessage, message.id)
        # One try and three retries; the mail is still queued, with the server's words, not lost.
        assert waiting.status == "queued" and waiting.attempts == 4
        assert waiting.server_reply == "451 4.3.0 Temporary failure, try again later"
        assert server.received == []
    finally:
        app.extensions["redis"].close()
