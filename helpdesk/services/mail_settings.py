"""The settings a run of mail writes reads once: notification templates, SLA targets, the sender, our own addresses.

A poll reads them when it starts and hands them down with each ticket it opens; a change applies
from the next poll. A single write (a web request) passes none, and each is read where it is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

from helpdesk.extensions import db
from helpdesk.models import EmailTemplate, SlaPolicy, SmtpConfig
from helpdesk.services.mailboxes import own_addresses


@dataclass(frozen=True)
class MailSettings:
    """What the writes of one run read once."""

    templates: dict[str, EmailTemplate]  # by kind
    sla_targets: dict[str, tuple[int, int]]  # by priority: minutes to the first response and to the resolution
    sender: tuple[str, str]  # the configured From Address and name
    own: frozenset[str]  # our own addresses: mail to or from them would loop

    @classmethod
    def read(cls) -> MailSettings:
        """Read the settings now."""
        return cls(templates={t.kind: t for t in db.session.scalars(db.select(EmailTemplate))},
                   sla_targets={p.priority: (p.first_response_minutes, p.resolution_minutes)
                                for p in db.session.scalars(db.select(SlaPolicy))},
                   sender=configured_sender(), own=own_addresses())


def configured_sender() -> tuple[str, str]:
    """Return the From Address and name of Outbound (SMTP); no password is decrypted to read them."""
    row = db.session.execute(db.select(SmtpConfig.from_address, SmtpConfig.from_name)
                             .order_by(SmtpConfig.id).limit(1)).first()
    return (row.from_address or "", row.from_name or "") if row else ("", "")
