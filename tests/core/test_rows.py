"""Objects of rows read elsewhere (`_rows.loaded`), as a query would return them."""
from __future__ import annotations

from sqlalchemy import inspect, select, update

from helpdesk.extensions import db
from helpdesk.models import Contact, Customer
from helpdesk.models._rows import loaded


def saved_contact() -> Contact:
    contact = Contact(email="jane@acme.test", name="Jane", customer=Customer(name="Acme"))
    db.session.add(contact)
    db.session.commit()  # its attributes expire
    return contact


def test_the_sessions_object_of_that_row_is_refreshed_with_what_was_read(app, statements_asked):
    contact = saved_contact()
    with db.engine.begin() as elsewhere:  # an agent renames her meanwhile
        elsewhere.execute(update(Contact).values(name="Jane Roe"))

    identity = inspect(contact).identity[0]
    customer_id = db.session.scalar(select(Contact.customer_id))

    same = loaded(Contact, {"id": identity, "name": "Jane Roe", "customer_id": customer_id})

    with statements_asked() as asked:
        assert same is contact and (contact.id, contact.name, contact.customer_id) == (identity, "Jane Roe", customer_id)
    assert asked == []  # what was read is not asked again
    assert (contact.email, contact.customer.name) == ("jane@acme.test", "Acme")  # the rest loads when used


def test_a_change_not_written_yet_is_kept(app):
    contact = saved_contact()
    contact_id = inspect(contact).identity[0]  # not `contact.id`: loading it would write the change first
    contact.name = "Changed here"

    loaded(Contact, {"id": contact_id, "name": "Jane"})

    assert contact.name == "Changed here" and inspect(contact).modified


def test_a_row_not_in_the_session_becomes_a_persistent_object_whose_other_columns_load_when_used(app):
    contact_id = saved_contact().id
    db.session.expunge_all()

    contact = loaded(Contact, {"id": contact_id, "name": "Jane"})

    assert inspect(contact).persistent and not inspect(contact).modified
    assert (contact.email, contact.customer.name) == ("jane@acme.test", "Acme")
    assert db.session.get(Contact, contact_id) is contact
