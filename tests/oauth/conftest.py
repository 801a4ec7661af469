"""Fixtures for OAuth sign-in: the real test authorization server (tests/services/oauth_server.py)."""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html import unescape
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

SUPPORT = ("support@example.test", "supportpw")
CLIENT = ("helpdesk-test", "helpdesk-test-secret")
REDIRECT_URI = "http://127.0.0.1:54321/admin/settings/email/oauth/callback"


class OAuth:
    """Drive the test OAuth server as the helpdesk and a person at a browser would."""

    def __init__(self, env: dict, redirect_uri: str = REDIRECT_URI) -> None:
        self.redirect_uri = redirect_uri
        self.base = env["HELPDESK_TEST_OAUTH_URL"]
        self.ca = env["HELPDESK_TEST_CA"]
        self.admin = env["HELPDESK_TEST_OAUTH_ADMIN"]
        self.introspect_url = env["HELPDESK_TEST_OAUTH_INTROSPECT"]

    def browser(self) -> requests.Session:
        session = requests.Session()
        session.verify = self.ca
        # Else REQUESTS_CA_BUNDLE, where set, wins over session.verify (requests issue #3829).
        session.trust_env = False
        return session

    def authorize_url(self, client_id: str = CLIENT[0], scope: str = "openid email offline_access imap smtp",
                      redirect_uri: str | None = None, **extra: str) -> tuple[str, str, str]:
        """Return (URL, state, code_verifier) for an authorization request with PKCE S256."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(12)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri or self.redirect_uri,
                  "scope": scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
        params.update(extra)
        return f"{self.base}/authorize?{urlencode(params)}", state, verifier

    def sign_in(self, browser: requests.Session, url: str, user: tuple[str, str]) -> requests.Response:
        """Open the authorize URL, fill the login form; return the consent page."""
        page = browser.get(url)
        assert page.status_code == 200, page.text
        assert 'name="username"' in page.text and 'name="password"' in page.text
        action, fields = form(page)
        fields.update(username=user[0], password=user[1])
        return browser.post(urljoin(page.url, action), data=fields)

    def consent(self, browser: requests.Session, page: requests.Response, answer: str = "yes") -> dict:
        """Press Authorize (or Deny) and return the query parameters of the redirect, not followed."""
        assert page.status_code == 200, page.text
        assert ">Authorize<" in page.text and ">Deny<" in page.text
        action, fields = form(page)
        reply = browser.post(urljoin(page.url, action), data={**fields, "confirm": answer}, allow_redirects=False)
        assert reply.status_code == 302, reply.text
        location = reply.headers["Location"]
        assert location.startswith(self.redirect_uri), location
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    def code_flow(self, user: tuple[str, str] = SUPPORT, client: tuple[str, str] = CLIENT,
                  scope: str = "openid email offline_access imap smtp") -> dict:
        """Run the whole authorization code flow with PKCE; return the token response."""
        url, state, verifier = self.authorize_url(client[0], scope)
        browser = self.browser()
        answer = self.consent(browser, self.sign_in(browser, url, user))
        assert answer["state"] == state
        reply = self.token(client, grant_type="authorization_code", code=answer["code"],
                           redirect_uri=self.redirect_uri, code_verifier=verifier)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def token(self, client: tuple[str, str] = CLIENT, **data: str) -> requests.Response:
        return requests.post(f"{self.base}/token", data=data, auth=client, verify=self.ca, timeout=10)

    def refresh(self, refresh_token: str, client: tuple[str, str] = CLIENT) -> requests.Response:
        return self.token(client, grant_type="refresh_token", refresh_token=refresh_token)

    def revoke(self, token: str, client: tuple[str, str] = CLIENT, hint: str | None = None) -> requests.Response:
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        return requests.post(f"{self.base}/revoke", data=data, auth=client, verify=self.ca, timeout=10)

    def introspect(self, token: str) -> dict:
        """Ask as Dovecot does: the plain-HTTP loopback URL with the dovecot client in it."""
        parts = urlsplit(self.introspect_url)
        url = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"
        reply = requests.post(url, data={"token": token}, auth=(parts.username, parts.password), timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()


def form(page: requests.Response) -> tuple[str, dict]:
    """Return the first form's action and its hidden fields."""
    match = re.search(r'<form[^>]*action="([^"]*)"', page.text)
    assert match, page.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    return unescape(match.group(1)), {k: unescape(v) for k, v in hidden.items()}


@pytest.fixture
def oauth(services) -> OAuth:
    """Drive the test authorization server as a person at a browser (and the mail servers) would."""
    return OAuth(services)
