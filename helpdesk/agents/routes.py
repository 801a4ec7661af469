"""Admin screens for the team: agents and SLA targets."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from helpdesk.agents.forms import AgentForm, SlaForm
from helpdesk.extensions import db
from helpdesk.models import Agent, SlaPolicy
from helpdesk.web import admin_required

bp = Blueprint("agents", __name__, url_prefix="/admin", template_folder="templates")


@bp.route("/agents", methods=["GET", "POST"])
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
    agents = db.session.scalars(db.select(Agent).order_by(Agent.active.desc(), Agent.name)).all()
    return render_template("agents/index.html", agents=agents, form=form)


@bp.route("/agents/<int:agent_id>/active", methods=["POST"])
@admin_required
def toggle_active(agent_id: int):
    agent = db.get_or_404(Agent, agent_id)
    if agent.id == current_user.id:
        abort(400, "You cannot deactivate yourself.")
    agent.active = not agent.active
    db.session.commit()
    flash(f"{agent.email} {'reactivated' if agent.active else 'deactivated'}.", "success")
    return redirect(url_for("agents.index"))


@bp.route("/sla", methods=["GET", "POST"])
@admin_required
def sla():
    policies = db.session.scalars(db.select(SlaPolicy)).all()
    order = {p: i for i, p in enumerate(("urgent", "high", "normal", "low"))}
    policies.sort(key=lambda p: order.get(p.priority, 9))
    form = SlaForm(data={"rows": [{"priority": p.priority, "first_response_minutes": p.first_response_minutes,
                                   "resolution_minutes": p.resolution_minutes} for p in policies]})
    if form.validate_on_submit():
        for policy, row in zip(policies, form.rows.entries, strict=True):
            policy.first_response_minutes = row.form.first_response_minutes.data
            policy.resolution_minutes = row.form.resolution_minutes.data
        db.session.commit()
        flash("SLA targets saved. They apply to tickets opened from now on.", "success")
        return redirect(url_for("agents.sla"))
    return render_template("agents/sla.html", form=form)
