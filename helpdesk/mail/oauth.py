"""OAuth 2.0 sign-in for IMAP and SMTP (XOAUTH2): provider presets, the token flows, and their diagnoses.

Authlib runs every flow (authorization code with PKCE, refresh, client credentials); this module
only knows where each provider's endpoints are and turns its refusals into plain words.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError as AuthlibError
from authlib.integrations.requests_client import OAuth2Session

PROVIDERS = ("microsoft", "google", "custom")
FLOWS = ("authorization_code", "client_credentials")
USES = ("imap", "smtp")
TIMEOUT = 15.0  # seconds for each call to the token endpoint

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
# What each provider needs granted; "openid email" lets the token answer name the account.
PRESET_SCOPES = {
    ("microsoft", "imap"): "https://outlook.office.com/IMAP.AccessAsUser.All offline_access openid email",
    ("microsoft", "smtp"): "https://outlook.office.com/SMTP.Send offline_access openid email",
    ("google", "imap"): "https://mail.google.com/ openid email",
    ("google", "smtp"): "https://mail.google.com/ openid email",
}
MICROSOFT_APP_ONLY_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"

GOOGLE_TESTING_HINT = (
    "If the Google Cloud app's consent screen is still in “Testing”, Google expires its refresh "
    "tokens after 7 days: publish the app (Google Auth Platform → Audience → Publish app), then "
    "connect again.")

# Microsoft Entra error codes (AADSTS…) in an error description, and what an admin should do.
_MICROSOFT_CODES = {
    "AADSTS65001": ("consent", "Consent is missing: in the Entra admin center open App registrations → "
                               "your app → API permissions, add the permissions listed on this page "
                               "and press “Grant admin consent”."),
    "AADSTS700016": ("client", "Microsoft does not know this client ID in that tenant: check the "
                               "Application (client) ID and the tenant."),
    "AADSTS90002": ("client", "Microsoft does not know that tenant: use the Directory (tenant) ID, your "
                              "domain, or “organizations”."),
    "AADSTS7000215": ("client", "The client secret is wrong: paste the secret's Value (not its ID), "
                                "or create a new one under Certificates & secrets."),
    "AADSTS7000222": ("client", "The client secret has expired: create a new one under Certificates & "
                                "secrets and save it here."),
    "AADSTS70011": ("scope", "Microsoft refused the requested scopes: keep the scopes shown on this page."),
    "AADSTS50173": ("revoked", "The grant was revoked (the password changed or an admin revoked the "
                               "sessions): connect the account again."),
    "AADSTS700082": ("revoked", "The sign-in expired after a long time unused: connect the account again."),
}


@dataclass(frozen=True)
class Provider:
    """Where a provider's authorize and token endpoints are, and which scopes to ask for."""

    authorize_url: str
    token_url: str
    scopes: str
    extra: dict[str, str] = field(default_factory=dict)  # extra authorize parameters


@dataclass(frozen=True)
class OAuthApp:
    """An admin's app registration at a provider: who asks for tokens, and how."""

    provider: str  # microsoft | google | custom
    client_id: str
    client_secret: str = field(default="", repr=False)
    flow: str = "authorization_code"  # | client_credentials (Microsoft app-only)
    tenant: str = "organizations"
    authorize_url: str = ""  # custom only
    token_url: str = ""  # custom only
    scopes: str = ""  # custom only (the presets know theirs)
    ca_file: str | None = None  # CA bundle for a custom (in-house) provider's token endpoint

    @property
    def verify(self) -> str | bool:
        """Return what requests verifies the token endpoint with: the system CAs, or the in-house CA file."""
        # Microsoft's and Google's endpoints carry public certificates, whatever CA file in-house mail needs.
        return self.ca_file if self.provider == "custom" and self.ca_file else True

    def endpoints(self, use: str) -> Provider:
        """Return the endpoints and scopes this app uses for IMAP or SMTP."""
        if self.provider == "microsoft":
            base = MICROSOFT_AUTHORITY.format(tenant=self.tenant.strip() or "organizations")
            scopes = MICROSOFT_APP_ONLY_SCOPE if self.flow == "client_credentials" else PRESET_SCOPES[("microsoft", use)]
            return Provider(f"{base}/authorize", f"{base}/token", scopes)
        if self.provider == "google":
            # Without offline access and a fresh consent, Google sends no refresh token.
            return Provider(GOOGLE_AUTHORIZE_URL, GOOGLE_TOKEN_URL, PRESET_SCOPES[("google", use)],
                            {"access_type": "offline", "prompt": "consent"})
        return Provider(self.authorize_url, self.token_url, self.scopes)


