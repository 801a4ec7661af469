"""The `$variable` renderer for admin-edited email templates and agents' macros.

Admins and agents type this text in the browser, so it never goes through Jinja:
only whitelisted names are substituted, with no attribute access and no
expressions. Preview and real sending both call `render_mail`, so what an admin
sees is what a customer gets.
"""
from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CATALOGUE: dict[str, str] = {
    "ticket_number": "The ticket's number, e.g. 1042",
    "ticket_title": "The ticket's title (the subject of the first mail)",
    "ticket_status": "The ticket's current status, e.g. Open or Resolved",
    "ticket_priority": "The ticket's priority, e.g. Normal or High",
    "ticket_url": "Link to the ticket in the helpdesk",
    "contact_name": "Name of the person who opened the ticket",
    "contact_email": "Email address of that person",
    "customer_name": "The customer (organisation) the contact belongs to",
    "agent_name": "Name of the agent: the one replying or assigned, or the invitee in invitations",
    "agent_email": "Email address of that agent",
    "reply_body": "The text of the agent's reply",
    "sla_target": "The service level target that was missed, e.g. First response within 4 hours",
    "sla_due_at": "When the service level target fell due",
    "invite_url": "Link the invited agent opens to accept the invitation",
    "company_name": "Your company's name, as set in the helpdesk settings",
}

GROUPS: dict[str, tuple[str, ...]] = {
    "Ticket": ("ticket_number", "ticket_title", "ticket_status", "ticket_priority", "ticket_url"),
    "Contact": ("contact_name", "contact_email"),
    "Customer": ("customer_name",),
    "Agent": ("agent_name", "agent_email"),
    "Reply": ("reply_body",),
    "SLA": ("sla_target", "sla_due_at"),
    "Invitation": ("invite_url",),
    "Company": ("company_name",),
}

_TICKET = GROUPS["Ticket"]
_CONTACT = GROUPS["Contact"] + GROUPS["Customer"]
_AGENT = GROUPS["Agent"]
_COMPANY = GROUPS["Company"]


@dataclass(frozen=True)
class TemplateKind:
    """One notification an admin can edit: who receives it and which names it may use."""

    key: str
    label: str
    recipient: str  # "contact", "agent" or "invitee"
    variables: tuple[str, ...]


TEMPLATE_KINDS: dict[str, TemplateKind] = {
    kind.key: kind
    for kind in (
        TemplateKind("new_ticket", "New ticket confirmation", "contact", _TICKET + _CONTACT + _COMPANY),
        TemplateKind("agent_reply", "Reply notification", "contact",
                     _TICKET + _CONTACT + _AGENT + GROUPS["Reply"] + _COMPANY),
        TemplateKind("resolved", "Resolution notification", "contact", _TICKET + _CONTACT + _AGENT + _COMPANY),
        TemplateKind("sla_breach", "SLA breach alert", "agent",
                     _TICKET + _CONTACT + _AGENT + GROUPS["SLA"] + _COMPANY),
        TemplateKind("agent_invite", "Agent invitation", "invitee", _AGENT + GROUPS["Invitation"] + _COMPANY),
    )
}

# Macros are inserted into a reply being written, so the reply itself, the
# invitation link and SLA figures mean nothing there.
MACRO_VARIABLES: tuple[str, ...] = _TICKET + _CONTACT + _AGENT + _COMPANY

# Subjects leave out the [#1042] tag: composing the outgoing mail adds it.
DEFAULT_TEMPLATES: dict[str, tuple[str, str]] = {
    "new_ticket": (
        "We received your request: $ticket_title",
        """Hello $contact_name,

Thank you for contacting $company_name. We have received your request and opened \
ticket #$ticket_number: "$ticket_title".

A member of our team will get back to you as soon as possible. If you have anything \
to add, simply reply to this email and keep the ticket number in the subject line.

You can follow your request here:
$ticket_url

Kind regards,
The $company_name support team
""",
    ),
    "agent_reply": (
        "Re: $ticket_title",
        """Hello $contact_name,

$reply_body

Kind regards,
$agent_name
$company_name

To answer, simply reply to this email. Ticket #$ticket_number: $ticket_url
""",
    ),
    "resolved": (
        "Resolved: $ticket_title",
        """Hello $contact_name,

Good news: your request "$ticket_title" (ticket #$ticket_number) has been marked as resolved.

If something is still not working or you have another question about it, just reply \
to this email and we will reopen the ticket.

Thank you for contacting $company_name.

Kind regards,
The $company_name support team
""",
    ),
    "sla_breach": (
        "SLA breached: $ticket_title",
        """Hello $agent_name,

Ticket #$ticket_number "$ticket_title" has missed its service level target.

Target: $sla_target
Due: $sla_due_at
Priority: $ticket_priority
Status: $ticket_status
Contact: $contact_name <$contact_email>
Customer: $customer_name

Please look at it as soon as you can:
$ticket_url

The $company_name helpdesk
""",
    ),
    "agent_invite": (
        "You are invited to join the $company_name helpdesk",
        """Hello $agent_name,

You have been invited to join the $company_name helpdesk as an agent, with the sign-in \
address $agent_email.

To accept the invitation and choose your password, open this link:
$invite_url

If you were not expecting this invitation, you can safely ignore this email.

Kind regards,
The $company_name team
""",
    ),
}

# string.Template's syntax, but written out so a `$` that starts no placeholder
# stays as typed instead of raising, and unknown names can be reported.
_NAME = r"(?a:[_a-zA-Z][_a-zA-Z0-9]*)"
_PLACEHOLDER = re.compile(rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>{_NAME})\}}|(?P<named>{_NAME}))")

