"""The security matrix: every route of the URL map, as anonymous, agent and admin, against a table.

Each line of ROUTES is one URL rule and method with the status each kind of visitor gets (GETs
plain; POSTs with a valid CSRF token and an empty form). A route that is not in the table fails
the test, and so does a line whose route is gone: adding a route means deciding who may use it.
Every state-changing route must refuse a request without a valid CSRF token and write nothing,
and no GET may write to the database.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from helpdesk.extensions import db

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|CREATE|DROP|ALTER)\b", re.I)
LOGIN = "login"  # a redirect to the sign-in page

# method  rule                                                                 anonymous  agent  admin
ROUTES = """
GET   /static/<path:filename>                                                  200    200    200
GET   /login                                                                   200    302    302
POST  /login                                                                   200    302    302
POST  /logout                                                                  302    302    302
GET   /invite/<token>                                                          200    200    200
POST  /invite/<token>                                                          200    200    200
GET   /                                                                        login  302    302
GET   /tickets                                                                 login  200    200
GET   /tickets/new                                                             login  200    200
POST  /tickets/new                                                             login  200    200
GET   /tickets/<int:ticket_id>                                                 login  200    200
POST  /tickets/<int:ticket_id>/comments                                        login  422    422
POST  /tickets/<int:ticket_id>/properties                                      login  302    302
POST  /tickets/<int:ticket_id>/resolve                                         login  302    302
GET   /tickets/<int:ticket_id>/macro                                           login  404    404
GET   /attachments/<int:attachment_id>                                         login  200    200
GET   /macros                                                                  login  200    200
GET   /macros/new                                                              login  200    200
POST  /macros/new                                                              login  200    200
GET   /macros/<int:macro_id>/edit                                              login  200    200
POST  /macros/<int:macro_id>/edit                                              login  302    302
POST  /macros/<int:macro_id>/delete                                            login  302    302
GET   /contacts                                                                login  200    200
GET   /contacts/new                                                            login  200    200
POST  /contacts/new                                                            login  200    200
GET   /contacts/<int:contact_id>                                               login  200    200
POST  /contacts/<int:contact_id>                                               login  200    200
GET   /customers                                                               login  200    200
GET   /customers/new                                                           login  200    200
POST  /customers/new                                                           login  200    200
GET   /customers/<int:customer_id>                                             login  200    200
POST  /customers/<int:customer_id>                                             login  302    302
GET   /admin/agents                                                            login  403    200
POST  /admin/agents                                                            login  403    200
POST  /admin/agents/invite                                                     login  403    422
POST  /admin/agents/<int:agent_id>/active                                      login  403    302
GET   /admin/sla                                                               login  403    200
POST  /admin/sla                                                               login  403    302
GET   /admin/settings/email/                                                   login  403    302
GET   /admin/settings/email/outbound                                           login  403    200
POST  /admin/settings/email/outbound                                           login  403    200
POST  /admin/settings/email/outbound/test                                      login  403    200
GET   /admin/settings/email/inbound                                            login  403    200
GET   /admin/settings/email/inbound/new                                        login  403    200
POST  /admin/settings/email/inbound/new                                        login  403    200
GET   /admin/settings/email/inbound/<int:mailbox_id>                           login  403    200
POST  /admin/settings/email/inbound/<int:mailbox_id>                           login  403    200
POST  /admin/settings/email/inbound/<int:mailbox_id>/delete                    login  403    302
POST  /admin/settings/email/inbound/test                                       login  403    200
POST  /admin/settings/email/inbound/<int:mailbox_id>/test                      login  403    200
POST  /admin/settings/email/inbound/folders                                    login  403    200
POST  /admin/settings/email/inbound/<int:mailbox_id>/folders                   login  403    200
GET   /admin/settings/email/inbound/<int:mailbox_id>/status                    login  403    200
POST  /admin/settings/email/inbound/<int:mailbox_id>/poll                      login  403    302
GET   /admin/settings/email/inbound/log                                        login  403    200
POST  /admin/settings/email/inbound/log/<int:inbound_id>/reprocess             login  403    302
GET   /admin/settings/email/inbound/log/<int:inbound_id>/raw                   login  403    200
GET   /admin/settings/email/outbox                                             login  403    200
GET   /admin/settings/email/outbox/<int:outbound_id>                           login  403    200
GET   /admin/settings/email/outbox/<int:outbound_id>/raw                       login  403    200
POST  /admin/settings/email/outbox/<int:outbound_id>/resend                    login  403    302
GET   /admin/settings/email/templates                                          login  403    200
GET   /admin/settings/email/templates/<kind>                                   login  403    200
POST  /admin/settings/email/templates/<kind>                                   login  403    302
POST  /admin/settings/email/templates/<kind>/preview                           login  403    200
POST  /admin/settings/email/templates/<kind>/reset                             login  403    302
POST  /admin/settings/email/templates/<kind>/send-test                         login  403    200
GET   /admin/settings/email/templates/<kind>/view                              login  200    200
GET   /admin/settings/email/retention                                         login  403    200
POST  /admin/settings/email/retention/run                                     login  403    302
GET   /customers/options                                                       login  200    200
GET   /admin/settings/email/oauth/callback                                     login  403    302
POST  /admin/settings/email/oauth/disconnect                                   login  403    302
"""
# Run last, in this order: they take away what the others use (the walk's own session included).
LAST = ("/delete", "/active", "/logout")


@dataclass(frozen=True)
class Line:
    method: str
    rule: str
    answers: dict[str, str]


def table() -> list[Line]:
    lines = []
    for text in ROUTES.strip().splitlines():
        method, rule, anonymous, agent, admin = text.split()
        lines.append(Line(method, rule, {"anonymous": anonymous, "agent": agent, "admin": admin}))
    return lines


def rule_key(rule) -> str:
    """Name a URL rule as the table does (the templates' long any(...) converter shortened to <kind>)."""
    return re.sub(r"<any\([^)]*\):kind>", "<kind>", rule.rule)


def url_map_lines(app) -> set[tuple[str, str]]:
    return {(method, rule_key(rule)) for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def url_for_line(line: Line, values: dict) -> str:
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: str(values[m.group(1)]), line.rule)


def signed_in(client, role: str):
    """Sign the client in as the role (anonymous: not at all); return its CSRF token."""
    token = CSRF.search(client.get("/login").get_data(as_text=True)).group(1)
    if role != "anonymous":
        response = client.post("/login", data={"email": f"{role}@example.test", "password": "correct horse battery",
                                               "csrf_token": token})
        assert response.status_code == 302
        token = CSRF.search(client.get("/tickets").get_data(as_text=True)).group(1)
    return token


def answer(response) -> str:
    location = response.headers.get("Location", "")
    if response.status_code == 302 and location.startswith("/login?next="):
        return LOGIN
    return str(response.status_code)


def test_every_route_is_in_the_table(app):
    in_table = {(line.method, line.rule) for line in table()}
    in_app = url_map_lines(app)

    assert sorted(in_app - in_table) == [], "routes missing from the security matrix: say who may use them"
    assert sorted(in_table - in_app) == [], "lines of the security matrix whose route is gone"


@pytest.mark.parametrize("role", ["anonymous", "agent", "admin"])
def test_every_route_answers_each_role_as_the_table_says(role, app, client, world, statements_asked):
    token = signed_in(client, role)
    def order(line: Line) -> tuple:
        last = [n for n, end in enumerate(LAST) if line.rule.endswith(end)]
        return (line.method == "POST", last[0] if last else -1)

    lines = sorted(table(), key=order)
    got: dict[tuple[str, str], str] = {}
    for line in lines:
        url = url_for_line(line, world)
        if line.method == "GET":
            # The page and its htmx partial alike: they answer the same and write nothing.
            for headers in ({}, {"HX-Request": "true"}):
                with statements_asked() as asked:
                    response = client.get(url, headers=headers)
                got.setdefault((line.method, line.rule), answer(response))
                assert answer(response) == got[(line.method, line.rule)], (url, headers)
                response.close()
                writes = [s for s in asked if WRITES.match(s)]
                assert writes == [], f"GET {url} {headers} wrote to the database: {writes}"
        else:
            response = client.post(url, data={"csrf_token": token})
            got[(line.method, line.rule)] = answer(response)
            response.close()
        db.session.rollback()

    wrong = {key: (f"table says {line.answers[role]}", f"got {got[key]}") for line in lines
             if got[(key := (line.method, line.rule))] != line.answers[role]}
    assert wrong == {}, "\n".join(f"{method} {rule}: {a}, {b}" for (method, rule), (a, b) in wrong.items())


def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(app, client, world, statements_asked):
    signed_in(client, "admin")
    checked = 0
    for line in table():
        if line.method == "GET":
            continue
        url = url_for_line(line, world)
        for data in ({}, {"csrf_token": "forged-token"}):
            with statements_asked() as asked:
                response = client.post(url, data=data)
            response.close()
            assert response.status_code == 400, (url, data, response.status_code)
            assert "security token" in response.get_data(as_text=True), url
            assert [s for s in asked if WRITES.match(s)] == [], url
        checked += 1
    assert checked >= 30
