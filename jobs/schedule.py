"""The recurring jobs and their intervals, shared by `rq cron` and the in-process runner."""
from jobs.mail import drop_old_raw_mail, poll_due_mailboxes, sla_sweep, sweep_outbox, sweep_unreferenced_files

RECURRING = [
    (poll_due_mailboxes, 15),  # each mailbox is polled at its own interval; this finds the due ones
    (sweep_outbox, 60),  # sends what a lost job or a crash left queued
    (sla_sweep, 60),
    (drop_old_raw_mail, 3600),  # retention: raw mail past MAIL_RETENTION_DAYS
    (sweep_unreferenced_files, 3600),  # files of mails rolled back after they were stored
]
