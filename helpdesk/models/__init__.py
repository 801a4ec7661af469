"""The helpdesk's data model, one module per aggregate."""
from helpdesk.models.mail import EmailTemplate, InboundMail, Mailbox, OutboundMessage, SmtpConfig
from helpdesk.models.people import Agent, Contact, Customer, CustomerDomain, Invitation
from helpdesk.models.tickets import Attachment, Comment, Macro, SlaPolicy, Ticket, TicketEvent

__all__ = [
    "Agent", "Attachment", "Comment", "Contact", "Customer", "CustomerDomain", "EmailTemplate",
    "InboundMail", "Invitation", "Macro", "Mailbox", "OutboundMessage", "SlaPolicy", "SmtpConfig",
    "Ticket", "TicketEvent",
]
