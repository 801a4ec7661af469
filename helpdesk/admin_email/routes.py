"""The Admin → Settings → Email blueprint; each tab's routes live in their own module."""
from flask import Blueprint, redirect, url_for

from helpdesk.web import admin_required

bp = Blueprint("admin_email", __name__, url_prefix="/admin/settings/email", template_folder="templates")


@bp.route("/")
@admin_required
def index():
    return redirect(url_for("admin_email.outbound"))


@bp.route("/outbound")
@admin_required
def outbound():
    from flask import render_template

    return render_template("admin_email/outbound.html")
