"""`rq cron jobs/cron.py`: enqueue the recurring jobs on Redis (a `rq worker` runs them)."""
from rq import cron

from jobs import QUEUE_NAME
from jobs.schedule import RECURRING

for func, interval in RECURRING:
    cron.register(func, queue_name=QUEUE_NAME, interval=interval)
