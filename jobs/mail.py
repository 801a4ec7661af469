"""Thin mail jobs: each takes ids, opens an app context and calls a service."""
from __future__ import annotations

from jobs import with_app_context


@with_app_context
def send_outbox(outbound_id: int, *more_ids: int) -> None:
    """Send outbox mails (one, or several queued by a poll); raising makes RQ retry a transient failure."""
    from helpdesk.services import outbox

    outbox.send(outbound_id, *more_ids)


@with_app_context
def sweep_outbox() -> None:
    """Queue sends for outbox mails left queued (a lost job, a crash) past their retry time."""
    from helpdesk.services import outbox

    outbox.sweep()


@with_app_context
def poll_mailbox(mailbox_id: int) -> None:
    """Poll one mailbox now."""
    from helpdesk.services import inbound

    inbound.poll_mailbox(mailbox_id)


@with_app_context
def poll_due_mailboxes() -> None:
    """Queue a poll for each enabled mailbox whose interval has passed."""
    from helpdesk.services import inbound

    inbound.queue_due_polls()


@with_app_context
def sla_sweep() -> None:
    """Alert agents about SLA breaches not yet announced."""
    from helpdesk.services import sla

    sla.sweep()


@with_app_context
def drop_old_raw_mail() -> None:
    """Drop the raw bytes of sent and processed mail past the retention time; the log rows stay."""
    from helpdesk.services import retention

    retention.drop_old_raw_mail()


@with_app_context
def sweep_unreferenced_files() -> None:
    """Remove stored files that no attachment or kept raw mail names (left by mails rolled back), a day on."""
    from helpdesk.services import retention

    retention.sweep_unreferenced_files()
