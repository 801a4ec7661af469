"""Sign-in, roles and CSRF."""
import pytest

ADMIN_PAGES = ["/admin/agents", "/admin/sla", "/admin/settings/email/", "/admin/settings/email/outbound"]


def test_sign_in_with_the_right_password(client, auth, admin):
    response = auth.login(admin.email)
    assert response.status_code == 302
    assert response.headers["Location"] == "/tickets"
    assert client.get("/tickets").status_code == 200


def test_wrong_password_is_shown_beside_the_field(client, auth, admin):
    response = auth.login(admin.email, "wrong password")
    assert response.status_code == 200
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/tickets").status_code == 302


def test_inactive_agent_cannot_sign_in(app, client, auth, make_agent):
    from helpdesk.extensions import db

    agent = make_agent("gone@example.test")
    agent.active = False
    db.session.commit()
    auth.login(agent.email)
    assert client.get("/tickets").status_code == 302


def test_anonymous_visitors_are_sent_to_sign_in(client, app):
    response = client.get("/tickets/1")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/tickets"])
def test_sign_in_redirect_stays_on_this_site(client, auth, admin, target):
    auth.refresh_token("/login")
    response = client.post(f"/login?next={target}", data={"email": admin.email, "password": "correct horse battery",
                                                          "csrf_token": auth.token})
    assert response.headers["Location"] == "/tickets"


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_agents_get_403_on_admin_pages(agent_client, url):
    response = agent_client.get(url)
    assert response.status_code == 403
    assert "admins only" in response.get_data(as_text=True)


def test_every_admin_route_refuses_agents(app, agent_client):
    adapter = app.url_map.bind("localhost")
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin") or rule.endpoint.endswith("readonly"):
            continue  # the read-only template preview is for agents too
        values = {name: sorted(getattr(conv, "items", ["1"]))[0] for name, conv in rule._converters.items()}
        url = adapter.build(rule.endpoint, {k: (1 if v == "1" else v) for k, v in values.items()})
        method = "GET" if "GET" in rule.methods else "POST"
        response = agent_client.open(url, method=method, data={"csrf_token": agent_client.auth.token})
        assert response.status_code == 403, (rule.rule, method, response.status_code)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_admins_open_admin_pages(admin_client, url):
    response = admin_client.get(url, follow_redirects=True)
    assert response.status_code == 200


def test_post_without_csrf_token_is_rejected(admin_client, make_ticket):
    ticket = make_ticket()
    response = admin_client.post(f"/tickets/{ticket.id}/resolve")
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert admin_client.auth.post(f"/tickets/{ticket.id}/resolve").status_code == 302


def test_sign_out_needs_a_post(admin_client):
    assert admin_client.get("/logout").status_code == 405
    admin_client.auth.post("/logout")
    assert admin_client.get("/tickets").status_code == 302


def test_unknown_page_has_a_useful_404(admin_client):
    response = admin_client.get("/no/such/page")
    assert response.status_code == 404
    assert "Back to tickets" in response.get_data(as_text=True)


@pytest.mark.parametrize(("company", "brand"), [("Example Support", "Example Support Helpdesk"),
                                                ("Helpdesk", "Helpdesk"), ("Acme Helpdesk", "Acme Helpdesk")])
def test_the_brand_names_the_company_without_saying_helpdesk_twice(app, client, company, brand):
    app.config["COMPANY_NAME"] = company
    page = client.get("/login").get_data(as_text=True)
    assert f'class="brand" href="/tickets">{brand}</a>' in page


def test_the_brand_shows_on_pages_that_have_a_config_of_their_own(app, client, auth, admin):
    app.config["COMPANY_NAME"] = "Example Support"
    auth.login(admin.email)
    page = client.get("/admin/settings/email/outbound").get_data(as_text=True)
    assert 'class="brand" href="/tickets">Example Support Helpdesk</a>' in page
    assert "· Example Support</title>" in page
