"""A real OAuth 2.0 / OpenID Connect authorization server for the tests, built from Authlib.

Usage:
  oauth_server.py --https-port P1 --http-port P2 --cert CERT --key KEY
                  [--token-lifetime 3600] [--user LOGIN:PASSWORD ...]

One process, two werkzeug listeners (threaded):
- https://127.0.0.1:P1  the full server: /authorize (login form, then consent), /token, /revoke,
  /introspect, /jwks.json, /.well-known/openid-configuration, /logout.
- http://127.0.0.1:P2   loopback only, for Dovecot and the SMTP test server: /introspect, and the
  test-only admin endpoints GET /test/health and POST /test/revoke-user-tokens {"username": ...}.

Grants: authorization_code with PKCE (S256, required) and the OpenID Connect extension (an id_token
with `email` and `aud` = client_id when the scope has `openid`), refresh_token with rotation (the
used refresh token is revoked), client_credentials (an app-only token whose introspection username
is support@example.test). RFC 7009 revocation, RFC 7662 introspection. Storage is in memory.

Clients (confidential; client_secret_basic or client_secret_post at /token):
- helpdesk-test / helpdesk-test-secret: access tokens live --token-lifetime seconds.
- helpdesk-test-short / helpdesk-test-secret: the same, but access tokens live 4 seconds.
- dovecot / dovecot-secret: may only introspect.
Redirect URIs: any http://127.0.0.1:PORT/... or http://localhost:PORT/... ending with
/admin/settings/email/oauth/callback. Refresh tokens do not expire unless revoked.
"""
from __future__ import annotations

import argparse
import html
import os
import secrets
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, jsonify, redirect, request, session
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, TokenMixin, grants, list_to_scope, scope_to_list
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode

SCOPES = ("openid", "email", "offline_access", "imap", "smtp")
CALLBACK_PATH = "/admin/settings/email/oauth/callback"
SHORT_LIFETIME = 4
CODE_LIFETIME = 600
APP_MAILBOX = "support@example.test"  # what a client_credentials (app-only) token may open
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# --- models -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    login: str
    password: str = field(repr=False, default="")
    app_client: str = ""  # set for the service principal of a client_credentials token

    def get_user_id(self) -> str:
        return self.login


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    grant_types: tuple[str, ...]
    token_lifetime: int
    introspect: bool = False

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None  # every authorization request names its redirect_uri

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        return list_to_scope([s for s in scope_to_list(scope) if s in SCOPES])

    def check_redirect_uri(self, redirect_uri):
        try:
            parts = urlsplit(redirect_uri)
            port = parts.port
        except ValueError:
            return False
        return (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
                and port is not None and not parts.query and not parts.fragment
                and (redirect_uri.startswith("http://127.0.0.1:") or redirect_uri.startswith("http://localhost:"))
                and parts.path.endswith(CALLBACK_PATH))

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method, endpoint):
        return method in AUTH_METHODS

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None

    def is_expired(self):
        return time.time() > self.issued_at + CODE_LIFETIME


@dataclass
class Token(TokenMixin):
    client: Client
    user: User
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int
    family: str  # one per authorization; every rotation of it shares it
    issued_at: int = field(default_factory=lambda: int(time.time()))
    access_token_revoked: bool = False
    refresh_token_revoked: bool = False

    def check_client(self, client):
        return client.get_client_id() == self.client.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def get_expires_at(self):
        return self.issued_at + self.expires_in

    def is_expired(self):
        return time.time() >= self.get_expires_at()

    def is_revoked(self):
        return self.access_token_revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return self.client


class Store:
    """Everything the server knows, in memory, behind one lock (the listeners are threaded)."""

    def __init__(self, users: dict[str, User], clients: dict[str, Client]) -> None:
        self.lock = threading.RLock()
        self.users = users
        self.clients = clients
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, Token] = {}
        self.refresh: dict[str, Token] = {}

    def add_token(self, token: Token) -> None:
        with self.lock:
            self.access[token.access_token] = token
            if token.refresh_token:
                self.refresh[token.refresh_token] = token

    def revoke_family(self, family: str) -> None:
        with self.lock:
            for token in list(self.access.values()):
                if token.family == family:
                    token.access_token_revoked = token.refresh_token_revoked = True

    def revoke_user(self, login: str) -> int:
        count = 0
        with self.lock:
            for token in self.access.values():
                live = not token.access_token_revoked or (token.refresh_token and not token.refresh_token_revoked)
                if token.user.login == login and live:
                    token.access_token_revoked = token.refresh_token_revoked = True
                    count += 1
            for code in [c for c, v in self.codes.items() if v.user.login == login]:
                del self.codes[code]
        return count