@dataclass(frozen=True)
class Tokens:
    """What a token endpoint gave: the access token, its expiry, and maybe a new refresh token."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str = field(default="", repr=False)  # "" when the provider kept the old one
    account: str = ""  # the signed-in account, when an id_token names it


class OAuthError(Exception):
    """A token endpoint refused or could not be reached; `diagnosis` says what to do."""

    def __init__(self, kind: str, diagnosis: str, server_reply: str = "") -> None:
        super().__init__(f"{diagnosis} ({server_reply})" if server_reply else diagnosis)
        self.kind = kind  # revoked | consent | client | scope | denied | network | provider
        self.diagnosis = diagnosis
        self.server_reply = server_reply

    @property
    def needs_reconnect(self) -> bool:
        """Tell whether only a person can fix this (connect again, fix the app), not a retry."""
        return self.kind != "network"


@dataclass(frozen=True)
class Authorization:
    """A started authorization-code flow: where to send the admin, and what the callback must match."""

    url: str
    state: str
    code_verifier: str = field(repr=False)


def start_authorization(app: OAuthApp, use: str, redirect_uri: str) -> Authorization:
    """Return the provider URL that asks the admin to sign in and consent, with PKCE and state."""
    provider = app.endpoints(use)
    verifier = generate_token(64)
    with _session(app, provider, redirect_uri) as session:
        url, state = session.create_authorization_url(provider.authorize_url, code_verifier=verifier,
                                                      **provider.extra)
    return Authorization(url=url, state=state, code_verifier=verifier)


def finish_authorization(app: OAuthApp, use: str, redirect_uri: str, code: str, code_verifier: str) -> Tokens:
    """Exchange the callback's code for tokens; raise OAuthError when the provider refuses."""
    provider = app.endpoints(use)
    with _session(app, provider, redirect_uri) as session, _refusals(app):
        token = session.fetch_token(provider.token_url, code=code, code_verifier=code_verifier, timeout=TIMEOUT,
                                    verify=app.verify)
    tokens = _tokens(token, app)
    if not tokens.refresh_token:
        raise OAuthError("scope", "The provider gave no refresh token, so the connection would stop working "
                                  "within the hour. Add offline access to the scopes (offline_access).")
    return tokens


def refresh(app: OAuthApp, use: str, refresh_token: str) -> Tokens:
    """Return a new access token for the refresh token (and the rotated refresh token, if any)."""
    provider = app.endpoints(use)
    with _session(app, provider) as session, _refusals(app):
        token = session.refresh_token(provider.token_url, refresh_token=refresh_token, timeout=TIMEOUT,
                                      verify=app.verify)
    return _tokens(token, app)


def client_credentials(app: OAuthApp, use: str) -> Tokens:
    """Return an app-only access token (Microsoft: a service principal with mailbox access)."""
    provider = app.endpoints(use)
    with _session(app, provider) as session, _refusals(app):
        token = session.fetch_token(provider.token_url, grant_type="client_credentials", timeout=TIMEOUT,
                                    verify=app.verify)
    return _tokens(token, app)


def callback_error(app: OAuthApp, error: str, description: str) -> OAuthError:
    """Return the diagnosis of an error the provider sent back to the callback instead of a code."""
    if error == "access_denied" and "AADSTS65004" not in description:
        return OAuthError("denied", "The sign-in was cancelled or consent was declined on the provider's "
                                    "page. Connect again and accept the requested permissions.", description)
    return _diagnose(app, error, description)


def xoauth2_refusal(app: OAuthApp | None, use: str, account: str) -> str:
    """Say why a mail server may refuse a valid-looking OAuth token for `account`."""
    what = "IMAP" if use == "imap" else "SMTP"
    if app is not None and app.provider == "microsoft":
        if app.flow == "client_credentials":
            return (f"The server refused the app-only token for {account!r}: the app's service principal "
                    f"needs {what} access to this mailbox (Exchange Online PowerShell: New-ServicePrincipal "
                    "and Add-MailboxPermission), and the API permission “Office 365 Exchange Online → "
                    f"{'IMAP.AccessAsApp' if use == 'imap' else 'SMTP.SendAsApp'}” with admin consent.")
        enable = "IMAP" if use == "imap" else "Authenticated SMTP"
        return (f"The server refused the OAuth token for {account!r}: the token may lack the {what} "
                f"permission, or {enable} is off for this mailbox (Microsoft 365 admin center → Users → "
                "Active users → user → Mail → Manage email apps).")
    if app is not None and app.provider == "google":
        return (f"The server refused the OAuth token for {account!r}: the token needs the scope "
                f"https://mail.google.com/, and {what} must be allowed for this account.")
    return (f"The server refused the OAuth token for {account!r}: the token may lack the {what} scope, or "
            "the account the tokens belong to is not this mailbox's login.")


