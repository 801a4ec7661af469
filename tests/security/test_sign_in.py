"""Sign-in throttling per account and per address, equal-time answers, and sign-out that ends copied cookies."""
from __future__ import annotations

import re

import pytest

from helpdesk import create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def app_config(app_config) -> dict:
    """Tight limits: 5 failures per account, 8 per address, within 15 minutes; one proxy in front."""
    app_config.update(LOGIN_LIMIT_ACCOUNT="5 per 15 minutes", LOGIN_LIMIT_ADDRESS="8 per 15 minutes", PROXY_COUNT=1)
    return app_config


def sign_in(client, email: str, password: str, address: str = "198.51.100.7", remember: bool = False):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    data = {"email": email, "password": password, "csrf_token": token}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data, headers={"X-Forwarded-For": address})


def test_thirty_wrong_passwords_pause_the_account_even_for_the_right_one(app, client, make_agent):
    agent = make_agent()
    answers = [sign_in(client, agent.email, f"guess {n}").status_code for n in range(30)]

    assert answers[:5] == [200] * 5 and set(answers[5:]) == {429}, answers
    refused = sign_in(client, agent.email, PASSWORD)
    assert refused.status_code == 429
    html = refused.get_data(as_text=True)
    assert "Too many failed sign-ins for this account" in html and "try again within 15 minutes" in html
    assert 'class="error"' in html  # beside the field, like the other sign-in errors
    assert 0 < int(refused.headers["Retry-After"]) <= 900
    assert client.get("/tickets").status_code == 302  # not signed in
    # Another account from another address is not affected.
    other = make_agent("other@example.test")
    assert sign_in(client, other.email, PASSWORD, address="192.0.2.50").status_code == 302


def test_one_address_trying_many_accounts_is_paused(app, client, make_agent):
    agent = make_agent()
    answers = [sign_in(client, f"nobody{n}@example.test", "guess").status_code for n in range(10)]

    assert answers[:8] == [200] * 8 and answers[8:] == [429, 429]
    refused = sign_in(client, agent.email, PASSWORD)
    assert refused.status_code == 429
    assert "from your network address" in refused.get_data(as_text=True)
    # The same account from another address still signs in.
    assert sign_in(client, agent.email, PASSWORD, address="192.0.2.51").status_code == 302


def test_successful_sign_ins_are_not_counted(app, client, make_agent):
    agent = make_agent()
    for _ in range(12):
        assert sign_in(client, agent.email, PASSWORD).status_code == 302
        client.post("/logout", data={"csrf_token": re.search(
            r'name="csrf-token" content="([^"]+)"', client.get("/tickets").get_data(as_text=True)).group(1)})


def test_sign_out_ends_a_copied_remember_me_cookie(app, client, make_agent):
    agent = make_agent()
    assert sign_in(client, agent.email, PASSWORD, remember=True).status_code == 302
    remember = client.get_cookie("remember_token").value

    def replayed():
        thief = app.test_client()
        thief.set_cookie("remember_token", remember)
        return thief.get("/tickets")

    assert replayed().status_code == 200  # the cookie alone signs in, as "keep me signed in" promises
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/tickets").get_data(as_text=True)).group(1)
    signed_out = client.post("/logout", data={"csrf_token": token}, follow_redirects=True)
    assert "You are signed out" in signed_out.get_data(as_text=True)

    assert replayed().status_code == 302
    assert client.get("/tickets").status_code == 302
