"""Admin → Settings → Email → Retention: how much raw mail is kept, and what the next run removes."""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for

from helpdesk.admin_email.blueprint import bp
from helpdesk.services import retention
from helpdesk.web import admin_required


@bp.route("/retention")
@admin_required
def retention_page():
    return render_template("admin_email/retention.html", summary=retention.summary())


@bp.route("/retention/run", methods=["POST"])
@admin_required
def retention_run():
    dropped = retention.drop_old_raw_mail()
    flash(f"Dropped the raw bytes of {dropped.sent_count} sent and {dropped.inbound_count} received mails "
          f"({dropped.bytes:,} bytes); their log rows stay.", "success")
    return redirect(url_for("admin_email.retention_page"))
