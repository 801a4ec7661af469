"""The `$variable` values for a ticket, shared by macros and email templates."""
from __future__ import annotations

from flask import current_app

from helpdesk.models import Agent, Ticket


def public_url(endpoint: str, **values) -> str:
    """Return an absolute console URL for mail, also where there is no request (jobs, the CLI)."""
    # url_for needs a request or SERVER_NAME; mails are often rendered by a worker, so build from the map.
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return current_app.config["PUBLIC_BASE_URL"] + path


def ticket_url(ticket: Ticket) -> str:
    """Return the ticket's address in the console, from the public base URL."""
    return public_url("tickets.detail", ticket_id=ticket.id)


def ticket_values(ticket: Ticket | None, agent: Agent | None = None, **extra: str) -> dict[str, str]:
    """Return every catalogue value that this ticket and agent can fill."""
    values = {"company_name": current_app.config["COMPANY_NAME"]}
    if ticket is not None:
        values.update(
            ticket_number=str(ticket.number), ticket_title=ticket.title, ticket_status=ticket.status,
            ticket_priority=ticket.priority, ticket_url=ticket_url(ticket),
            contact_name=ticket.contact.display_name if ticket.contact else "",
            contact_email=ticket.contact.email if ticket.contact else "",
            customer_name=ticket.customer.name if ticket.customer else "",
        )
    if agent is not None:
        values.update(agent_name=agent.name, agent_email=agent.email)
    values.update({k: v for k, v in extra.items() if v is not None})
    return values