# --- grants and endpoints ---------------------------------------------------------------------

def build(store: Store, issuer: str) -> tuple[Flask, Flask]:
    signing_key = RSAKey.generate_key(2048, parameters={"kid": "oauth-test-1", "use": "sig", "alg": "RS256"})

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

        def save_authorization_code(self, code, req):
            item = AuthorizationCode(
                code=code, client_id=req.client.client_id, redirect_uri=req.payload.redirect_uri,
                scope=req.client.get_allowed_scope(req.payload.scope), user=req.user,
                code_challenge=req.payload.data.get("code_challenge"),
                code_challenge_method=req.payload.data.get("code_challenge_method"),
                nonce=req.payload.data.get("nonce"), auth_time=session.get("auth_time", int(time.time())),
            )
            with store.lock:
                store.codes[code] = item
            return item

        def query_authorization_code(self, code, client):
            with store.lock:
                item = store.codes.get(code)
            if item and item.client_id == client.client_id and not item.is_expired():
                return item
            return None

        def delete_authorization_code(self, authorization_code):
            with store.lock:
                store.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class S256Challenge(CodeChallenge):
        """PKCE for every client, confidential ones too (Authlib's `required` covers public ones only), S256 only."""

        SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

        def validate_code_challenge(self, grant, redirect_uri):
            data = grant.request.payload.data
            if not data.get("code_challenge"):
                raise InvalidRequestError("Missing 'code_challenge': PKCE (S256) is required.",
                                          redirect_uri=redirect_uri, state=grant.request.payload.state)
            if data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("'code_challenge_method' must be S256.",
                                          redirect_uri=redirect_uri, state=grant.request.payload.state)
            return super().validate_code_challenge(grant, redirect_uri)

    class OpenIDCodeExtension(OpenIDCode):
        def resolve_client_private_key(self, client):
            return signing_key

        def get_client_algorithm(self, client):
            return "RS256"

        def get_encode_header(self, client):
            return {"alg": "RS256", "kid": "oauth-test-1", "typ": "JWT"}

        def get_client_claims(self, client):
            return {"iss": issuer, "aud": client.get_client_id()}

        def exists_nonce(self, nonce, req):
            with store.lock:
                return any(c.nonce == nonce and c.client_id == req.payload.client_id for c in store.codes.values())

        def generate_user_info(self, user, scope):
            return UserInfo(sub=user.login, email=user.login, email_verified=True,
                            preferred_username=user.login)

    class RefreshTokenGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token):
            with store.lock:
                token = store.refresh.get(refresh_token)
            if token and not token.refresh_token_revoked:
                return token
            return None

        def authenticate_user(self, refresh_token):
            return refresh_token.user

        def revoke_old_credential(self, refresh_token):
            with store.lock:
                refresh_token.refresh_token_revoked = True

    class ClientCredentialsGrant(grants.ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = AUTH_METHODS

        def query_token(self, token_string, token_type_hint):
            with store.lock:
                if token_type_hint == "refresh_token":
                    return store.refresh.get(token_string) or store.access.get(token_string)
                return store.access.get(token_string) or store.refresh.get(token_string)

        def revoke_token(self, token, req):
            value = req.form.get("token")
            with store.lock:
                if token.refresh_token and value == token.refresh_token:
                    # RFC 7009 2.1: revoking a refresh token ends the whole authorization.
                    store.revoke_family(token.family)
                else:
                    token.access_token_revoked = True

    class Introspection(IntrospectionEndpoint):
        CLIENT_AUTH_METHODS = AUTH_METHODS

        def query_token(self, token_string, token_type_hint):
            # Refresh tokens only when asked by hint: Dovecot and aiosmtpd send no hint, and a
            # refresh token must not open a mailbox as if it were an access token.
            with store.lock:
                if token_type_hint == "refresh_token":
                    refresh = store.refresh.get(token_string)
                    return _RefreshView(refresh) if refresh else None
                return store.access.get(token_string)

        def check_permission(self, token, client, req):
            return client.introspect

        def introspect_token(self, token):
            user = token.get_user()
            payload = {
                "active": True, "client_id": token.client.client_id, "token_type": "Bearer",
                "username": user.login, "sub": user.login, "scope": token.get_scope(),
                "aud": token.client.client_id, "iss": issuer, "iat": token.issued_at,
            }
            if isinstance(token, _RefreshView):
                payload["token_type"] = "refresh_token"
            else:
                payload["exp"] = token.get_expires_at()
            return payload

    def generate_token(grant_type, client, user=None, scope=None, expires_in=None,
                       include_refresh_token=True):
        token = {"token_type": "Bearer", "access_token": secrets.token_urlsafe(32),
                 "expires_in": expires_in or client.token_lifetime}
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(40)
        allowed = client.get_allowed_scope(scope)
        if allowed:
            token["scope"] = allowed
        return token

    def save_token(token, req):
        client = req.client
        if req.payload.grant_type == "client_credentials":
            user = User(login=APP_MAILBOX, app_client=client.client_id)
        else:
            user = req.user
        family = secrets.token_hex(8)
        old = getattr(req, "refresh_token", None)
        if req.payload.grant_type == "refresh_token" and old is not None:
            family = old.family
        store.add_token(Token(client=client, user=user, access_token=token["access_token"],
                              refresh_token=token.get("refresh_token"), scope=token.get("scope", ""),
                              expires_in=int(token["expires_in"]), family=family))

    app = Flask("oauth_test_server")
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        # The helpdesk under test also sets a cookie named "session" on 127.0.0.1 (another port,
        # same cookie jar): a distinct name keeps the two sessions apart.
        SESSION_COOKIE_NAME="oauth_test_session", SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    server = AuthorizationServer(app, query_client=lambda cid: store.clients.get(cid), save_token=save_token)
    server.register_token_generator("default", generate_token)
    server.scopes_supported = list(SCOPES)
    server.register_grant(AuthorizationCodeGrant, [S256Challenge(required=True), OpenIDCodeExtension()])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)

    def current_user() -> User | None:
        login = session.get("user")
        return store.users.get(login) if login else None

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        user = current_user()
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            if error.redirect_uri:  # only set once the client and its redirect_uri are trusted
                return server.handle_error_response(None, error)
            return _page("Authorization error", f"<p>{html.escape(error.error or 'error')}: "
                                                f"{html.escape(error.description or '')}</p>"), 400
        if user is None:
            return _login_page(request.full_path if request.query_string else request.path)
        if request.method == "GET":
            return _consent_page(grant, user)
        granted = user if request.form.get("confirm") == "yes" else None
        return server.create_authorization_response(grant_user=granted, grant=grant)

    @app.post("/login")
    def login():
        nxt = request.form.get("next") or request.args.get("next") or "/"
        if not nxt.startswith("/authorize"):
            nxt = "/"
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        user = store.users.get(username)
        if not user or not secrets.compare_digest(user.password.encode(), password.encode()):
            return _login_page(nxt, error="Invalid username or password."), 401
        session.clear()
        session["user"] = user.login
        session["auth_time"] = int(time.time())
        return redirect(nxt)

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        session.clear()
        return _page("Signed out", "<p>You are signed out.</p>")

    @app.post("/token")
    def issue_token():
        return server.create_token_response()

    @app.post("/revoke")
    def revoke():
        return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

    @app.post("/introspect")
    def introspect():
        return server.create_endpoint_response(Introspection.ENDPOINT_NAME)

    @app.get("/jwks.json")
    def jwks():
        return jsonify({"keys": [signing_key.as_dict(private=False)]})

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify({
            "issuer": issuer, "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token", "revocation_endpoint": issuer + "/revoke",
            "introspection_endpoint": issuer + "/introspect", "jwks_uri": issuer + "/jwks.json",
            "scopes_supported": list(SCOPES), "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
        })

    # The plain-HTTP loopback listener: introspection for Dovecot and aiosmtpd, and test controls.
    admin = Flask("oauth_test_admin")
    admin.add_url_rule("/introspect", "introspect", introspect, methods=["POST"])

    @admin.get("/test/health")
    def health():
        return jsonify({"ok": True})

    @admin.post("/test/revoke-user-tokens")
    def revoke_user_tokens():
        data = request.get_json(silent=True) or request.form
        username = (data.get("username") or "").strip()
        if not username:
            return jsonify({"error": "username is required"}), 400
        return jsonify({"username": username, "revoked": store.revoke_user(username)})

    return app, admin


