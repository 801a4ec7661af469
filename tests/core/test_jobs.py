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


def record_all(*values):
    """A job that takes any number of ids."""
    CALLS.append(values)


def test_merged_jobs_of_one_commit_start_as_one_call_with_every_argument(app):
    for value in ("a", "b", "c"):
        jobs.enqueue(record_all, value, merge=True)
    jobs.enqueue(record_all, "alone")
    db.session.commit()
    jobs.enqueue(record_all, "next", merge=True)
    db.session.commit()
    assert CALLS == [("a", "b", "c"), ("alone",), ("next",)]


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


PROBE = '''
import os
import sys

import jobs
from helpdesk.extensions import db
from helpdesk.models import Macro


def probe():
    """A job: report whether the app was there when the job started, and use the database."""
    found = {"pid": os.getpid(), "app_built": jobs._worker_app is not None,
             "helpdesk_imported": "helpdesk.services.inbound" in sys.modules}
    found["macros"] = jobs.with_app_context(lambda: db.session.scalar(db.select(db.func.count(Macro.id))))()
    return found
'''


@pytest.mark.parametrize(("worker_class", "preloaded"), [("jobs.worker.Worker", True), ("rq.Worker", False)])
def test_our_rq_worker_forks_each_job_with_the_app_built_and_a_database_of_its_own(
        app, app_config, redis_url, tmp_path, worker_class, preloaded):
    import os
    import subprocess
    import sys
    from pathlib import Path

    db.session.add(Macro(name="m", body="b"))
    db.session.commit()
    (tmp_path / "helpdesk_probe.py").write_text(PROBE)
    app.config.update(REDIS_URL=redis_url)
    probes = [jobs.rq_queue(app).enqueue("helpdesk_probe.probe") for _ in range(2)]
    root = Path(jobs.__file__).resolve().parent.parent
    env = dict(os.environ, DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"], SECRET_KEY="test-secret",
               CREDENTIALS_KEY=app_config["CREDENTIALS_KEY"], ATTACHMENT_FOLDER=str(tmp_path / "attachments"))
    env.pop("S3_ENDPOINT", None)

    # The timeout is not a speed limit: without a bound, a hang would stall the whole run.
    worker = subprocess.run([str(Path(sys.executable).parent / "rq"), "worker", "--burst", "--url", redis_url,
                             "--worker-class", worker_class, "--path", str(tmp_path), "--path", str(root),
                             jobs.QUEUE_NAME], env=env, cwd=root, capture_output=True, text=True, timeout=120)

    assert worker.returncode == 0, worker.stderr[-2000:]
    found = [job.return_value() for job in probes]
    assert all(job.get_status(refresh=True) == "finished" for job in probes), worker.stderr[-2000:]
    assert len({f["pid"] for f in found}) == 2  # a work horse forked for each job
    assert [(f["app_built"], f["helpdesk_imported"]) for f in found] == [(preloaded, preloaded)] * 2
    assert [f["macros"] for f in found] == [1, 1]
