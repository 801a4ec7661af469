"""Admin → Settings → Email → Outbound (SMTP)."""
from flask import render_template

from helpdesk.admin_email.blueprint import bp
from helpdesk.web import admin_required


@bp.route("/outbound")
@admin_required
def outbound():
    return render_template("admin_email/outbound.html")
