"""Command-line tools."""
import json

from helpdesk.extensions import db
from helpdesk.models import Agent, Customer, Macro, Ticket


def test_create_admin_with_and_without_password(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create-admin", "Boss@Example.test", "--password", "s3cret-pass"])
    assert result.exit_code == 0, result.output
    boss = db.session.scalar(db.select(Agent))
    assert (boss.email, boss.role) == ("boss@example.test", "admin") and boss.check_password("s3cret-pass")
    result = runner.invoke(args=["users", "create-admin", "boss@example.test"])
    generated = result.output.rsplit("Password: ", 1)[1].strip()
    db.session.refresh(boss)
    assert boss.check_password(generated) and not boss.check_password("s3cret-pass")


def test_demo_seed_fills_an_empty_database_once(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo", "seed"])
    assert "Demo admin: admin@example.com  password: " in first.output
    password = first.output.rsplit("password: ", 1)[1].strip()
    admin = db.session.scalar(db.select(Agent).filter_by(email="admin@example.com"))
    assert admin.is_admin and admin.check_password(password)
    assert db.session.scalar(db.select(db.func.count(Ticket.id))) >= 4
    assert db.session.scalar(db.select(db.func.count(Customer.id))) >= 3
    assert db.session.scalar(db.select(db.func.count(Macro.id))) >= 2
    again = runner.invoke(args=["demo", "seed"])
    assert f"password: {password}" in again.output  # the same login, printed again
    assert db.session.scalar(db.select(db.func.count(Agent.id))) == 2


def test_tickets_show_json(app, make_ticket):
    ticket = make_ticket(title="Überweisung fehlt")
    result = app.test_cli_runner().invoke(args=["tickets", "show", str(ticket.id), "--json"])
    data = json.loads(result.output)
    assert data["number"] == ticket.number and data["title"] == "Überweisung fehlt"
    assert data["contact"] == {"name": "Jane Doe", "email": "jane@customer.test"}
    assert data["comments"] == [] and data["attachments"] == []
    missing = app.test_cli_runner().invoke(args=["tickets", "show", "999"])
    assert missing.exit_code != 0 and "No ticket with id 999" in missing.output
