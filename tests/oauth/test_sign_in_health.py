"""Credential health: a failing sign-in opens one incident (banner, one admin mail) and closes with one more."""
import pytest

from helpdesk.extensions import db
from helpdesk.models import Mailbox, OutboundMessage, SmtpConfig
from helpdesk.services import sign_in


@pytest.fixture
def mailbox(app):
    box = Mailbox(name="Support", host="imap.example.test", username="support@example.test", enabled=True)
    db.session.add(box)
    db.session.add(SmtpConfig(host="smtp.example.invalid", from_address="help@example.test"))
    db.session.commit()
    return box


def _alerts() -> list[OutboundMessage]:
    return list(db.session.scalars(db.select(OutboundMessage).filter_by(kind="sign_in_alert").order_by(OutboundMessage.id)))


def test_failed_logins_in_a_row_open_one_incident_and_one_admin_mail(mailbox, admin, make_agent):
    make_agent("second-admin@example.test", role="admin", name="Second Admin")
    make_agent("plain@example.test")  # agents are not mailed: they cannot fix the settings
    for _ in range(sign_in.FAILURES_FOR_INCIDENT - 1):
        sign_in.record_poll(mailbox, False, "auth", "The server refused the OAuth token.")
        db.session.commit()
    assert mailbox.sign_in_incident_at is None and _alerts() == []

    for _ in range(5):  # every poll after that fails as well: still one mail
        sign_in.record_poll(mailbox, False, "auth", "The server refused the OAuth token.")
        db.session.commit()
    alerts = _alerts()
    assert mailbox.sign_in_incident_at is not None
    assert len(alerts) == 1
    assert set(alerts[0].to.split(", ")) == {"admin@example.test", "second-admin@example.test"}
    assert "cannot sign in" in alerts[0].subject and "“Support”" in alerts[0].subject
    assert "The server refused the OAuth token." in alerts[0].text_body
    assert "/admin/settings/email/inbound/" in alerts[0].text_body


def test_a_refused_refresh_opens_the_incident_at_once_and_recovery_sends_one_more_mail(mailbox, admin):
    sign_in.record_poll(mailbox, False, "oauth", "The sign-in was revoked or has expired (invalid_grant).")
    db.session.commit()
    assert mailbox.sign_in_incident_at is not None and len(_alerts()) == 1

    sign_in.record_poll(mailbox, True, "", "")
    sign_in.record_poll(mailbox, True, "", "")
    db.session.commit()
    alerts = _alerts()
    assert mailbox.sign_in_incident_at is None and mailbox.sign_in_failures == 0
    assert len(alerts) == 2 and "works again" in alerts[1].subject


def test_network_trouble_is_not_a_sign_in_incident(mailbox, admin):
    for kind in ("timeout", "refused", "dns", "oauth_unreachable"):
        for _ in range(sign_in.FAILURES_FOR_INCIDENT):
            sign_in.record_poll(mailbox, False, kind, "Cannot reach the server.")
    db.session.commit()
    assert mailbox.sign_in_failures == 0 and mailbox.sign_in_incident_at is None and _alerts() == []


def test_admins_see_the_banner_on_every_page_until_it_works_again(mailbox, admin_client):
    sign_in.record_poll(mailbox, False, "oauth", "Consent is missing for this app.")
    db.session.commit()
    for url in ("/tickets", "/contacts", "/admin/settings/email/templates"):
        html = admin_client.get(url).get_data(as_text=True)
        assert "Mail sign-in is failing" in html, url
        assert "Consent is missing for this app." in html and f"/admin/settings/email/inbound/{mailbox.id}" in html

    sign_in.record_poll(db.session.get(Mailbox, mailbox.id), True, "", "")
    db.session.commit()
    assert "Mail sign-in is failing" not in admin_client.get("/tickets").get_data(as_text=True)


def test_agents_do_not_see_the_admin_banner(mailbox, agent_client):
    sign_in.record_poll(mailbox, False, "oauth", "Consent is missing for this app.")
    db.session.commit()
    assert "Mail sign-in is failing" not in agent_client.get("/tickets").get_data(as_text=True)


def test_outbound_refusal_shows_on_its_sign_in_panel(mailbox, admin_client):
    from helpdesk.services import smtp_config

    smtp_config.sign_in_refused("smtp.example.test:587 refused the OAuth token for 'help@example.test'.")
    db.session.commit()
    html = admin_client.get("/admin/settings/email/outbound").get_data(as_text=True)
    assert "Failing since" in html and "refused the OAuth token" in html
    assert "the helpdesk cannot sign in to Outbound (SMTP)" in html
