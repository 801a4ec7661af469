"""Admin → Settings → Email: each tab's routes live in their own module, on one blueprint."""
from flask import redirect, url_for

from helpdesk.admin_email import inbound, oauth, outbound, templates_editor  # noqa: F401  (they add their routes)
from helpdesk.admin_email import inbound_log, outbox_log, retention  # noqa: F401  (the log tabs, retention)
from helpdesk.admin_email.blueprint import bp
from helpdesk.web import admin_required


@bp.route("/")
@admin_required
def index():
    return redirect(url_for("admin_email.outbound"))
