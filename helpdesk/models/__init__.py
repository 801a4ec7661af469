"""The helpdesk's data model, one module per aggregate."""
from helpdesk.models.mail import (INBOUND_OUTCOMES, OUTBOUND_STATUSES, EmailTemplate, InboundMail, Mailbox,
                                  OAuthConnection, OutboundMessage, SmtpConfig)
from helpdesk.models.people import Agent, Contact, Customer, CustomerDomain, Invitation
from helpdesk.models.tickets import Attachment, Comment, Macro, SlaPolicy, Ticket, TicketEvent

__all__ = [
    "INBOUND_OUTCOMES", "OUTBOUND_STATUSES", "Agent", "Attachment", "Comment", "Contact", "Customer", "CustomerDomain", "EmailTemplate",
    "InboundMail", "Invitation", "Macro", "Mailbox", "OAuthConnection", "OutboundMessage", "SlaPolicy", "SmtpConfig",
    "Ticket", "TicketEvent",
]
