"""Admin → Settings → Email → Inbound log: every received mail and what became of it."""
from __future__ import annotations

from flask import Response, abort, flash, redirect, request, url_for
from sqlalchemy.orm import selectinload

from helpdesk import search
from helpdesk.admin_email.blueprint import bp
from helpdesk.extensions import db
from helpdesk.models import InboundMail
from helpdesk.models.mail import INBOUND_OUTCOMES
from helpdesk.models.tickets import TICKET_NUMBER_OFFSET
from helpdesk.services import listing, mailboxes
from helpdesk.web import admin_required, render_htmx


@bp.route("/inbound/log")
@admin_required
def inbound_log():
    filters = {k: request.args.get(k, "").strip() for k in ("outcome", "mailbox", "q")}
    query = db.select(InboundMail).options(selectinload(InboundMail.mailbox))
    if filters["outcome"] in INBOUND_OUTCOMES:
        query = query.where(InboundMail.outcome == filters["outcome"])
    if filters["mailbox"].isdigit():
        query = query.where(InboundMail.mailbox_id == int(filters["mailbox"]))
    before = request.args.get("before")
    if filters["q"]:
        page = listing.searched_log(query, InboundMail, search.LOG_INBOUND, filters["q"], address=InboundMail.sender,
                                    message_id=InboundMail.message_id, before=before)
    else:
        page = listing.newest_first(query, InboundMail, before=before, per_page=50, count=not before)
    more_url = url_for("admin_email.inbound_log", **{**request.args, "before": page.next_cursor}) \
        if page.next_cursor else None
    partial = "admin_email/_inbound_log_page.html" if before else "admin_email/_inbound_log_rows.html"
    return render_htmx("admin_email/inbound_log.html", partial, page=page, filters=filters, more_url=more_url,
                       outcomes=INBOUND_OUTCOMES, mailboxes=mailboxes.list_mailboxes(),
                       ticket_number_offset=TICKET_NUMBER_OFFSET)


@bp.route("/inbound/log/<int:inbound_id>/reprocess", methods=["POST"])
@admin_required
def inbound_reprocess(inbound_id: int):
    from helpdesk.services.ingest import ReprocessError, reprocess

    db.get_or_404(InboundMail, inbound_id)
    try:
        result = reprocess(inbound_id)
    except ReprocessError as exc:
        flash(str(exc), "error")
        return redirect(_back())
    category = "error" if result.outcome == "quarantined" else "success"
    flash(f"Reprocessed mail {inbound_id}: {result.outcome}" + (f" — {result.reason}" if result.reason else "."),
          category)
    return redirect(_back())


@bp.route("/inbound/log/<int:inbound_id>/raw")
@admin_required
def inbound_raw(inbound_id: int):
    from helpdesk.services.ingest import quarantined_raw
    from helpdesk.storage import StorageError

    row = db.get_or_404(InboundMail, inbound_id)
    try:
        raw = quarantined_raw(row)
    except StorageError as exc:
        abort(404, f"The raw mail is not available: {exc}")
    return Response(raw, mimetype="message/rfc822",
                    headers={"Content-Disposition": f'attachment; filename="inbound-{row.id}.eml"',
                             "X-Content-Type-Options": "nosniff"})


def _back() -> str:
    """Return the log page the form came from (filters kept), never another site."""
    target = request.form.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else url_for("admin_email.inbound_log")