class _RefreshView:
    """A refresh token as introspection sees it: active until revoked, whatever the access token does."""

    def __init__(self, token: Token) -> None:
        self.token = token
        self.client = token.client
        self.issued_at = token.issued_at

    def is_expired(self):
        return False

    def is_revoked(self):
        return self.token.refresh_token_revoked

    def get_user(self):
        return self.token.user

    def get_scope(self):
        return self.token.scope

    def check_client(self, client):
        return self.token.check_client(client)


# --- pages ------------------------------------------------------------------------------------

def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>")


def _login_page(nxt: str, error: str = "") -> str:
    err = f"<p role='alert'>{html.escape(error)}</p>" if error else ""
    return _page("Sign in to Example Identity", f"""{err}
<form method="post" action="/login">
  <input type="hidden" name="next" value="{html.escape(nxt)}">
  <p><label for="username">Username</label> <input id="username" name="username" type="text" autocomplete="username" required></p>
  <p><label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required></p>
  <p><button type="submit" name="signin">Sign in</button></p>
</form>""")


def _consent_page(grant, user: User) -> str:
    scopes = scope_to_list(grant.client.get_allowed_scope(grant.request.payload.scope)) or []
    items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes) or "<li>(no scope)</li>"
    return _page("Authorize access", f"""
<p>Signed in as <strong>{html.escape(user.login)}</strong>.</p>
<p>The application <strong>{html.escape(grant.client.client_id)}</strong> asks for:</p>
<ul>{items}</ul>
<form method="post" action="{html.escape(request.full_path)}">
  <button type="submit" name="confirm" value="yes">Authorize</button>
  <button type="submit" name="confirm" value="no">Deny</button>
</form>""")


