"""Admin → Settings → Email → Email log: every outgoing mail, its status, and the exact bytes sent."""
from __future__ import annotations

import email
import email.policy

from flask import Response, abort, flash, redirect, render_template, request, url_for

from sqlalchemy.orm import defer

from helpdesk import search
from helpdesk.admin_email.blueprint import bp
from helpdesk.extensions import db
from helpdesk.models import OutboundMessage, Ticket
from helpdesk.models.mail import OUTBOUND_STATUSES
from helpdesk.services import listing
from helpdesk.services import outbox as outbox_service
from helpdesk.web import admin_required, render_htmx

RESENDABLE = ("failed", "bounced")


@bp.route("/outbox")
@admin_required
def outbox():
    status = request.args.get("status", "")
    q = request.args.get("q", "").strip()
    # The list never shows the bodies or the bytes sent: they stay on the disk.
    query = db.select(OutboundMessage).options(defer(OutboundMessage.raw_sent), defer(OutboundMessage.text_body),
                                               defer(OutboundMessage.html_body))
    if status in OUTBOUND_STATUSES:
        query = query.filter_by(status=status)
    else:
        status = ""
    before = request.args.get("before")
    if q:
        page = listing.searched_log(query, OutboundMessage, search.LOG_OUTBOUND, q, address=OutboundMessage.recipient,
                                    message_id=OutboundMessage.message_id, before=before, per_page=25)
    else:
        page = listing.newest_first(query, OutboundMessage, before=before, count=not before)
    more_url = url_for("admin_email.outbox", **{**request.args, "before": page.next_cursor}) \
        if page.next_cursor else None
    partial = "admin_email/_outbox_page.html" if before else "admin_email/_outbox_rows.html"
    return render_htmx("admin_email/outbox.html", partial, page=page, status=status, q=q,
                       statuses=OUTBOUND_STATUSES, more_url=more_url)


@bp.route("/outbox/<int:outbound_id>")
@admin_required
def outbox_detail(outbound_id: int):
    message = db.get_or_404(OutboundMessage, outbound_id)
    ticket = db.session.get(Ticket, message.ticket_id) if message.ticket_id else None
    return render_template("admin_email/outbox_detail.html", message=message, ticket=ticket, headers=_headers(message),
                           raw=_raw_text(message), resendable=message.status in RESENDABLE)


@bp.route("/outbox/<int:outbound_id>/raw")
@admin_required
def outbox_raw(outbound_id: int):
    """Download the mail exactly as sent, to open it in a mail client."""
    message = db.get_or_404(OutboundMessage, outbound_id)
    if message.raw_sent is None:
        abort(404)
    response = Response(message.raw_sent, mimetype="message/rfc822")
    response.headers.set("Content-Disposition", "attachment", filename=f"outbound-{message.id}.eml")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.route("/outbox/<int:outbound_id>/resend", methods=["POST"])
@admin_required
def outbox_resend(outbound_id: int):
    message = db.get_or_404(OutboundMessage, outbound_id)
    if outbox_service.resend(message.id):
        db.session.commit()
        flash(f"The mail to {message.to} is queued again; this page shows how it went.", "success")
    else:
        flash("Only failed or bounced mails can be resent.", "error")
    return redirect(url_for("admin_email.outbox_detail", outbound_id=outbound_id))



def _headers(message: OutboundMessage) -> list[tuple[str, str]]:
    """Return the headers as sent, or, before sending, the ones the mail will carry."""
    if message.raw_sent:
        parsed = email.message_from_bytes(message.raw_sent, policy=email.policy.default)
        return [(name, str(value)) for name, value in parsed.items()]
    headers = [("From", message.from_address or "(the configured From Address)"), ("To", message.to)]
    if message.cc:
        headers.append(("Cc", message.cc))
    headers += [("Subject", message.subject), ("Message-ID", message.message_id)]
    if message.in_reply_to:
        headers.append(("In-Reply-To", message.in_reply_to))
    if message.references:
        headers.append(("References", message.references))
    if message.automatic:
        headers.append(("Auto-Submitted", "auto-generated"))
    return headers


def _raw_text(message: OutboundMessage) -> str | None:
    if message.raw_sent is None:
        return None
    # Mail is 7-bit or UTF-8 on the wire; anything else shows as replacement marks, never breaks the page.
    return message.raw_sent.decode("utf-8", "replace")
