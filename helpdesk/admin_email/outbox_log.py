"""Admin → Settings → Email → Email log: every outgoing mail, its status, and the exact bytes sent."""
from __future__ import annotations

import email
import email.policy

from flask import Response, abort, flash, redirect, render_template, request, url_for

from helpdesk.admin_email.blueprint import bp
from helpdesk.extensions import db
from helpdesk.models import OutboundMessage, Ticket
from helpdesk.models.mail import OUTBOUND_STATUSES
from helpdesk.services import outbox as outbox_service
from helpdesk.web import admin_required, render_htmx

RESENDABLE = ("failed", "bounced")


@bp.route("/outbox")
@admin_required
def outbox():
    status = request.args.get("status", "")
    query = db.select(OutboundMessage).order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
    if status in OUTBOUND_STATUSES:
        query = query.filter_by(status=status)
    else:
        status = ""
    page = db.paginate(query, per_page=25, error_out=False)
    return render_htmx("admin_email/outbox.html", "admin_email/_outbox_rows.html", page=page, status=status,
                       statuses=OUTBOUND_STATUSES)


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
