"""Admin → Settings → Email → Templates: edit the notification texts beside a live preview."""
from __future__ import annotations

from dataclasses import dataclass, replace

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from helpdesk.admin_email.blueprint import bp
from helpdesk.admin_email.forms_templates import TemplateForm
from helpdesk.extensions import db
from helpdesk.mail.render import CATALOGUE, GROUPS, TEMPLATE_KINDS, RenderedMail, unknown_placeholders
from helpdesk.services import email_templates, outbox
from helpdesk.web import admin_required, agent_required, render_htmx

# Unknown kinds never reach a view: the URL rule itself only matches the five.
KIND = "<any(" + ", ".join(TEMPLATE_KINDS) + "):kind>"
RECIPIENTS = {"contact": "The contact (customer)", "agent": "The assigned agent", "invitee": "The invited agent"}


@dataclass(frozen=True)
class TestResult:
    """What became of a "Send test to me": (ok, diagnosis) for the inline result."""

    ok: bool
    message: str


@bp.route("/templates")
@admin_required
def templates():
    return render_template("admin_email/templates.html", summaries=email_templates.list_templates(),
                           recipients=RECIPIENTS)


@bp.route(f"/templates/{KIND}", methods=["GET", "POST"])
@admin_required
def templates_edit(kind: str):
    form = TemplateForm(obj=email_templates.get_template(kind))
    if form.validate_on_submit():
        email_templates.save_template(kind, form.subject.data, form.body.data, form.enabled.data, current_user)
        db.session.commit()
        flash("Template saved.", "success")
        if unknown_placeholders(form.subject.data + "\n" + form.body.data, TEMPLATE_KINDS[kind].variables):
            flash("Some placeholders are not known here; they will be sent as typed. See the warnings below.",
                  "warning")
        return redirect(url_for("admin_email.templates_edit", kind=kind))
    return render_template("admin_email/templates_edit.html", **_editor(kind, form))


@bp.route(f"/templates/{KIND}/preview", methods=["POST"])
@admin_required
def templates_preview(kind: str):
    form = TemplateForm(obj=email_templates.get_template(kind))
    return render_htmx("admin_email/templates_edit.html", "admin_email/_template_preview.html",
                       **_editor(kind, form), live=True, oob=True)


@bp.route(f"/templates/{KIND}/reset", methods=["POST"])
@admin_required
def templates_reset(kind: str):
    email_templates.reset_to_default(kind, current_user)
    db.session.commit()
    flash("Template reset to the default text.", "success")
    return redirect(url_for("admin_email.templates_edit", kind=kind))


@bp.route(f"/templates/{KIND}/send-test", methods=["POST"])
@admin_required
def templates_send_test(kind: str):
    """Send what the preview shows (unsaved text included) to the signed-in admin."""
    form = TemplateForm(obj=email_templates.get_template(kind))
    context = _editor(kind, form)
    context["test_result"] = _send_test(context["rendered"])
    return render_htmx("admin_email/templates_edit.html", "admin_email/_template_test_result.html", **context)


@bp.route(f"/templates/{KIND}/view")
@agent_required
def templates_readonly(kind: str):
    """Show any agent what a notification looks like, with sample data and no edit controls."""
    values = email_templates.preview_values(None, current_user)
    rendered = email_templates.render_notification(kind, values, include_disabled=True)
    return render_template("admin_email/templates_view.html", kind=TEMPLATE_KINDS[kind], rendered=rendered,
                           template=email_templates.get_template(kind), recipients=RECIPIENTS,
                           kinds=TEMPLATE_KINDS.values(),
                           unknown=email_templates.describe_unknown(kind, rendered.unknown))


def _editor(kind: str, form: TemplateForm) -> dict:
    """Return what the editor page and its partials show for the form's current text."""
    info = TEMPLATE_KINDS[kind]
    subject, body = form.subject.data or "", form.body.data or ""
    ticket_id = request.values.get("preview_ticket", type=int)
    values = email_templates.preview_values(ticket_id, current_user)
    rendered = email_templates.render_draft(kind, subject, body, values)
    return dict(
        kind=info, form=form, rendered=rendered, recipients=RECIPIENTS,
        unknown=email_templates.describe_unknown(kind, rendered.unknown),
        subject_warnings=email_templates.describe_unknown(kind, unknown_placeholders(subject, info.variables)),
        body_warnings=email_templates.describe_unknown(kind, unknown_placeholders(body, info.variables)),
        groups=[(group, [(name, CATALOGUE[name]) for name in names if name in info.variables])
                for group, names in GROUPS.items() if set(names) & set(info.variables)],
        tickets=email_templates.preview_tickets(), ticket_id=ticket_id, test_result=None,
    )


def _send_test(rendered: RenderedMail) -> TestResult:
    """Queue the rendered mail to the signed-in admin, then say what became of it so far."""
    address = current_user.email
    message = outbox.queue_mail(kind="test", to=[address],
                                rendered=replace(rendered, subject="[Test] " + rendered.subject))
    db.session.commit()  # the send job starts on commit (at once when jobs run inline)
    if message.status == "sent":
        return TestResult(True, f"Test mail sent to {address}.")
    if message.status == "failed":
        return TestResult(False, f"The test mail to {address} could not be sent: {message.last_error}")
    if message.last_error:
        return TestResult(False, f"Test mail queued to {address} but not sent yet: {message.last_error}")
    return TestResult(True, f"Test mail queued to {address}.")
