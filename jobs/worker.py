"""The RQ worker to run: `rq worker --worker-class jobs.worker.Worker helpdesk`."""
from __future__ import annotations

from rq.worker import Worker as RqWorker

import jobs
import jobs.mail  # noqa: F401 - the jobs, and below what they run, imported here once, not in each job
from helpdesk.services import inbound, outbox, sla  # noqa: F401


class Worker(RqWorker):
    """An RQ worker that builds the app once, before it forks a work horse for each job.

    A plain `rq worker` forks from a process without the app: each job would import and build
    it again, half a second of CPU or more, before doing any work.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        jobs.worker_app()
