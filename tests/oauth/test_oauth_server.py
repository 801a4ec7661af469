"""The test OAuth server (tests/services/oauth_server.py) is a real authorization server.

The code flow with PKCE is driven over HTTPS with requests; its tokens open the real Dovecot by
IMAP XOAUTH2 and the aiosmtpd test server by SMTP XOAUTH2, and stop opening them once refreshed
away, revoked or expired.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import smtplib
import ssl
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

pytestmark = pytest.mark.services

SUPPORT = ("support@example.test", "supportpw")
BILLING = ("billing@example.test", "billingpw")
CLIENT = ("helpdesk-test", "helpdesk-test-secret")
SHORT_CLIENT = ("helpdesk-test-short", "helpdesk-test-secret")
REDIRECT_URI = "http://127.0.0.1:54321/admin/settings/email/oauth/callback"


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def imap_login(services):
    """Return a function that logs into the test Dovecot by XOAUTH2 over STARTTLS and lists INBOX."""

    def login(user: str, token: str) -> None:
        context = ssl.create_default_context(cafile=services["HELPDESK_TEST_CA"])
        client = IMAPClient("127.0.0.1", int(services["HELPDESK_TEST_IMAP_PORT"]), ssl=False, timeout=10)
        try:
            client.starttls(context)
            client.oauth2_login(user, token)
            assert client.folder_exists("INBOX")
        except BaseException:
            client.shutdown()
            raise
        client.logout()

    return login


def imap_refuses(login, user: str, token: str) -> bool:
    try:
        login(user, token)
    except LoginError:
        return True
    return False


# --- the authorization code flow -----------------------------------------------------------------

def test_code_flow_with_pkce_gives_tokens_and_an_id_token(oauth):
    tokens = oauth.code_flow()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["access_token"] and tokens["refresh_token"]
    assert 3500 <= tokens["expires_in"] <= 3600
    assert set(tokens["scope"].split()) == {"openid", "email", "offline_access", "imap", "smtp"}
    claims = jwt_claims(tokens["id_token"])
    assert claims["email"] == "support@example.test"
    assert claims["aud"] == "helpdesk-test"
    assert claims["iss"] == oauth.base
    assert claims["exp"] > time.time()
    # The id_token is signed with the key the server publishes.
    from joserfc import jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(requests.get(f"{oauth.base}/jwks.json", verify=oauth.ca, timeout=10).json())
    assert jwt.decode(tokens["id_token"], keys).claims["email"] == "support@example.test"


def test_introspection_names_the_user_and_needs_a_client(oauth):
    tokens = oauth.code_flow(user=BILLING, scope="imap")
    answer = oauth.introspect(tokens["access_token"])
    assert answer["active"] is True
    assert answer["username"] == "billing@example.test"
    assert answer["client_id"] == "helpdesk-test"
    assert answer["scope"] == "imap"
    assert answer["exp"] > time.time()
    assert "id_token" not in tokens  # no openid scope, no id_token
    admin = oauth.admin
    anonymous = requests.post(f"{admin}/introspect", data={"token": tokens["access_token"]}, timeout=10)
    assert anonymous.status_code == 401
    wrong = requests.post(f"{admin}/introspect", data={"token": tokens["access_token"]},
                          auth=("dovecot", "nope"), timeout=10)
    assert wrong.status_code == 401
    assert oauth.introspect("no-such-token") == {"active": False}
    # A refresh token is not an access token.
    assert oauth.introspect(tokens["refresh_token"]) == {"active": False}


def test_pkce_is_required_and_checked(oauth):
    url, _, _ = oauth.authorize_url()
    url = re.sub(r"&code_challenge(_method)?=[^&]*", "", url)
    browser = oauth.browser()
    reply = browser.get(url, allow_redirects=False)
    assert reply.status_code == 302
    assert parse_qs(urlsplit(reply.headers["Location"]).query)["error"] == ["invalid_request"]

    url, _, verifier = oauth.authorize_url()
    answer = oauth.consent(browser, oauth.sign_in(browser, url, SUPPORT))
    reply = oauth.token(grant_type="authorization_code", code=answer["code"], redirect_uri=REDIRECT_URI,
                        code_verifier=verifier[::-1])
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"
    # The refused exchange did not spend the code; the right verifier does, and only once.
    ok = oauth.token(grant_type="authorization_code", code=answer["code"], redirect_uri=REDIRECT_URI,
                     code_verifier=verifier)
    assert ok.status_code == 200, ok.text
    again = oauth.token(grant_type="authorization_code", code=answer["code"], redirect_uri=REDIRECT_URI,
                        code_verifier=verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_wrong_password_and_foreign_redirect_uri_are_refused(oauth):
    browser = oauth.browser()
    url, _, _ = oauth.authorize_url()
    page = oauth.sign_in(browser, url, ("support@example.test", "wrong"))
    assert page.status_code == 401
    assert "Invalid username or password" in page.text

    for redirect_uri in ("https://evil.example/admin/settings/email/oauth/callback",
                         "http://127.0.0.1:54321/elsewhere"):
        url, _, _ = oauth.authorize_url(redirect_uri=redirect_uri)
        reply = browser.get(url, allow_redirects=False)
        assert reply.status_code == 400  # an error page, never a redirect to an unknown URI
    assert "Location" not in reply.headers


def test_deny_redirects_with_access_denied(oauth):
    url, state, _ = oauth.authorize_url()
    browser = oauth.browser()
    answer = oauth.consent(browser, oauth.sign_in(browser, url, SUPPORT), answer="no")
    assert answer["error"] == "access_denied"
    assert answer["state"] == state
    assert "code" not in answer


def test_client_secret_post_is_accepted_and_a_wrong_secret_is_not(oauth):
    ok = requests.post(f"{oauth.base}/token", verify=oauth.ca, timeout=10, data={
        "grant_type": "client_credentials", "client_id": CLIENT[0], "client_secret": CLIENT[1], "scope": "imap"})
    assert ok.status_code == 200, ok.text
    wrong = oauth.token(("helpdesk-test", "nope"), grant_type="client_credentials")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    dovecot = oauth.token(("dovecot", "dovecot-secret"), grant_type="client_credentials")
    assert dovecot.status_code == 400 and dovecot.json()["error"] == "unauthorized_client"


# --- Dovecot trusts it ------------------------------------------------------------------------------

def test_access_token_logs_into_imap_and_a_bogus_one_does_not(oauth, imap_login):
    tokens = oauth.code_flow()
    imap_login("support@example.test", tokens["access_token"])
    assert imap_refuses(imap_login, "support@example.test", "bogus-" + secrets.token_urlsafe(16))
    # The token is support's, not billing's.
    assert imap_refuses(imap_login, "billing@example.test", tokens["access_token"])


def test_refresh_rotates_and_the_old_refresh_token_is_refused(oauth, imap_login):
    first = oauth.code_flow()
    reply = oauth.refresh(first["refresh_token"])
    assert reply.status_code == 200, reply.text
    second = reply.json()
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    imap_login("support@example.test", second["access_token"])
    again = oauth.refresh(first["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    third = oauth.refresh(second["refresh_token"])
    assert third.status_code == 200, third.text
    # Another client cannot use this client's refresh token.
    other = oauth.refresh(third.json()["refresh_token"], client=SHORT_CLIENT)
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


def test_revoked_access_token_is_refused_by_dovecot(oauth, imap_login):
    tokens = oauth.code_flow()
    imap_login("support@example.test", tokens["access_token"])
    assert oauth.revoke(tokens["access_token"]).status_code == 200
    assert oauth.introspect(tokens["access_token"]) == {"active": False}
    assert imap_refuses(imap_login, "support@example.test", tokens["access_token"])
    # Revoking the refresh token ends the authorization: no more refreshing.
    assert oauth.revoke(tokens["refresh_token"], hint="refresh_token").status_code == 200
    reply = oauth.refresh(tokens["refresh_token"])
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"


def test_admin_revoking_a_user_ends_every_token_of_theirs(oauth, imap_login):
    one, two = oauth.code_flow(user=BILLING), oauth.code_flow(user=BILLING)
    imap_login("billing@example.test", one["access_token"])
    reply = requests.post(f"{oauth.admin}/test/revoke-user-tokens", json={"username": "billing@example.test"},
                          timeout=10)
    assert reply.status_code == 200 and reply.json()["revoked"] >= 2
    for tokens in (one, two):
        assert imap_refuses(imap_login, "billing@example.test", tokens["access_token"])
        refreshed = oauth.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    assert requests.get(f"{oauth.admin}/test/health", timeout=10).status_code == 200


def test_client_credentials_token_opens_the_support_mailbox(oauth, imap_login):
    reply = oauth.token(grant_type="client_credentials", scope="imap smtp")
    assert reply.status_code == 200, reply.text
    tokens = reply.json()
    assert "refresh_token" not in tokens
    assert oauth.introspect(tokens["access_token"])["username"] == "support@example.test"
    imap_login("support@example.test", tokens["access_token"])


def test_short_client_tokens_expire_and_refresh(oauth, imap_login):
    tokens = oauth.code_flow(client=SHORT_CLIENT)
    assert tokens["expires_in"] == 4
    imap_login("support@example.test", tokens["access_token"])
    time.sleep(4.5)
    assert oauth.introspect(tokens["access_token"]) == {"active": False}
    assert imap_refuses(imap_login, "support@example.test", tokens["access_token"])
    reply = oauth.refresh(tokens["refresh_token"], client=SHORT_CLIENT)
    assert reply.status_code == 200, reply.text
    imap_login("support@example.test", reply.json()["access_token"])


# --- the SMTP test server trusts it too -------------------------------------------------------------

def smtp_xoauth2(server, user: str, token: str) -> list[bytes]:
    """Log into the aiosmtpd test server by XOAUTH2; return the challenges it sent."""
    challenges: list[bytes] = []

    def respond(challenge=None):
        if challenge is None:
            return f"user={user}\x01auth=Bearer {token}\x01\x01"
        challenges.append(challenge)
        return ""  # the client's empty answer to an error challenge

    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=server.ca_file))
        client.ehlo()
        assert "XOAUTH2" in client.esmtp_features["auth"].split()
        client.auth("XOAUTH2", respond)
    return challenges


def test_smtp_xoauth2_accepts_a_valid_token_and_refuses_a_bogus_one(oauth, smtp_server):
    server = smtp_server("starttls")
    tokens = oauth.code_flow(scope="smtp")
    assert smtp_xoauth2(server, "support@example.test", tokens["access_token"]) == []
    assert server.handler.xoauth2_logins == ["support@example.test"]

    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_xoauth2(server, "support@example.test", "bogus-" + secrets.token_urlsafe(16))
    assert refused.value.smtp_code == 535
    assert b"Username and Password not accepted" in refused.value.smtp_error
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_xoauth2(server, "billing@example.test", tokens["access_token"])  # someone else's token
    assert oauth.revoke(tokens["access_token"]).status_code == 200
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_xoauth2(server, "support@example.test", tokens["access_token"])
    assert server.handler.xoauth2_logins == ["support@example.test"]


def test_smtp_xoauth2_refusal_is_gmail_shaped(oauth, smtp_server):
    server = smtp_server("starttls")
    challenges: list[bytes] = []
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=server.ca_file))
        client.ehlo()
        blob = base64.b64encode(b"user=support@example.test\x01auth=Bearer nope\x01\x01").decode()
        code, reply = client.docmd("AUTH", f"XOAUTH2 {blob}")
        assert code == 334
        challenges.append(base64.b64decode(reply))
        code, reply = client.docmd("")
        assert (code, reply) == (535, b"5.7.8 Username and Password not accepted")
    assert json.loads(challenges[0]) == {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}


def test_smtp_password_auth_still_works(smtp_server):
    server = smtp_server("starttls")
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=server.ca_file))
        client.login(server.username, server.password)
