"""What an admin is told when a provider refuses: each refusal in plain words, with what to do."""
import pytest

from helpdesk.mail import oauth
from helpdesk.mail.oauth import OAuthApp

MICROSOFT = OAuthApp(provider="microsoft", client_id="app", client_secret="s", tenant="contoso.com")
GOOGLE = OAuthApp(provider="google", client_id="app", client_secret="s")


@pytest.mark.parametrize("registration, error, description, kind, words", [
    (MICROSOFT, "invalid_grant", "AADSTS65001: The user or administrator has not consented", "consent",
     "Grant admin consent"),
    (MICROSOFT, "invalid_client", "AADSTS7000215: Invalid client secret provided.", "client", "paste the secret's Value"),
    (MICROSOFT, "unauthorized_client", "AADSTS700016: Application not found in the directory", "client",
     "check the Application (client) ID and the tenant"),
    (MICROSOFT, "invalid_request", "AADSTS90002: Tenant 'contoso.example' not found.", "client", "Directory (tenant) ID"),
    (MICROSOFT, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked", "revoked",
     "connect the account again"),
    (GOOGLE, "invalid_grant", "Token has been expired or revoked.", "revoked", "expires its refresh tokens after 7 days"),
    (GOOGLE, "invalid_scope", "Some requested scopes were invalid.", "scope", "check the scopes"),
    (GOOGLE, "access_denied", "", "denied", "consent was declined"),
])
def test_refusals_are_explained(registration, error, description, kind, words):
    refusal = oauth.callback_error(registration, error, description)
    assert refusal.kind == kind
    assert words in refusal.diagnosis
    assert refusal.needs_reconnect
    assert description in refusal.server_reply


def test_a_provider_that_cannot_be_reached_is_an_outage_not_a_broken_sign_in():
    registration = OAuthApp(provider="custom", client_id="app", client_secret="s",
                            token_url="https://127.0.0.1:9/token", scopes="imap")
    with pytest.raises(oauth.OAuthError) as refused:
        oauth.refresh(registration, "imap", "some-refresh-token")
    assert refused.value.kind == "network" and not refused.value.needs_reconnect


def test_microsoft_endpoints_follow_the_tenant_and_app_only_asks_for_default():
    assert MICROSOFT.endpoints("imap").token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in MICROSOFT.endpoints("imap").scopes
    assert "https://outlook.office.com/SMTP.Send" in MICROSOFT.endpoints("smtp").scopes
    app_only = OAuthApp(provider="microsoft", client_id="app", flow="client_credentials")
    assert app_only.endpoints("smtp").scopes == "https://outlook.office365.com/.default"
    assert "/organizations/" in app_only.endpoints("smtp").authorize_url


def test_google_asks_for_offline_access_and_fresh_consent_so_a_refresh_token_comes():
    flow = oauth.start_authorization(GOOGLE, "imap", "https://help.example.com/admin/settings/email/oauth/callback")
    assert flow.url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    for part in ("access_type=offline", "prompt=consent", "code_challenge_method=S256", f"state={flow.state}",
                 "scope=https%3A%2F%2Fmail.google.com%2F+openid+email"):
        assert part in flow.url
    assert flow.code_verifier not in flow.url


def test_the_account_comes_from_an_id_token_meant_for_this_client():
    import base64
    import json

    def token(claims):
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJSUzI1NiJ9.{body}.signature"

    assert oauth.id_token_account(token({"aud": "app", "email": "help@example.com"}), "app") == "help@example.com"
    assert oauth.id_token_account(token({"aud": ["app", "x"], "preferred_username": "a@b.c"}), "app") == "a@b.c"
    assert oauth.id_token_account(token({"aud": "another-app", "email": "help@example.com"}), "app") == ""
    assert oauth.id_token_account("not-a-jwt", "app") == ""
