"""Ticket events become mail to the contact: confirmation, reply notification, resolution.

Every notification is rendered from its admin-edited template and written to the outbox
in the same transaction as the change that caused it, so it is sent only if that change
is committed, and never lost once it is.
"""
from __future__ import annotations

import logging

from helpdesk import events
from helpdesk.models import Agent, Comment, Ticket
from helpdesk.services import outbox
from helpdesk.services.email_templates import render_notification
from helpdesk.services.mail_settings import MailSettings
from helpdesk.services.placeholders import ticket_values

log = logging.getLogger(__name__)
_connected = False


def connect() -> None:
    """Subscribe the notifications to the ticket events (once per process, however many apps)."""
    global _connected
    if _connected:
        return
    # Strong references: the receivers are module functions, but blinker's default weak
    # references would make connecting depend on who else keeps them alive.
    events.ticket_created.connect(on_ticket_created, weak=False)
    events.public_reply_posted.connect(on_public_reply, weak=False)
    events.ticket_resolved.connect(on_ticket_resolved, weak=False)
    _connected = True


def on_ticket_created(ticket: Ticket, agent: Agent | None = None, notify: bool = True,
                      settings: MailSettings | None = None, **_: object) -> None:
    """Confirm a new ticket to its contact, unless the mail that opened it was automatic (notify=False)."""
    if not notify or ticket.contact is None:
        return
    # The confirmation answers the mail that opened the ticket, if any: there is no later one yet,
    # and no thread to look up.
    threading = {"in_reply_to": ticket.message_id, "references": [ticket.message_id] if ticket.message_id else [],
                 "find_thread": False}
    _notify_contact("new_ticket", ticket, agent, automatic=True, threading=threading, settings=settings)


def on_public_reply(ticket: Ticket, agent: Agent | None = None, comment: Comment | None = None,
                    **_: object) -> None:
    """Send an agent's public reply to the contact, with the reply's attachments."""
    if comment is None or not comment.public or ticket.contact is None:
        return
    # A person wrote this reply: it is not marked Auto-Submitted, so autoresponders may answer it.
    _notify_contact("agent_reply", ticket, agent, automatic=False, comment=comment,
                    reply_body=comment.body_text)


def on_ticket_resolved(ticket: Ticket, agent: Agent | None = None, **_: object) -> None:
    """Tell the contact that their ticket is resolved."""
    if ticket.contact is None:
        return
    _notify_contact("resolved", ticket, agent or ticket.assignee, automatic=True)


def _notify_contact(kind: str, ticket: Ticket, agent: Agent | None, *, automatic: bool,
                    comment: Comment | None = None, threading: dict | None = None,
                    settings: MailSettings | None = None, **values: str) -> None:
    rendered = render_notification(kind, ticket_values(ticket, agent, **values), settings=settings)
    if rendered is None:
        log.info("%s mail for ticket %s not sent: the template is disabled", kind, ticket.number)
        return
    outbox.queue_mail(kind=kind, to=[ticket.contact.email], rendered=rendered, ticket=ticket,
                      comment=comment, automatic=automatic, settings=settings, **(threading or {}))
