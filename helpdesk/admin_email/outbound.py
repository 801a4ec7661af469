"""Admin → Settings → Email → Outbound (SMTP): the server settings and the Test SMTP button."""
from __future__ import annotations

import logging

from flask import flash, redirect, render_template, url_for
from flask_login import current_user

from helpdesk.admin_email import oauth
from helpdesk.admin_email.blueprint import bp
from helpdesk.admin_email.forms_oauth import oauth_initial
from helpdesk.admin_email.forms_outbound import OutboundForm
from helpdesk.extensions import db
from helpdesk.mail.diagnosis import Diagnosis
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail.secrets import CredentialError
from helpdesk.mail.smtp import PROVIDER_PRESETS, SECURITY_MODES, diagnose, suggested_port
from helpdesk.models import SmtpConfig
from helpdesk.services import sign_in, smtp_config
from helpdesk.web import admin_required, render_htmx

log = logging.getLogger(__name__)

PASSWORD_KEPT = "•••••• (stored — leave blank to keep)"


@bp.route("/outbound", methods=["GET", "POST"])
@admin_required
def outbound():
    config = smtp_config.stored_or_blank_config()  # save_config adds the row; showing the page writes nothing
    form = _form(config, test_to=current_user.email)
    if form.validate_on_submit():
        had_password = bool(config.password_encrypted)
        saved = smtp_config.save_config(form.data, current_user)
        sign_in.save_oauth(saved, form.auth_method.data, form.oauth_values(), form.oauth_client_secret.data or "")
        db.session.commit()
        if form.connect.data:
            return oauth.start(saved)
        flash("Settings saved", "success")
        if had_password and not saved.password_encrypted and not form.clear_password.data and not form.uses_oauth:
            flash("The stored password was removed: the server, username, port, security or certificate "
                  "check changed, and it is only sent the way it was saved. Enter the password again.", "warning")
        return redirect(url_for("admin_email.outbound"))
    return render_template("admin_email/outbound.html", **_page(form, config, result=None))


@bp.route("/outbound/test", methods=["POST"])
@admin_required
def outbound_test():
    """Send a real test mail with the values in the form (saved or not) and show what happened."""
    config = smtp_config.stored_or_blank_config()
    form = _form(config)
    result = _test(form, config) if form.validate() else Diagnosis(
        ok=False, kind="form", summary="Fix the fields marked below before testing.")
    return render_htmx("admin_email/outbound.html", "admin_email/_smtp_test_result.html",
                       **_page(form, config, result=result))


def _test(form: OutboundForm, config: SmtpConfig) -> Diagnosis:
    if smtp_config.needs_password_again(form, config):
        return Diagnosis(ok=False, kind="credentials", summary=(
            "The server, username, port, security or certificate check differs from the saved settings: type "
            "the password again to test. The stored password is only sent the way it was saved."))
    try:
        settings = smtp_config.settings_from_form(form, config)
    except CredentialError as exc:
        return Diagnosis(ok=False, kind="credentials", summary=str(exc))
    except OAuthError as exc:
        return Diagnosis(ok=False, kind="oauth", summary=exc.diagnosis, detail=exc.server_reply)
    to = form.test_to.data or current_user.email
    # Runs inside the request: the admin waits at most about `timeout` seconds per step.
    result = diagnose(settings, form.from_address.data, to)
    log.info("Test SMTP by agent %s via %s:%s (%s) to %s: %s", current_user.id, settings.host,
             settings.port, settings.security, to, result.kind)
    return result


def _form(config: SmtpConfig, **initial) -> OutboundForm:
    """Return the Outbound form: the stored settings, or what was posted."""
    return OutboundForm(obj=config, secret_for_client=sign_in.secret_for_client(config),
                        **oauth_initial(config.auth_method, sign_in.oauth_values(config)), **initial)


def _page(form: OutboundForm, config: SmtpConfig, result: Diagnosis | None) -> dict:
    has_password = bool(config.password_encrypted)
    return dict(
        form=form, config=config, result=result, has_password=has_password, owner=config,
        owner_key=sign_in.owner_key(config), redirect_uri=sign_in.redirect_uri(), use="smtp",
        password_placeholder=PASSWORD_KEPT if has_password else "",
        configured=smtp_config.is_configured(config), presets=PROVIDER_PRESETS,
        ports={mode: suggested_port(mode) for mode in SECURITY_MODES},
        typed_password=bool(form.password.data),
    )
