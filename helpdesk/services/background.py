"""Work the services ask for once the current transaction commits: an outbox mail to send, a mailbox to poll.

The services only say what should happen; `jobs` decides how (RQ, or a thread of this process)
and installs itself on the app from create_app (`jobs.init_app`).
"""
from __future__ import annotations

from typing import Protocol

from flask import Flask, current_app


class Background(Protocol):
    """What carries out the after-commit work; nothing starts if the transaction rolls back."""

    def send_outbox(self, message_id: int) -> None:
        """Send the outbox mail once the current transaction commits, with the others of that commit."""

    def poll_mailbox(self, mailbox_id: int) -> None:
        """Poll the mailbox once the current transaction commits."""

    def wait(self, timeout: float) -> bool:
        """Wait for the work this process runs itself; False when some is still left after `timeout` seconds."""


def install(app: Flask, background: Background) -> None:
    """Have `background` carry out the app's after-commit work."""
    app.extensions["background"] = background


def send_outbox_after_commit(message_id: int) -> None:
    """Have outbox mail `message_id` sent once the current transaction commits."""
    current_app.extensions["background"].send_outbox(message_id)


def poll_mailbox_after_commit(mailbox_id: int) -> None:
    """Have mailbox `mailbox_id` polled once the current transaction commits."""
    current_app.extensions["background"].poll_mailbox(mailbox_id)


def wait_for_queued(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the work this process runs itself; False when some is left.

    Work handed to other processes (RQ's workers) is not waited for.
    """
    return current_app.extensions["background"].wait(timeout)
