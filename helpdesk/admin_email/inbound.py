"""Admin → Settings → Email → Inbound (IMAP): the mailboxes polled for mail."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from helpdesk.admin_email import oauth
from helpdesk.admin_email.blueprint import bp
from helpdesk.admin_email.forms_inbound import InboundForm
from helpdesk.admin_email.forms_oauth import oauth_initial
from helpdesk.extensions import db
from helpdesk.mail import imap
from helpdesk.mail.diagnosis import Diagnosis
from helpdesk.mail.secrets import CredentialError
from helpdesk.models import Mailbox
from helpdesk.models._time import utcnow
from helpdesk.services import background, mailboxes, sign_in
from helpdesk.web import admin_required, render_htmx

PAGE = "admin_email/inbound.html"


@bp.route("/inbound")
@admin_required
def inbound():
    # A GET only shows: with no mailbox yet, the form of a new one (saved by its Save).
    mailboxes_now = mailboxes.list_mailboxes()
    mailbox = mailboxes_now[0] if mailboxes_now else None
    return render_template(PAGE, **_page(mailbox, _form(mailbox)))


@bp.route("/inbound/new", methods=["GET", "POST"])
@bp.route("/inbound/<int:mailbox_id>", methods=["GET", "POST"])
@admin_required
def inbound_edit(mailbox_id: int | None = None):
    mailbox = _mailbox(mailbox_id)
    form = _form(mailbox)
    if request.method == "POST" and request.form.get("preset") in imap.PROVIDER_PRESETS:
        _apply_preset(form, request.form["preset"])
    elif form.validate_on_submit():
        had_password = bool(mailbox and mailbox.password_encrypted)
        mailbox = mailboxes.save_mailbox(mailbox, form.values(), form.password.data or "", current_user)
        sign_in.save_oauth(mailbox, form.auth_method.data, form.oauth_values(), form.oauth_client_secret.data or "")
        db.session.commit()
        if form.connect.data:
            return oauth.start(mailbox)
        flash(f"Mailbox “{mailbox.name}” saved.", "success")
        if had_password and not mailbox.password_encrypted and not form.uses_oauth:
            flash("The stored password was for another server or username and was removed: enter the "
                  "password for this one.", "warning")
        return redirect(url_for("admin_email.inbound_edit", mailbox_id=mailbox.id))
    return render_template(PAGE, **_page(mailbox, form))


@bp.route("/inbound/<int:mailbox_id>/delete", methods=["POST"])
@admin_required
def inbound_delete(mailbox_id: int):
    mailbox = _mailbox(mailbox_id)
    mailboxes.delete_mailbox(mailbox)
    db.session.commit()
    flash(f"Mailbox “{mailbox.name}” deleted; its inbound log stays.", "success")
    return redirect(url_for("admin_email.inbound"))


@bp.route("/inbound/test", methods=["POST"], defaults={"mailbox_id": None})
@bp.route("/inbound/<int:mailbox_id>/test", methods=["POST"])
@admin_required
def inbound_test(mailbox_id: int | None):
    """Try the settings as typed (not yet saved) against the server."""
    mailbox = _mailbox(mailbox_id)
    form = _form(mailbox)
    result = _connect(mailbox, form, lambda settings: imap.diagnose(settings, form.folder.data or "INBOX"))
    return render_htmx(PAGE, "admin_email/_inbound_test_result.html", **_page(mailbox, form, test_result=result))


@bp.route("/inbound/folders", methods=["POST"], defaults={"mailbox_id": None})
@bp.route("/inbound/<int:mailbox_id>/folders", methods=["POST"])
@admin_required
def inbound_folders(mailbox_id: int | None):
    """List the server's folders with the settings as typed."""
    mailbox = _mailbox(mailbox_id)
    form = _form(mailbox)
    found: list[str] = []

    def list_folders(settings: imap.ImapSettings) -> Diagnosis:
        with imap.ImapSession(settings) as session:
            found.extend(sorted(session.list_folders(), key=lambda f: (f != "INBOX", f.lower())))
        return Diagnosis(ok=True, summary=f"{len(found)} folder{'s' if len(found) != 1 else ''} on the server.")

    result = _connect(mailbox, form, list_folders)
    context = _page(mailbox, form, folders=found, folders_result=result)
    return render_htmx(PAGE, "admin_email/_inbound_folders.html", **context)


@bp.route("/inbound/<int:mailbox_id>/status")
@admin_required
def inbound_status(mailbox_id: int):
    mailbox = _mailbox(mailbox_id)
    # The full page (a reload, a bookmark) needs the settings form around the status.
    return render_htmx(PAGE, "admin_email/_inbound_status.html", **_page(mailbox, _form(mailbox)))


