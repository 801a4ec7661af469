"""Background jobs: dispatched after commit, run in-process without Redis, by RQ with it."""
import threading

import pytest

import jobs
from helpdesk.extensions import db
from helpdesk.models import Macro

CALLS: list = []
DONE = threading.Event()


def record(value):
    """A job: note the value and the macro count it sees (proves it runs after the commit)."""
    CALLS.append((value, db.session.scalar(db.select(db.func.count(Macro.id)))))
    DONE.set()


def flaky(value):
    """A job that fails on its first run."""
    CALLS.append(value)
    if CALLS.count(value) == 1:
        raise ConnectionError("transient")
    DONE.set()


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    DONE.clear()


def test_jobs_start_only_after_the_commit(app):
    jobs.enqueue(jobs.with_app_context(record), "a")
    db.session.add(Macro(name="m", body="b"))
    assert CALLS == []
    db.session.commit()
    assert CALLS == [("a", 1)]


def test_rolled_back_work_starts_no_job(app):
    jobs.enqueue(record, "b")
    db.session.rollback()
    db.session.commit()
    assert CALLS == []


def test_in_process_runner_retries_a_failed_job(app):
    app.config.update(JOBS_INLINE=False, REDIS_URL=None, RETRY_INTERVALS=[0, 0])
    jobs.enqueue(flaky, "c", retry=True)
    db.session.commit()
    assert DONE.wait(10)
    assert CALLS == ["c", "c"]


@pytest.fixture
def redis_url(services):
    from redis import Redis

    url = services["HELPDESK_TEST_REDIS_URL"]
    Redis.from_url(url).flushdb()
    return url


def test_rq_runs_the_job_and_retries(app, redis_url):
    from rq import SimpleWorker

    app.config.update(JOBS_INLINE=False, REDIS_URL=redis_url, RETRY_INTERVALS=[0, 0])
    jobs.enqueue(flaky, "d", retry=True)
    db.session.commit()
    queue = jobs.rq_queue(app)
    assert queue.count == 1
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert CALLS == ["d", "d"]


def test_cron_config_registers_the_recurring_jobs():
    from rq import cron as rq_cron

    import jobs.cron  # noqa: F401  (registers on import)
    from jobs.schedule import RECURRING

    names = {data["func"].__name__ for data in rq_cron._job_data_registry}
    assert {func.__name__ for func, _ in RECURRING} <= names
