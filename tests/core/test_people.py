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
