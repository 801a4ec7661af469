"""Sign in and out."""
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_user, logout_user

from helpdesk.auth.forms import LoginForm
from helpdesk.extensions import db, limiter
from helpdesk.models import Agent

bp = Blueprint("auth", __name__, template_folder="templates")


def _failed(response) -> bool:
    """Count a sign-in attempt against the limits unless it signed in (a redirect)."""
    return response.status_code != 302


def _account() -> str:
    return "account:" + (request.form.get("email") or "").strip().lower()


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_ADDRESS"], key_func=get_remote_address,
               methods=["POST"], deduct_when=_failed, scope="sign-in from one address")
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_ACCOUNT"], key_func=_account,
               methods=["POST"], deduct_when=_failed, scope="sign-in to one account")
def login():
    if current_user.is_authenticated:
        return redirect(url_for("tickets.index"))
    form = LoginForm()
    if form.validate_on_submit():
        agent = Agent.authenticate(form.email.data, form.password.data)
        if agent is None:
            form.password.errors.append("Wrong email or password.")
        else:
            login_user(agent, remember=form.remember.data)
            target = request.args.get("next", "")
            # Only same-site paths: never redirect to another host after sign-in.
            if not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
                target = url_for("tickets.index")
            return redirect(target)
    return render_template("auth/login.html", form=form)


@bp.app_errorhandler(RateLimitExceeded)
def too_many_sign_ins(error: RateLimitExceeded):
    """Refuse a throttled sign-in on the sign-in page itself, saying how long to wait."""
    minutes = max(1, round(error.limit.limit.get_expiry() / 60))
    whose = "for this account" if "account" in (error.limit.scope or "") else "from your network address"
    form = LoginForm()
    form.password.errors = [
        f"Too many failed sign-ins {whose}. Sign-in is paused: try again within {minutes} minute"
        f"{'s' if minutes != 1 else ''}, or ask an admin to check the account."]
    response = current_app.make_response((render_template("auth/login.html", form=form), 429))
    response.headers["Retry-After"] = str(minutes * 60)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        # A new session token: this and every other copy of the agent's cookies stop working.
        current_user.end_sessions()
        db.session.commit()
    logout_user()
    flash("You are signed out, on every device.", "info")
    return redirect(url_for("auth.login"))
