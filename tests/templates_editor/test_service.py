"""The email template service: stored text, enabling, rendering for sending and preview."""
from __future__ import annotations

import logging

import pytest

from helpdesk.extensions import db
from helpdesk.mail.render import DEFAULT_TEMPLATES, TEMPLATE_KINDS, sample_values
from helpdesk.models import EmailTemplate
from helpdesk.services import email_templates


def test_every_kind_has_its_default_row_from_the_migration(app):
    for kind in TEMPLATE_KINDS:
        template = email_templates.get_template(kind)
        assert (template.subject, template.body) == DEFAULT_TEMPLATES[kind]
        assert template.enabled is True


def test_a_missing_row_is_recreated_from_the_default(app):
    db.session.execute(db.delete(EmailTemplate).filter_by(kind="resolved"))
    db.session.commit()
    template = email_templates.get_template("resolved")
    assert template.id is not None
    assert template.subject == DEFAULT_TEMPLATES["resolved"][0]


def test_an_unknown_kind_is_a_typed_error(app):
    with pytest.raises(email_templates.UnknownTemplateKind, match="no email template called 'nope'"):
        email_templates.get_template("nope")


def test_render_notification_fills_the_kinds_variables(app):
    rendered = email_templates.render_notification("new_ticket", sample_values() | {"ticket_title": "VPN down"})
    assert rendered is not None
    assert rendered.subject == "We received your request: VPN down"
    assert "Hello Jane Doe," in rendered.text
    assert "<p " in rendered.html and "VPN down" in rendered.html
    assert rendered.unknown == ()


def test_render_notification_returns_none_when_disabled_unless_asked(app, admin):
    template = email_templates.get_template("resolved")
    email_templates.save_template("resolved", template.subject, template.body, False, admin)
    db.session.commit()
    assert email_templates.render_notification("resolved", sample_values()) is None
    preview = email_templates.render_notification("resolved", sample_values(), include_disabled=True)
    assert preview is not None and preview.subject.startswith("Resolved: ")


def test_variables_of_other_kinds_stay_as_typed_and_are_logged(app, admin, caplog, monkeypatch):
    # The migrations' env.py runs logging.fileConfig, which disables loggers that
    # existed before it (this module's among them); undo that for this test.
    monkeypatch.setattr(email_templates.log, "disabled", False)
    # $reply_body is in the catalogue but means nothing in a new-ticket confirmation.
    email_templates.save_template("new_ticket", "Hi $contcat_name", "Body $reply_body $contact_name", True, admin)
    with caplog.at_level(logging.WARNING, logger="helpdesk.services.email_templates"):
        rendered = email_templates.render_notification("new_ticket", sample_values())
    assert rendered.subject == "Hi $contcat_name"
    assert rendered.text == "Body $reply_body Jane Doe"
    assert rendered.unknown == ("contcat_name", "reply_body")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "new_ticket" in record.getMessage() and "contcat_name, reply_body" in record.getMessage()


def test_describe_unknown_tells_typos_from_variables_of_other_templates(app):
    assert email_templates.describe_unknown("new_ticket", ["contcat_name", "reply_body"]) == [
        "$contcat_name is not a known placeholder",
        "$reply_body is not available in the New ticket confirmation template",
    ]


def test_save_records_who_and_when_and_reset_restores_the_default(app, admin, make_agent):
    email_templates.save_template("agent_reply", "Changed", "New body", True, admin)
    db.session.commit()
    stored = db.session.scalar(db.select(EmailTemplate).filter_by(kind="agent_reply"))
    assert (stored.subject, stored.body, stored.updated_by_id) == ("Changed", "New body", admin.id)
    first_change = stored.updated_at
    assert first_change is not None

    other = make_agent("other@example.test", role="admin", name="Other Admin")
    email_templates.reset_to_default("agent_reply", other)
    db.session.commit()
    assert (stored.subject, stored.body) == DEFAULT_TEMPLATES["agent_reply"]
    assert stored.updated_by_id == other.id
    assert stored.updated_at >= first_change


def test_reset_keeps_a_disabled_template_disabled(app, admin):
    email_templates.save_template("sla_breach", "x", "y", False, admin)
    email_templates.reset_to_default("sla_breach", admin)
    assert email_templates.get_template("sla_breach").enabled is False


def test_list_names_who_changed_each_template(app, admin):
    email_templates.save_template("resolved", "Done: $ticket_title", "Body", True, admin)
    db.session.commit()
    summaries = {s.kind.key: s for s in email_templates.list_templates()}
    assert list(summaries) == list(TEMPLATE_KINDS)
    assert summaries["resolved"].updated_by.name == "Ada Admin"
    assert summaries["new_ticket"].updated_by is None


def test_preview_values_are_samples_with_the_configured_company(app):
    with app.test_request_context():
        values = email_templates.preview_values(None, None)
    assert values["company_name"] == "Example Support"
    assert values["contact_name"] == sample_values()["contact_name"]


def test_preview_values_take_a_real_tickets_values(app, admin, make_ticket):
    ticket = make_ticket(title="Scanner jams", email="bob@customer.test")
    with app.test_request_context():
        values = email_templates.preview_values(ticket.id, admin)
    assert values["ticket_title"] == "Scanner jams"
    assert values["ticket_number"] == str(ticket.number)
    assert values["contact_email"] == "bob@customer.test"
    assert values["agent_name"] == "Ada Admin"
    assert values["ticket_url"] == f"http://helpdesk.test/tickets/{ticket.id}"
    # Nothing on a ticket carries these, so they stay samples.
    assert values["reply_body"] == sample_values()["reply_body"]
    assert values["invite_url"] == sample_values()["invite_url"]


def test_preview_values_fall_back_to_samples_for_a_vanished_ticket(app, admin):
    with app.test_request_context():
        values = email_templates.preview_values(987654, admin)
    assert values["ticket_title"] == sample_values()["ticket_title"]
