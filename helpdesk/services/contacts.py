"""Contacts: the one place a sender's address is found or made into a contact, with its customer."""
from __future__ import annotations

from sqlalchemy import select

from helpdesk.extensions import db
from helpdesk.mail.freemail import is_free_mail
from helpdesk.models import Contact, Customer, CustomerDomain


def find_or_create_contact(email: str, name: str = "", *, create: bool = True) -> Contact | None:
    """Return the contact of `email`, made when new: always with `create`, else only when its domain is a customer's.

    A new contact belongs to the customer whose Customer Domain its address has (never for a
    free-mail domain). A known contact without a name takes `name`.
    """
    email = email.strip().lower()
    contact = db.session.scalars(select(Contact).where(Contact.email == email)).first()
    if contact is not None:
        if name and not contact.name:
            contact.name = name
        return contact
    customer = customer_of_domain(email.rpartition("@")[2])
    if customer is None and not create:
        return None
    contact = Contact(email=email, name=name, customer=customer)
    db.session.add(contact)
    return contact


def customer_of_domain(domain: str) -> Customer | None:
    """Return the customer whose Customer Domain `domain` is, if any (never for a free-mail domain)."""
    if not domain or is_free_mail(domain):
        return None
    return db.session.scalars(select(Customer).join(CustomerDomain, CustomerDomain.customer_id == Customer.id)
                              .where(CustomerDomain.domain == domain.lower())).first()
