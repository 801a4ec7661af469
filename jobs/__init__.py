"""Background jobs: RQ when REDIS_URL is set, otherwise an in-process runner on the same functions."""
from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from helpdesk.extensions import db
from helpdesk.services import background

log = logging.getLogger(__name__)
QUEUE_NAME = "helpdesk"
_PENDING = "helpdesk_pending_jobs"
_worker_app: Flask | None = None


def with_app_context(func: Callable) -> Callable:
    """Run a job inside an app context, building the app once per worker process when needed."""

    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        if has_app_context():
            return func(*args, **kwargs)
        with worker_app().app_context():
            return func(*args, **kwargs)

    return wrapped


def worker_app() -> Flask:
    """Return the app this process's jobs run in, building it on first use.

    Built before a worker forks (`jobs.worker.Worker` does), it is inherited by every process the
    worker forks for a job, whose job then starts at once.
    """
    global _worker_app
    if _worker_app is None:
        from helpdesk import create_app

        app = create_app()
        with app.app_context():
            # Processes forked from this one must not share its database connections: it keeps
            # none in its pool (a worker only forks; its work horses connect on their own).
            db.engine.dispose()
        _worker_app = app
    return _worker_app


def init_app(app: Flask) -> None:
    """Carry out the app's after-commit work (`helpdesk.services.background`) with these jobs."""
    background.install(app, Jobs(app))


class Jobs:
    """The services' after-commit work as jobs: RQ when REDIS_URL is set, else this process's runner."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def send_outbox(self, message_id: int) -> None:
        """Send the outbox mail after the commit, in one job with the commit's other mails."""
        from jobs.mail import send_outbox

        enqueue(send_outbox, message_id, retry=True, merge=True)

    def poll_mailbox(self, mailbox_id: int) -> None:
        """Poll the mailbox after the commit."""
        from jobs.mail import poll_mailbox

        enqueue(poll_mailbox, mailbox_id)

    def wait(self, timeout: float) -> bool:
        """Wait for the in-process runner's jobs, if this process started it; RQ's run elsewhere."""
        existing = self.app.extensions.get("job_runner")
        if existing is None or existing[0] != os.getpid():
            return True
        return existing[1].wait(timeout)


def enqueue(func: Callable, *args, retry: bool = False, merge: bool = False) -> None:
    """Queue func(*args) to start once the current database transaction commits.

    merge=True: the calls of func that one commit starts are merged into one call with every
    argument (func must take any number of ids).
    """
    # Begin the transaction now, so a rollback (which only fires events for a begun one) drops the job.
    db.session.connection()
    db.session.info.setdefault(_PENDING, []).append((func, args, retry, merge))


def _merged(jobs: list[tuple]) -> list[tuple[Callable, tuple, bool]]:
    merged: dict[Callable, list] = {}
    out: list[list] = []
    for func, args, retry, merge in jobs:
        if merge and func in merged:
            merged[func][1] += args
            merged[func][2] = merged[func][2] or retry
            continue
        job = [func, tuple(args), retry]
        out.append(job)
        if merge:
            merged[func] = job
    return [(func, tuple(args), retry) for func, args, retry in out]


def _dispatch_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its jobs wait for the transaction's own commit
    pending = session.info.pop(_PENDING, None)
    if not pending or not has_app_context():
        return
    app = current_app._get_current_object()
    for func, args, retry in _merged(pending):
        dispatch(app, func, args, retry)


def _drop_pending(session: Session, previous_transaction) -> None:
    # A savepoint rolled back (one mail of a poll's batch) keeps the jobs of the mails before it;
    # a job for a row it took back finds nothing to do.
    if not previous_transaction.nested:
        session.info.pop(_PENDING, None)


# On the app's sessions only (Flask-SQLAlchemy's session factory), not on every Session in the process.
event.listen(db.session, "after_commit", _dispatch_pending)
event.listen(db.session, "after_soft_rollback", _drop_pending)


def dispatch(app: Flask, func: Callable, args: tuple, retry: bool = False) -> None:
    """Hand a job to RQ, run it now (JOBS_INLINE, for tests) or give it to the in-process runner."""
    if app.config.get("JOBS_INLINE"):
        _run_inline(app, func, args)
    elif app.config.get("REDIS_URL"):
        from rq import Retry

        policy = Retry(max=len(app.config["RETRY_INTERVALS"]), interval=app.config["RETRY_INTERVALS"]) if retry else None
        rq_queue(app).enqueue(func, *args, retry=policy)
    else:
        runner(app).submit(func, args, retry)


def _run_inline(app: Flask, func: Callable, args: tuple) -> None:
    # A fresh app context gives the job its own database session, as a worker would have.
    with app.app_context():
        try:
            func(*args)
        except Exception:
            log.exception("job %s%r failed; the recurring sweep will try again", func.__name__, args)


def rq_queue(app: Flask):
    """Return the RQ queue on the app's Redis."""
    from redis import Redis
    from rq import Queue

    connection = app.extensions.get("redis")
    if connection is None:
        connection = app.extensions["redis"] = Redis.from_url(app.config["REDIS_URL"])
    return Queue(QUEUE_NAME, connection=connection)


class Runner:
    """Runs jobs on a background thread, with retries and the recurring jobs, for a machine without Redis."""

    def __init__(self, app: Flask):
        self.app = app
        self.jobs: queue.Queue = queue.Queue()
        # Jobs submitted and not finished yet, a retry that waits its turn included.
        self.unfinished = 0
        self.finished = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="helpdesk-jobs", daemon=True)
        self.thread.start()

    def submit(self, func: Callable, args: tuple, retry: bool = False) -> None:
        """Queue a job for the background thread."""
        with self.finished:
            self.unfinished += 1
        self.jobs.put((func, args, retry, 0))

    def wait(self, timeout: float) -> bool:
        """Wait until every job submitted so far has finished, retries included; False if `timeout` ran out."""
        with self.finished:
            return self.finished.wait_for(lambda: self.unfinished == 0, timeout)

    def start_recurring(self) -> None:
        """Start the thread that enqueues the recurring jobs (what `rq cron` does with Redis)."""
        threading.Thread(target=self._schedule, name="helpdesk-cron", daemon=True).start()

    def _work(self) -> None:
        while True:
            func, args, retry, attempt = self.jobs.get()
            retrying = False
            with self.app.app_context():
                try:
                    func(*args)
                except Exception:
                    intervals = self.app.config["RETRY_INTERVALS"]
                    if retry and attempt < len(intervals):
                        log.warning("job %s%r failed; retry %d in %ss", func.__name__, args, attempt + 1,
                                    intervals[attempt])
                        timer = threading.Timer(intervals[attempt], self.jobs.put,
                                                ((func, args, retry, attempt + 1),))
                        timer.daemon = True
                        timer.start()
                        retrying = True
                    else:
                        log.exception("job %s%r failed", func.__name__, args)
            if not retrying:
                with self.finished:
                    self.unfinished -= 1
                    self.finished.notify_all()
            self.jobs.task_done()

    def _schedule(self) -> None:
        from jobs.schedule import RECURRING

        last_run: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for func, interval in RECURRING:
                if now - last_run.get(func.__name__, -interval) >= interval:
                    last_run[func.__name__] = now
                    self.submit(func, ())
            time.sleep(1)


def runner(app: Flask) -> Runner:
    """Return the app's in-process runner, starting it on first use."""
    existing = app.extensions.get("job_runner")
    if existing is None or existing[0] != os.getpid():
        existing = app.extensions["job_runner"] = (os.getpid(), Runner(app))
    return existing[1]
