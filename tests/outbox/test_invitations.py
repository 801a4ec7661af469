"""Agent invitations: the admin invites, the mail carries a signed link, the invitee sets name and password."""
from __future__ import annotations

import re
from datetime import timedelta

from helpdesk.extensions import db
from helpdesk.models import Agent, Invitation
from helpdesk.models._time import utcnow

LINK = re.compile(r"http://helpdesk\.test(/invite/[A-Za-z0-9_.\-]+)")


def invite(admin_client, email="new.agent@helpdesk.test", role="agent", name="Nia New"):
    token = admin_client.auth.token
    return admin_client.auth.post("/admin/agents/invite", data={
        "invite-csrf_token": token, "invite-email": email, "invite-role": role, "invite-name": name})


def invitation_link(smtp) -> str:
    body = smtp.received[-1].message.get_body(("plain",)).get_content()
    match = LINK.search(body)
    assert match, body
    return match.group(1)


def test_invite_sends_a_link_that_creates_the_agent(app, smtp, admin_client, client):
    response = invite(admin_client, role="admin")
    assert response.status_code == 302
    [received] = smtp.received
    assert received.rcpt_tos == ["new.agent@helpdesk.test"]
    assert received.message["Subject"] == "You are invited to join the Example Support helpdesk"
    assert "Hello Nia New" in received.message.get_body(("plain",)).get_content()
    link = invitation_link(smtp)
    assert "new.agent@helpdesk.test" in admin_client.get("/admin/agents").get_data(as_text=True)

    admin_client.auth.post("/logout")
    page = client.get(link)
    assert page.status_code == 200 and "new.agent@helpdesk.test" in page.get_data(as_text=True)
    token = admin_client.auth.refresh_token(link)
    short = client.post(link, data={"csrf_token": token, "name": "Nia", "password": "short", "confirm": "short"})
    assert short.status_code == 200 and "Use at least 8 characters" in short.get_data(as_text=True)
    assert db.session.scalar(db.select(Agent).filter_by(email="new.agent@helpdesk.test")) is None

    done = client.post(link, data={"csrf_token": token, "name": "Nia New", "password": "long enough pw",
                                   "confirm": "long enough pw"})
    assert done.status_code == 302 and done.headers["Location"] == "/tickets"
    agent = db.session.scalar(db.select(Agent).filter_by(email="new.agent@helpdesk.test"))
    assert agent.name == "Nia New" and agent.role == "admin" and agent.check_password("long enough pw")
    invitation = db.session.scalar(db.select(Invitation))
    assert invitation.accepted_at is not None and invitation.agent_id == agent.id

    used = client.get(link)
    assert used.status_code == 410
    assert "This invitation was already used" in used.get_data(as_text=True)


def test_expired_invitation_says_so(app, smtp, admin_client, client):
    invite(admin_client)
    link = invitation_link(smtp)
    invitation = db.session.scalar(db.select(Invitation))
    assert invitation.expires_at - invitation.created_at == timedelta(hours=72)
    invitation.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    page = client.get(link)
    assert page.status_code == 410
    assert "This invitation expired; ask an admin for a new one." in page.get_data(as_text=True)


def test_tampered_link_is_not_valid(app, smtp, admin_client, client):
    invite(admin_client)
    link = invitation_link(smtp)
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    page = client.get(tampered)
    assert page.status_code == 404 and "not valid" in page.get_data(as_text=True)
    # A correctly signed token for an invitation that does not exist is not valid either.
    from helpdesk.services.invitations import make_token

    assert client.get("/invite/" + make_token(Invitation(id=999))).status_code == 404


def test_existing_agent_cannot_be_invited_and_agents_cannot_invite(app, smtp, admin_client, admin):
    response = invite(admin_client, email=admin.email)
    assert response.status_code == 422
    assert "is already an agent" in response.get_data(as_text=True)
    assert smtp.received == []


def test_agents_cannot_invite(app, smtp, agent_client):
    response = invite(agent_client)
    assert response.status_code == 403
    assert smtp.received == []