def id_token_account(id_token: str, client_id: str) -> str:
    """Return the e-mail address an id_token names, or "" when it names none for this client.

    The id_token comes straight from the token endpoint over verified TLS, so its issuer is
    already proven (OpenID Connect Core 3.1.3.7); only its audience is checked here.
    """
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return ""
    if not isinstance(claims, dict):
        return ""
    audience = claims.get("aud")
    if client_id not in (audience if isinstance(audience, list) else [audience]):
        return ""
    for claim in ("email", "preferred_username", "upn"):
        value = claims.get(claim)
        if isinstance(value, str) and "@" in value:
            return value.strip()
    return ""


def _session(app: OAuthApp, provider: Provider, redirect_uri: str | None = None) -> OAuth2Session:
    # `verify` goes with each call: requests lets REQUESTS_CA_BUNDLE override a session's own.
    return OAuth2Session(app.client_id, app.client_secret, scope=provider.scopes, redirect_uri=redirect_uri,
                         token_endpoint_auth_method="client_secret_post", code_challenge_method="S256")


class _refusals:
    """Turn what Authlib and requests raise while talking to the token endpoint into OAuthError."""

    def __init__(self, app: OAuthApp) -> None:
        self.app = app

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None or isinstance(exc, OAuthError):
            return
        if isinstance(exc, AuthlibError):
            raise _diagnose(self.app, exc.error or "", exc.description or "") from exc
        if isinstance(exc, requests.exceptions.SSLError):
            raise OAuthError("network", "The token endpoint's TLS certificate cannot be trusted.",
                             str(exc)) from exc
        if isinstance(exc, requests.RequestException):
            raise OAuthError("network", "The token endpoint could not be reached; the next use tries again.",
                             type(exc).__name__) from exc
        if isinstance(exc, ValueError):  # not JSON: a proxy's or a login page's HTML
            raise OAuthError("provider", "The token endpoint did not answer with a token: check its URL.",
                             str(exc)[:200]) from exc


def _diagnose(app: OAuthApp, error: str, description: str) -> OAuthError:
    reply = f"{error}: {description}" if description else error
    for code, (kind, text) in _MICROSOFT_CODES.items():
        if code in description:
            return OAuthError(kind, text, reply)
    if error == "invalid_grant":
        text = "The sign-in was revoked or has expired (invalid_grant): connect the account again."
        if app.provider == "google":
            text += " " + GOOGLE_TESTING_HINT
        return OAuthError("revoked", text, reply)
    if error in ("consent_required", "interaction_required"):
        return OAuthError("consent", "Consent is missing for this app: connect the account again, or ask an "
                                     "administrator of the provider to grant consent.", reply)
    if error in ("invalid_client", "unauthorized_client"):
        return OAuthError("client", "The provider refused the client ID or client secret: check both (and the "
                                    "tenant), and that the app may use this flow.", reply)
    if error == "invalid_scope":
        return OAuthError("scope", "The provider refused the requested scopes: check the scopes and the "
                                   "app's API permissions.", reply)
    if error == "temporarily_unavailable" or error == "server_error":
        return OAuthError("network", "The provider is having trouble; the next use tries again.", reply)
    return OAuthError("provider", "The provider refused the request.", reply)


def _tokens(token: dict, app: OAuthApp) -> Tokens:
    access = token.get("access_token") or ""
    if not access:
        raise OAuthError("provider", "The token endpoint answered without an access token.")
    lifetime = int(token.get("expires_in") or 3600)
    # Naive UTC, as the database stores times.
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return Tokens(access_token=access, expires_at=now + timedelta(seconds=lifetime),
                  refresh_token=token.get("refresh_token") or "",
                  account=id_token_account(token.get("id_token") or "", app.client_id))


def xoauth2_string(account: str, access_token: str) -> str:
    """Return the SASL XOAUTH2 initial response (before base64) for `account`."""
    return f"user={account}\x01auth=Bearer {access_token}\x01\x01"