# --- main -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token-lifetime", type=int, default=int(os.environ.get("OAUTH_TEST_TOKEN_LIFETIME", 3600)))
    parser.add_argument("--user", action="append", default=None,
                        help="LOGIN:PASSWORD (repeatable); default from OAUTH_TEST_USERS (space separated)")
    parser.add_argument("--seed-token", action="append", default=[],
                        help="TOKEN=LOGIN: a long-lived access token issued to helpdesk-test beforehand")
    args = parser.parse_args(argv)

    specs = args.user or os.environ.get("OAUTH_TEST_USERS", "support@example.test:supportpw "
                                        "billing@example.test:billingpw").split()
    users = {}
    for spec in specs:
        login, _, password = spec.partition(":")
        users[login] = User(login=login, password=password)
    grant_types = ("authorization_code", "refresh_token", "client_credentials")
    clients = {
        "helpdesk-test": Client("helpdesk-test", "helpdesk-test-secret", grant_types, args.token_lifetime, True),
        "helpdesk-test-short": Client("helpdesk-test-short", "helpdesk-test-secret", grant_types, SHORT_LIFETIME, True),
        "dovecot": Client("dovecot", "dovecot-secret", (), args.token_lifetime, True),
    }
    store = Store(users, clients)
    for spec in args.seed_token:
        value, _, login = spec.partition("=")
        store.add_token(Token(client=clients["helpdesk-test"], user=users.get(login) or User(login),
                              access_token=value, refresh_token=None, scope="imap smtp",
                              expires_in=10 * 365 * 86400, family=secrets.token_hex(8)))

    issuer = f"https://{args.host}:{args.https_port}"
    app, admin = build(store, issuer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    https = make_server(args.host, args.https_port, app, threaded=True, ssl_context=context)
    plain = make_server("127.0.0.1", args.http_port, admin, threaded=True)
    threading.Thread(target=https.serve_forever, daemon=True).start()
    print(f"oauth test server: {issuer} and http://127.0.0.1:{args.http_port}", flush=True)
    try:
        plain.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        https.shutdown()


if __name__ == "__main__":
    sys.exit(main())
