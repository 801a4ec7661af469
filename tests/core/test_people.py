"""Contacts, customers and customer domains."""
from helpdesk.extensions import db
from helpdesk.models import Contact, Customer, CustomerDomain


def test_contact_email_is_unique_whatever_its_case(agent_client):
    agent_client.auth.post("/contacts/new", {"name": "Jane", "email": "Jane@Example.test", "customer_id": "0"})
    again = agent_client.auth.post("/contacts/new", {"name": "J", "email": "JANE@example.test", "customer_id": "0"})
    assert "Another contact has this email." in again.get_data(as_text=True)
    assert [c.email for c in db.session.scalars(db.select(Contact))] == ["jane@example.test"]


def test_customer_domains_saved_and_checked(agent_client):
    response = agent_client.auth.post("/customers/new", {"name": "Acme", "domains": "acme.test\n@Shop.Acme.test\n"})
    assert response.status_code == 302
    acme = db.session.scalar(db.select(Customer))
    assert sorted(d.domain for d in acme.domains) == ["acme.test", "shop.acme.test"]

    free = agent_client.auth.post("/customers/new", {"name": "Gmailers", "domains": "gmail.com"})
    assert "free-mail domain" in free.get_data(as_text=True)
    taken = agent_client.auth.post("/customers/new", {"name": "Other", "domains": "acme.test"})
    assert "acme.test already belongs to Acme." in taken.get_data(as_text=True)
    junk = agent_client.auth.post("/customers/new", {"name": "Junk", "domains": "not a domain"})
    assert "is not a domain name" in junk.get_data(as_text=True)

    agent_client.auth.post(f"/customers/{acme.id}", {"name": "Acme Corp", "domains": "acme.test"})
    assert [d.domain for d in db.session.scalars(db.select(CustomerDomain))] == ["acme.test"]
    page = agent_client.get("/customers").get_data(as_text=True)
    assert "Acme Corp" in page and "acme.test" in page


def test_contacts_search_and_empty_state(agent_client):
    assert "No contacts yet" in agent_client.get("/contacts").get_data(as_text=True)
    db.session.add_all([Contact(email="a@x.test", name="Anna"), Contact(email="b@x.test", name="Bert")])
    db.session.commit()
    body = agent_client.get("/contacts?q=ann").get_data(as_text=True)
    assert "Anna" in body and "Bert" not in body


def test_sla_targets_saved_and_validated(admin_client):
    from helpdesk.models import SlaPolicy

    page = admin_client.get("/admin/sla").get_data(as_text=True)
    assert "Urgent" in page and 'value="60"' in page
    policies = {p.priority: p for p in db.session.scalars(db.select(SlaPolicy))}
    order = ["urgent", "high", "normal", "low"]
    data = {}
    for i, priority in enumerate(order):
        data[f"rows-{i}-priority"] = priority
        data[f"rows-{i}-first_response_minutes"] = str(policies[priority].first_response_minutes)
        data[f"rows-{i}-resolution_minutes"] = str(policies[priority].resolution_minutes)
    data["rows-0-first_response_minutes"] = "30"
    admin_client.auth.post("/admin/sla", data)
    db.session.expire_all()
    assert db.session.scalar(db.select(SlaPolicy).filter_by(priority="urgent")).first_response_minutes == 30
    data["rows-1-resolution_minutes"] = "0"
    bad = admin_client.auth.post("/admin/sla", data).get_data(as_text=True)
    assert "Number must be between 1 and 525600." in bad


def test_a_contact_is_found_by_its_address_whatever_its_case_and_made_once(app):
    from helpdesk.services.contacts import find_or_create_contact

    made = find_or_create_contact(" Jane@Acme.TEST ", "Jane Doe")
    db.session.commit()
    found = find_or_create_contact("jane@acme.test", "Someone Else")
    assert found is made and (found.email, found.name) == ("jane@acme.test", "Jane Doe")
    assert find_or_create_contact("JANE@acme.test", create=False) is made
    assert find_or_create_contact("nobody@acme.test", create=False) is None
    nameless = find_or_create_contact("anon@acme.test")
    db.session.commit()
    assert find_or_create_contact("anon@acme.test", "Finally Named").name == "Finally Named"
    db.session.commit()
    assert sorted(c.email for c in db.session.scalars(db.select(Contact))) == ["anon@acme.test", "jane@acme.test"]
    assert nameless.name == "Finally Named"


def test_a_new_contact_belongs_to_the_customer_of_its_domain_never_of_a_free_mail_domain(app):
    from helpdesk.services.contacts import find_or_create_contact

    acme = Customer(name="Acme", domains=[CustomerDomain(domain="acme.test")])
    other = Customer(name="Other")
    db.session.add_all([acme, other])
    db.session.commit()
    assert find_or_create_contact("jane@ACME.test").customer is acme
    assert find_or_create_contact("joe@acme.test", customer=other).customer is other  # the caller's choice wins
    assert find_or_create_contact("jane@gmail.com").customer is None
    assert find_or_create_contact("jim@elsewhere.test").customer is None
    db.session.add(CustomerDomain(domain="gmail.com", customer=acme))  # the form refuses this; still never used
    assert find_or_create_contact("john@gmail.com").customer is None


def test_no_contact_for_an_address_no_contact_can_have(app):
    from helpdesk.services.contacts import find_or_create_contact

    for address in ("", "no-at-sign", "a@" + "b" * 260 + ".test", "bell\x07@acme.test", "nul\x00@acme.test"):
        assert find_or_create_contact(address) is None
    assert db.session.scalar(db.select(db.func.count(Contact.id))) == 0


def test_a_ticket_opened_by_an_agent_for_a_new_address_of_a_customer_domain_belongs_to_that_customer(admin_client):
    from helpdesk.models import Ticket

    db.session.add(Customer(name="Acme", domains=[CustomerDomain(domain="acme.test")]))
    db.session.commit()
    admin_client.auth.post("/tickets/new", {"contact_email": "Jane@acme.test", "contact_name": "Jane",
                                            "title": "Help", "description": "Please", "priority": "normal"})
    ticket = db.session.scalar(db.select(Ticket))
    assert (ticket.contact.email, ticket.contact.customer.name, ticket.customer.name) == ("jane@acme.test", "Acme",
                                                                                         "Acme")
