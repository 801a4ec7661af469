"""Sign in and out."""
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from helpdesk.auth.forms import LoginForm
from helpdesk.extensions import db
from helpdesk.models import Agent

bp = Blueprint("auth", __name__, template_folder="templates")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("tickets.index"))
    form = LoginForm()
    if form.validate_on_submit():
        agent = db.session.scalar(db.select(Agent).filter_by(email=form.email.data.strip().lower()))
        if agent is None or not agent.check_password(form.password.data) or not agent.active:
            form.password.errors.append("Wrong email or password.")
        else:
            login_user(agent, remember=form.remember.data)
            target = request.args.get("next", "")
            # Only same-site paths: never redirect to another host after sign-in.
            if not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
                target = url_for("tickets.index")
            return redirect(target)
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
