"""Admin screens for the team: agents, invitations and SLA targets; the public invitation page."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_user

from helpdesk.agents.forms import AcceptInviteForm, AgentForm, InviteForm, SlaForm
from helpdesk.extensions import db
from helpdesk.models import Agent, SlaPolicy
from helpdesk.models._time import utcnow
from helpdesk.services import invitations
from helpdesk.web import admin_required

# No url_prefix: the admin screens live under /admin, the invitation page at /invite/<token>.
bp = Blueprint("agents", __name__, template_folder="templates")


@bp.route("/admin/agents", methods=["GET", "POST"])
@admin_required
def index():
    form = AgentForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if db.session.scalar(db.select(Agent).filter_by(email=email)):
            form.email.errors.append("An agent with this email exists.")
        else:
            agent = Agent(name=form.name.data.strip(), email=email, role=form.role.data)
            agent.set_password(form.password.data)
            db.session.add(agent)
            db.session.commit()
            flash(f"Agent {agent.email} added.", "success")
            return redirect(url_for("agents.index"))
    return _index_page(form, InviteForm(prefix="invite"))


def _index_page(form: AgentForm, invite_form: InviteForm, status: int = 200):
    agents = db.session.scalars(db.select(Agent).order_by(Agent.active.desc(), Agent.name)).all()
    return render_template("agents/index.html", agents=agents, form=form, invite_form=invite_form,
                           invitations=invitations.pending_invitations(), now_utc=utcnow()), status


@bp.route("/admin/agents/invite", methods=["POST"])
@admin_required
def invite():
    form = InviteForm(prefix="invite")
    if form.validate_on_submit():
        try:
            invitation = invitations.invite(form.email.data, form.role.data, current_user, name=form.name.data or "")
        except invitations.InvitationError as exc:
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Invitation sent to {invitation.email}. The link works until "
                  f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC.", "success")
            return redirect(url_for("agents.index"))
    return _index_page(AgentForm(formdata=None), form, status=422)


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invite(token: str):
    """The invitee's page (no sign-in): choose a name and password, or learn why the link no longer works."""
    try:
        invitation = invitations.find_invitation(token)
    except invitations.InvitationError as exc:
        return render_template("agents/invite_closed.html", reason=exc), 404 if exc.kind == "invalid" else 410
    form = AcceptInviteForm()
    if form.validate_on_submit():
        try:
            agent = invitations.accept(invitation, form.name.data, form.password.data)
        except invitations.InvitationError as exc:
            db.session.rollback()
            return render_template("agents/invite_closed.html", reason=exc), 410
        db.session.commit()
        login_user(agent)
        flash(f"Welcome, {agent.name}. Your account is ready.", "success")
        return redirect(url_for("tickets.index"))
    return render_template("agents/invite_accept.html", form=form, invitation=invitation)


@bp.route("/admin/agents/<int:agent_id>/active", methods=["POST"])
@admin_required
def toggle_active(agent_id: int):
    agent = db.get_or_404(Agent, agent_id)
    if agent.id == current_user.id:
        abort(400, "You cannot deactivate yourself.")
    agent.active = not agent.active
    db.session.commit()
    flash(f"{agent.email} {'reactivated' if agent.active else 'deactivated'}.", "success")
    return redirect(url_for("agents.index"))


@bp.route("/admin/sla", methods=["GET", "POST"])
@admin_required
def sla():
    policies = db.session.scalars(db.select(SlaPolicy)).all()
    order = {p: i for i, p in enumerate(("urgent", "high", "normal", "low"))}
    policies.sort(key=lambda p: order.get(p.priority, 9))
    form = SlaForm(data={"rows": [{"priority": p.priority, "first_response_minutes": p.first_response_minutes,
                                   "resolution_minutes": p.resolution_minutes} for p in policies]})
    if form.validate_on_submit():
        if len(form.rows.entries) != len(policies):
            # A form from before a priority was added, or a hand-made request: nothing to pair up.
            flash("The form did not carry a row for every priority, so nothing was saved. "
                  "Reload the page and try again.", "error")
            return redirect(url_for("agents.sla"))
        for policy, row in zip(policies, form.rows.entries, strict=True):
            policy.first_response_minutes = row.form.first_response_minutes.data
            policy.resolution_minutes = row.form.resolution_minutes.data
        db.session.commit()
        flash("SLA targets saved. They apply to tickets opened from now on.", "success")
        return redirect(url_for("agents.sla"))
    return render_template("agents/sla.html", form=form)
