"""Agent invitations: an admin invites by email, the invitee sets name and password from a signed link."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import update

from helpdesk.extensions import db
from helpdesk.models import Agent, Invitation
from helpdesk.models._time import utcnow
from helpdesk.models.people import ROLES
from helpdesk.services import outbox
from helpdesk.services.email_templates import render_notification
from helpdesk.services.placeholders import public_url, ticket_values

_SALT = "invite"


class InvitationError(Exception):
    """An invitation that cannot be sent or accepted; the message says why to the person at hand."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "exists", "invalid", "used", "expired"


def invite(email: str, role: str, invited_by: Agent | None, name: str = "") -> Invitation:
    """Record an invitation and queue its mail; the caller commits."""
    email = email.strip().lower()
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}")
    if db.session.scalar(db.select(Agent.id).filter_by(email=email)) is not None:
        raise InvitationError("exists", f"{email} is already an agent.")
    hours = current_app.config.get("INVITE_TTL_HOURS", 72)
    now = utcnow()
    invitation = Invitation(email=email, role=role, invited_by_id=invited_by.id if invited_by else None,
                            created_at=now, expires_at=now + timedelta(hours=hours))
    db.session.add(invitation)
    db.session.flush()
    # The invitee has no agent row yet; the greeting uses the name the admin typed, or the address.
    values = ticket_values(None, None, agent_name=name.strip() or email, agent_email=email,
                           invite_url=invite_url(invitation))
    rendered = render_notification("agent_invite", values, include_disabled=True)
    outbox.queue_mail(kind="agent_invite", to=[email], rendered=rendered)
    return invitation


def invite_url(invitation: Invitation) -> str:
    """Return the link the invitee opens, with the signed token naming the invitation."""
    return public_url("agents.accept_invite", token=make_token(invitation))


def make_token(invitation: Invitation) -> str:
    """Return the signed token for an invitation (it names the row; the row says when it expires)."""
    return _serializer().dumps(invitation.id)


def find_invitation(token: str) -> Invitation:
    """Return the open invitation a token names, or raise InvitationError saying why it cannot be used."""
    try:
        invitation_id = _serializer().loads(token)
    except BadSignature:
        invitation_id = None
    invitation = db.session.get(Invitation, invitation_id) if isinstance(invitation_id, int) else None
    if invitation is None:
        raise InvitationError("invalid", "This invitation link is not valid. Check that you copied all of it.")
    if invitation.accepted_at is not None:
        raise InvitationError("used", "This invitation was already used. Sign in with the password you chose.")
    if invitation.expires_at <= utcnow():
        raise InvitationError("expired", "This invitation expired; ask an admin for a new one.")
    return invitation


def accept(invitation: Invitation, name: str, password: str) -> Agent:
    """Create the invited agent with their name and password and close the invitation; the caller commits."""
    now = utcnow()
    # Conditional, so a link opened twice at the same moment creates one agent.
    won = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=now).execution_options(synchronize_session=False)).rowcount == 1
    if not won:
        raise InvitationError("used", "This invitation was already used. Sign in with the password you chose.")
    if db.session.scalar(db.select(Agent.id).filter_by(email=invitation.email)) is not None:
        raise InvitationError("used", f"{invitation.email} is already an agent. Sign in instead.")
    agent = Agent(email=invitation.email, name=name.strip(), role=invitation.role)
    agent.set_password(password)
    db.session.add(agent)
    db.session.flush()
    db.session.execute(update(Invitation).where(Invitation.id == invitation.id).values(agent_id=agent.id)
                       .execution_options(synchronize_session=False))
    db.session.refresh(invitation)
    return agent


def pending_invitations() -> list[Invitation]:
    """Return invitations not yet accepted, newest first (expired ones too, so admins see them lapse)."""
    return list(db.session.scalars(db.select(Invitation).where(Invitation.accepted_at.is_(None))
                                   .order_by(Invitation.created_at.desc(), Invitation.id.desc()).limit(50)))


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)