@bp.route("/inbound/<int:mailbox_id>/poll", methods=["POST"])
@admin_required
def inbound_poll(mailbox_id: int):
    mailbox = _mailbox(mailbox_id)
    background.poll_mailbox_after_commit(mailbox.id)
    db.session.commit()  # the job starts after the commit (inline in tests, else on a worker)
    if request.headers.get("HX-Request") != "true":
        flash("Poll started; the status below updates when it ends.", "success")
        return redirect(url_for("admin_email.inbound_edit", mailbox_id=mailbox.id))
    db.session.refresh(mailbox)
    return render_template("admin_email/_inbound_status.html", mailbox=mailbox, poll_started=True, now=utcnow())


def _mailbox(mailbox_id: int | None) -> Mailbox | None:
    """Return the mailbox of the URL (None for a new one), or 404."""
    return None if mailbox_id is None else db.get_or_404(Mailbox, mailbox_id)


def _form(mailbox: Mailbox | None) -> InboundForm:
    has_password = bool(mailbox and mailbox.password_encrypted)
    return InboundForm(obj=mailboxes.mailbox_values(mailbox) if mailbox else None, has_password=has_password,
                       secret_for_client=sign_in.secret_for_client(mailbox),
                       **oauth_initial(mailbox.auth_method if mailbox else "password", sign_in.oauth_values(mailbox)))


def _page(mailbox: Mailbox | None, form: InboundForm | None, **extra) -> dict:
    """Return what the page and its partials show; `extra` fills in a test or folder result."""
    page = dict(mailbox=mailbox, form=form, mailboxes=mailboxes.list_mailboxes(), presets=imap.PROVIDER_PRESETS,
                test_result=None, folders=None, folders_result=None, poll_started=False, now=utcnow(),
                owner=mailbox, owner_key=sign_in.owner_key(mailbox) if mailbox else "",
                redirect_uri=sign_in.redirect_uri(), use="imap")
    page.update(extra)
    return page


def _apply_preset(form: InboundForm, key: str) -> None:
    """Fill a provider's server settings into the form, without saving."""
    preset = imap.PROVIDER_PRESETS[key]
    form.host.data, form.port.data, form.security.data = preset["host"], preset["port"], preset["security"]
    form.auth_method.data, form.oauth_provider.data = "oauth2", preset["oauth_provider"]
    form.host.raw_data = form.port.raw_data = None
    note = str(preset["note"]).rstrip(".")
    flash(f"{preset['label']} settings filled in, with OAuth 2.0 sign-in: {note}.", "info")


def _connect(mailbox: Mailbox | None, form: InboundForm, attempt) -> Diagnosis:
    """Run `attempt(settings)` with the form's values; the stored password stands in for a blank one."""
    errors = form.connection_errors()
    if errors:
        return Diagnosis(ok=False, summary="Fix the settings first: " + " ".join(errors), kind="config")
    values = form.values()
    if form.uses_oauth:
        return _connect_oauth(mailbox, values, attempt)
    try:
        password = mailboxes.password_for_test(mailbox, values, form.password.data or "")
    except CredentialError as exc:
        return Diagnosis(ok=False, summary=str(exc), kind="config")
    if not password and mailbox is not None and mailbox.password_encrypted:
        return Diagnosis(ok=False, kind="config", summary="The host or username changed: type the password "
                         "again (the stored one is only sent to the server it was saved for).")
    settings = mailboxes.settings_from_values(values, password)
    try:
        return attempt(settings)
    except imap.ImapError as exc:
        return Diagnosis(ok=False, summary=_hide(exc.diagnosis, password), detail=_hide(exc.server_reply, password),
                         kind=exc.kind)


def _connect_oauth(mailbox: Mailbox | None, values: mailboxes.MailboxValues, attempt) -> Diagnosis:
    """Run `attempt(settings)` with the form's server and the mailbox's connected OAuth account."""
    if mailbox is None or mailbox.auth_method != "oauth2" or not sign_in.is_connected(mailbox):
        return Diagnosis(ok=False, kind="config", summary="Choose OAuth 2.0, Save and press “Connect account” "
                                                          "before testing.")
    try:
        settings = mailboxes.imap_settings(mailbox, timeout=mailboxes.TEST_TIMEOUT)
        for name in ("host", "port", "security", "verify_tls"):
            setattr(settings, name, getattr(values, name))
        return attempt(settings)
    except imap.ImapError as exc:
        return Diagnosis(ok=False, summary=exc.diagnosis, detail=exc.server_reply, kind=exc.kind)


def _hide(text: str, password: str) -> str:
    # Servers sometimes echo what they were sent; the password never reaches the page.
    return text.replace(password, "********") if password else text
