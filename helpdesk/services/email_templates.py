"""Admin-edited notification templates: load, save, reset, and render them for sending and preview.

Outbound notifications and the admin's preview both go through `render_draft`,
so what the editor shows is what the recipient gets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from helpdesk.extensions import db
from helpdesk.mail.render import (CATALOGUE, DEFAULT_TEMPLATES, TEMPLATE_KINDS, RenderedMail, TemplateKind,
                                  render_mail, sample_values)
from helpdesk.models import Agent, EmailTemplate, Ticket
from helpdesk.models._time import utcnow
from helpdesk.services.mail_settings import MailSettings
from helpdesk.services.placeholders import ticket_values

log = logging.getLogger(__name__)

PREVIEW_TICKET_COUNT = 50


class UnknownTemplateKind(ValueError):
    """The kind names no notification the helpdesk sends."""

    def __init__(self, kind: str):
        super().__init__(f"There is no email template called {kind!r}; "
                         f"the templates are {', '.join(TEMPLATE_KINDS)}.")
        self.kind = kind


@dataclass(frozen=True)
class TemplateSummary:
    """One row of the templates list: what it is, its stored text and who last changed it."""

    kind: TemplateKind
    template: EmailTemplate
    updated_by: Agent | None


def template_kind(kind: str) -> TemplateKind:
    """Return the description of a notification kind, or raise UnknownTemplateKind."""
    try:
        return TEMPLATE_KINDS[kind]
    except KeyError:
        raise UnknownTemplateKind(kind) from None


def get_template(kind: str) -> EmailTemplate:
    """Return the stored template of `kind`, recreating it from the default text if its row is gone."""
    template_kind(kind)
    template = db.session.scalar(db.select(EmailTemplate).filter_by(kind=kind))
    if template is None:
        # The first migration inserts every kind; this only repairs a deleted row.
        # Flushed, not committed: the caller's transaction decides.
        subject, body = DEFAULT_TEMPLATES[kind]
        template = EmailTemplate(kind=kind, subject=subject, body=body, enabled=True)
        db.session.add(template)
        db.session.flush()
    return template


def list_templates() -> list[TemplateSummary]:
    """Return every template in the order the catalogue lists the kinds."""
    summaries = []
    for kind in TEMPLATE_KINDS.values():
        template = get_template(kind.key)
        editor = db.session.get(Agent, template.updated_by_id) if template.updated_by_id else None
        summaries.append(TemplateSummary(kind, template, editor))
    return summaries


def render_draft(kind: str, subject: str, body: str, values: dict[str, str]) -> RenderedMail:
    """Render a subject and body as a notification of `kind`, with only that kind's variables."""
    return render_mail(subject, body, values, template_kind(kind).variables)


def render_notification(kind: str, values: dict[str, str], *, include_disabled: bool = False,
                        settings: MailSettings | None = None) -> RenderedMail | None:
    """Render the stored template of `kind` (as `settings` read it, if given); None when the admin disabled it
    (unless `include_disabled`)."""
    template = settings.templates.get(kind) if settings is not None else None
    template = template or get_template(kind)
    if not template.enabled and not include_disabled:
        return None
    rendered = render_draft(kind, template.subject, template.body, values)
    if rendered.unknown:
        # Unknown names go out as typed; the admin sees the same warning in the editor.
        log.warning("Email template %s uses unknown placeholders: %s", kind, ", ".join(rendered.unknown))
    return rendered


def save_template(kind: str, subject: str, body: str, enabled: bool, agent: Agent | None) -> EmailTemplate:
    """Store new text for a template and who changed it; the caller commits."""
    template = get_template(kind)
    template.subject = subject
    template.body = body
    template.enabled = enabled
    template.updated_at = utcnow()
    template.updated_by_id = agent.id if agent is not None else None
    return template


def reset_to_default(kind: str, agent: Agent | None) -> EmailTemplate:
    """Put the default subject and body back, keeping whether the template is enabled."""
    template = get_template(kind)
    subject, body = DEFAULT_TEMPLATES[kind]
    return save_template(kind, subject, body, template.enabled, agent)


def preview_tickets(limit: int = PREVIEW_TICKET_COUNT) -> list[Ticket]:
    """Return the latest tickets, newest first, for the preview's ticket picker."""
    return list(db.session.scalars(db.select(Ticket).order_by(Ticket.id.desc()).limit(limit)))


def preview_values(ticket_id: int | None, agent: Agent | None) -> dict[str, str]:
    """Return sample values, overlaid with a real ticket's and agent's values when a ticket is chosen."""
    ticket = db.session.get(Ticket, ticket_id) if ticket_id else None
    # The company name is real configuration even in the sample; the reply,
    # SLA and invitation values stay samples since no ticket carries them.
    if ticket is None:
        return sample_values() | ticket_values(None)
    return sample_values() | ticket_values(ticket, agent)


def describe_unknown(kind: str, names: tuple[str, ...] | list[str]) -> list[str]:
    """Explain each unknown placeholder: a typo, or a real variable this template cannot use."""
    label = template_kind(kind).label
    return [f"${name} is not available in the {label} template" if name in CATALOGUE
            else f"${name} is not a known placeholder" for name in names]
