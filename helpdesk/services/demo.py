"""Demo data so a first `make run` shows a working helpdesk."""
from __future__ import annotations

import secrets
from datetime import timedelta

from helpdesk.extensions import db
from helpdesk.models import Agent, Contact, Customer, CustomerDomain, Macro
from helpdesk.models._time import utcnow
from helpdesk.services import tickets as ticket_service

CUSTOMERS = [("Acme Corp", ["acme.example"]), ("Globex", ["globex.example", "globex-mail.example"]),
             ("Initech", ["initech.example"])]
CONTACTS = [("Wile E. Coyote", "wile@acme.example", "Acme Corp"), ("Hank Scorpio", "hank@globex.example", "Globex"),
            ("Peter Gibbons", "peter@initech.example", "Initech"), ("Jane Roe", "jane.roe@gmail.com", None)]
TICKETS = [
    ("wile@acme.example", "Rocket skates arrived without wheels", "The skates in order 5521 have no wheels. "
     "Can you send the missing parts?", "high"),
    ("hank@globex.example", "Invoice 2026-114 shows the wrong VAT number", "Our VAT number changed in May; "
     "the invoice still shows the old one.", "normal"),
    ("peter@initech.example", "TPS report cover sheets", "Where do I download the new cover sheet template?", "low"),
    ("jane.roe@gmail.com", "Cannot reset my password", "The reset link in your mail says it expired, "
     "even when I click it right away.", "urgent"),
]
MACROS = [
    ("Thanks, looking into it", "Hello $contact_name,\n\nthank you for contacting $company_name. We are looking "
     "into ticket $ticket_number and will get back to you shortly.\n\nBest regards,\n$agent_name"),
    ("Please send more details", "Hello $contact_name,\n\ncould you tell us a little more about “$ticket_title”? "
     "Screenshots or the exact error message help a lot.\n\n$agent_name, $company_name"),
]


def seed(admin_email: str) -> tuple[str, str] | None:
    """Add a demo admin and demo data when no agent exists; return (email, password) or None."""
    if db.session.scalar(db.select(Agent.id).limit(1)) is not None:
        return None
    password = secrets.token_urlsafe(9)
    admin = Agent(email=admin_email, name="Demo Admin", role="admin")
    admin.set_password(password)
    agent = Agent(email="agent@example.com", name="Alex Agent", role="agent")
    agent.set_password(secrets.token_urlsafe(12))
    db.session.add_all([admin, agent])
    customers = {}
    for name, domains in CUSTOMERS:
        customers[name] = Customer(name=name, domains=[CustomerDomain(domain=d) for d in domains])
        db.session.add(customers[name])
    contacts = {}
    for name, email, customer in CONTACTS:
        contacts[email] = Contact(name=name, email=email, customer=customers.get(customer))
        db.session.add(contacts[email])
    db.session.add_all(Macro(name=n, body=b) for n, b in MACROS)
    db.session.flush()
    for i, (email, title, description, priority) in enumerate(TICKETS):
        ticket = ticket_service.open_ticket(title=title, description=description, contact=contacts[email],
                                            priority=priority, source="email", notify=False)
        ticket.created_at = utcnow() - timedelta(hours=3 * (len(TICKETS) - i))
        ticket_service.apply_sla(ticket)
    db.session.commit()
    return admin_email, password
