"""Connect account / Disconnect for OAuth 2.0 sign-in, shared by Outbound (SMTP) and every mailbox."""
from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from helpdesk.admin_email.blueprint import bp
from helpdesk.extensions import db
from helpdesk.mail import oauth
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail.secrets import CredentialError
from helpdesk.models import Mailbox
from helpdesk.services import sign_in
from helpdesk.services.sign_in import Owner
from helpdesk.web import admin_required

log = logging.getLogger(__name__)

_FLOWS = "oauth_flows"  # in the signed session cookie: state -> owner key and PKCE verifier
_KEEP_FLOWS = 3  # an admin may have a few tabs connecting at once; older ones are dropped
PROVIDER_NAMES = {"microsoft": "Microsoft", "google": "Google", "custom": "your provider"}


def settings_url(owner: Owner) -> str:
    """Return the settings page of the owner."""
    if isinstance(owner, Mailbox):
        return url_for("admin_email.inbound_edit", mailbox_id=owner.id)
    return url_for("admin_email.outbound")


def start(owner: Owner):
    """Send the admin to the provider to sign in and consent; app-only flows get their token at once."""
    try:
        app = sign_in.oauth_app(owner.oauth_connection)
        if app.flow == "client_credentials":
            return _connect_app_only(owner, app)
        flow = oauth.start_authorization(app, sign_in.use_of(owner), sign_in.redirect_uri())
    except CredentialError as exc:
        flash(str(exc), "error")
        return redirect(settings_url(owner))
    flows = dict(list(session.get(_FLOWS, {}).items())[-(_KEEP_FLOWS - 1):])
    flows[flow.state] = {"owner": sign_in.owner_key(owner), "verifier": flow.code_verifier}
    session[_FLOWS] = flows
    # A page that moves on by itself, not a redirect: the console's CSP lets forms post only to the
    # console itself (form-action 'self'), and browsers apply that to a form's redirects too.
    return render_template("admin_email/oauth_continue.html", url=flow.url,
                           provider=PROVIDER_NAMES[owner.oauth_connection.provider])


def _connect_app_only(owner: Owner, app: oauth.OAuthApp):
    try:
        tokens = oauth.client_credentials(app, sign_in.use_of(owner))
    except OAuthError as exc:
        flash(f"Not connected: {exc.diagnosis}" + (f" Provider said: {exc.server_reply}" if exc.server_reply else ""),
              "error")
        return redirect(settings_url(owner))
    sign_in.connect(owner, tokens, owner.username)
    db.session.commit()
    flash(f"Connected (app-only) as {owner.username}.", "success")
    return redirect(settings_url(owner))


@bp.route("/oauth/callback")
@admin_required
def oauth_callback():
    """Finish the authorization-code flow the provider sends the admin back from."""
    flow = session.get(_FLOWS, {}).get(request.args.get("state", ""))
    owner = sign_in.owner_by_key(flow["owner"]) if flow else None
    if owner is None or owner.oauth_connection is None:
        flash("This sign-in link is unknown or was already used: press “Connect account” again.", "error")
        return redirect(url_for("admin_email.index"))
    session[_FLOWS] = {k: v for k, v in session[_FLOWS].items() if k != request.args["state"]}
    try:
        app = sign_in.oauth_app(owner.oauth_connection)
        if "error" in request.args:
            raise oauth.callback_error(app, request.args["error"], request.args.get("error_description", ""))
        tokens = oauth.finish_authorization(app, sign_in.use_of(owner), sign_in.redirect_uri(),
                                            request.args.get("code", ""), flow["verifier"])
    except (OAuthError, CredentialError) as exc:
        message = exc.diagnosis if isinstance(exc, OAuthError) else str(exc)
        reply = exc.server_reply if isinstance(exc, OAuthError) else ""
        log.warning("%s: OAuth connect failed: %s", flow["owner"], message)
        flash(f"Not connected: {message}" + (f" Provider said: {reply}" if reply else ""), "error")
        return redirect(settings_url(owner))
    account = tokens.account or owner.username
    if not account:
        flash("Not connected: the provider did not say which account signed in. Enter the mailbox address as "
              "Username, or add “openid email” to the scopes, then connect again.", "error")
        return redirect(settings_url(owner))
    sign_in.connect(owner, tokens, account)
    owner.username = account  # the login name for IMAP/SMTP is the account the tokens belong to
    db.session.commit()
    flash(f"Connected as {account}.", "success")
    return redirect(settings_url(owner))


@bp.route("/oauth/disconnect", methods=["POST"])
@admin_required
def oauth_disconnect():
    """Forget the tokens of Outbound (SMTP) or a mailbox; its OAuth app settings stay."""
    owner = sign_in.owner_by_key(request.form.get("owner", ""))
    if owner is None:
        flash("Nothing to disconnect.", "error")
        return redirect(url_for("admin_email.index"))
    sign_in.disconnect(owner)
    db.session.commit()
    log.info("%s: disconnected by agent %s", sign_in.owner_key(owner), current_user.id)
    flash(f"Disconnected {sign_in.describe(owner)}: it no longer signs in until an account is connected again.",
          "success")
    return redirect(settings_url(owner))
