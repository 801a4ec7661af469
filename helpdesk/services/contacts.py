"""Contacts: the people who write to support, found by their address or made when new."""
from __future__ import annotations

from helpdesk.extensions import db
from helpdesk.mail.freemail import is_free_mail
from helpdesk.models import Contact, Customer, CustomerDomain

# The columns' widths: PostgreSQL refuses longer strings.
EMAIL_MAX, NAME_MAX = 254, 200


def find_or_create_contact(email: str, name: str = "", customer: Customer | None = None,
                           create: bool = True) -> Contact | None:
    """Return the contact with this address, made when new; None if create=False and there is none.

    A new contact belongs to `customer`, or else to the customer whose Customer Domain its address is
    in. A known contact keeps its customer, and takes `name` only if it has none. None too for an
    address no contact can have (no @, too long, control characters).
    """
    address = (email or "").strip().lower()
    if "@" not in address or len(address) > EMAIL_MAX or not address.isprintable():
        return None
    name = _text(name)[:NAME_MAX]
    contact = db.session.scalar(db.select(Contact).filter_by(email=address))
    if contact is not None:
        if name and not contact.name:
            contact.name = name
        return contact
    if not create:
        return None
    contact = Contact(email=address, name=name, customer=customer or customer_by_domain(address))
    db.session.add(contact)
    return contact


def customer_by_domain(email: str) -> Customer | None:
    """Return the customer whose Customer Domain the address is in, if any (never for a free-mail domain)."""
    domain = email.rpartition("@")[2].strip().lower()
    if not domain or is_free_mail(domain):
        return None
    return db.session.scalar(db.select(Customer).join(CustomerDomain).where(CustomerDomain.domain == domain))


def _text(value: str | None) -> str:
    """Return `value` as text every database stores: no NUL characters, no lone surrogates."""
    return (value or "").replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