SUBJECT_MAX_CHARS = 250


@dataclass(frozen=True)
class Rendered:
    """A rendered text and the placeholders it used that are not allowed, in order of first use."""

    text: str
    unknown: tuple[str, ...]


@dataclass(frozen=True)
class RenderedMail:
    """A rendered notification: header-safe subject, plain-text body, HTML body."""

    subject: str
    text: str
    html: str
    unknown: tuple[str, ...]


def find_placeholders(text: str) -> list[str]:
    """Return the names used in `text`, each once, in order of first use."""
    seen: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(text):
        name = match.group("braced") or match.group("named")
        if name:
            seen.setdefault(name)
    return list(seen)


def unknown_placeholders(text: str, allowed: Iterable[str]) -> list[str]:
    """Return the names used in `text` that are not in `allowed`."""
    allowed_names = set(allowed)
    return [name for name in find_placeholders(text) if name not in allowed_names]


def render_text(text: str, values: Mapping[str, str], allowed: Iterable[str] | None = None) -> Rendered:
    """Substitute allowed names in `text`; leave unknown ones visible as typed and report them."""
    allowed_names = set(CATALOGUE if allowed is None else allowed)
    unknown: dict[str, None] = {}

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        if name not in allowed_names:
            unknown.setdefault(name)
            return match.group(0)
        value = values.get(name)
        return "" if value is None else str(value)

    return Rendered(_PLACEHOLDER.sub(substitute, text), tuple(unknown))


def render_subject(text: str, values: Mapping[str, str], allowed: Iterable[str] | None = None) -> Rendered:
    """Render a subject line that is safe to put in a mail header."""
    rendered = render_text(text, values, allowed)
    return Rendered(_header_safe(rendered.text), rendered.unknown)


def render_html(text: str, values: Mapping[str, str], allowed: Iterable[str] | None = None) -> Rendered:
    """Render a body as escaped HTML: lines become <br>, blank lines paragraphs, URLs links."""
    rendered = render_text(text, values, allowed)
    # Escaping is per character, so escaping the whole rendered text escapes
    # the template's own text and every value alike: nothing can break out.
    return Rendered(_paragraphs_html(rendered.text), rendered.unknown)


def render_mail(subject: str, body: str, values: Mapping[str, str],
                allowed: Iterable[str] | None = None) -> RenderedMail:
    """Render a notification's subject and body for both preview and sending."""
    allowed_names = tuple(CATALOGUE if allowed is None else allowed)
    rendered_subject = render_subject(subject, values, allowed_names)
    rendered_text = render_text(body, values, allowed_names)
    unknown = dict.fromkeys(rendered_subject.unknown + rendered_text.unknown)
    return RenderedMail(
        subject=rendered_subject.text,
        text=rendered_text.text,
        html=_paragraphs_html(rendered_text.text),
        unknown=tuple(unknown),
    )


def sample_values() -> dict[str, str]:
    """Return made-up values for previewing templates and macros."""
    return {
        "ticket_number": "1042",
        "ticket_title": "Cannot log in after password reset",
        "ticket_status": "Open",
        "ticket_priority": "High",
        "ticket_url": "https://helpdesk.example.com/tickets/1042",
        "contact_name": "Jane Doe",
        "contact_email": "jane.doe@acme.example",
        "customer_name": "Acme Corp",
        "agent_name": "Sam Taylor",
        "agent_email": "sam.taylor@example.com",
        "reply_body": ("Thanks for the details, Jane.\n\n"
                       "I have cleared the lock on your account; please try signing in again.\n"
                       "Let me know if the problem comes back."),
        "sla_target": "First response within 4 hours",
        "sla_due_at": "2025-03-14 16:00 UTC",
        "invite_url": "https://helpdesk.example.com/invite/3f9a2c7d",
        "company_name": "Example Ltd",
    }


def _header_safe(text: str) -> str:
    # A value carrying CR/LF must not start a new header; other controls and
    # Unicode line/paragraph separators would garble the subject in clients.
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())[:SUBJECT_MAX_CHARS].rstrip()


_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}"
_WRAPPER_STYLE = "font-family: Arial, Helvetica, sans-serif; font-size: 14px; line-height: 1.5; color: #222222;"
_PARAGRAPH_STYLE = "margin: 0 0 1em 0;"


def _paragraphs_html(text: str) -> str:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p.strip("\n") for p in _BLANK_LINES.split(normalised)]
    parts = [
        f'<p style="{_PARAGRAPH_STYLE}">' + "<br>\n".join(map(_linked_line, p.split("\n"))) + "</p>"
        for p in paragraphs
        if p.strip()
    ]
    return f'<div style="{_WRAPPER_STYLE}">\n' + "\n".join(parts) + "\n</div>"


def _linked_line(line: str) -> str:
    # Only http(s) URLs are linked, and both href and link text are escaped
    # with quotes, so a value cannot smuggle in an attribute or a scheme.
    out: list[str] = []
    position = 0
    for match in _URL.finditer(line):
        url = match.group(0).rstrip(_URL_TRAILING)
        if len(url) <= len(match.group(0).split("://", 1)[0]) + 3:
            continue  # a bare "https://" with nothing after it is not a link
        start = match.start()
        out.append(html.escape(line[position:start], quote=True))
        escaped = html.escape(url, quote=True)
        out.append(f'<a href="{escaped}">{escaped}</a>')
        position = start + len(url)
    out.append(html.escape(line[position:], quote=True))
    return "".join(out)
