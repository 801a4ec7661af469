"""No stored password, token or secret shows in any page, partial, log line or command output.

The test stores known secrets the way an admin would (SMTP and IMAP passwords with quotes and
backslashes, wrong for the real servers so every failure path runs), uses every button that
reaches a server with them, polls and sends, runs the commands, visits every page and partial
as every kind of visitor, and scans all of it.
"""
from __future__ import annotations

import io
import logging
import re

import pytest

from helpdesk.extensions import db
from helpdesk.mail.secrets import CredentialBox
from helpdesk.models import Agent, Mailbox, OAuthConnection, SmtpConfig

SMTP_SECRET = 'Smtp-"canary"\\pw-7Q41'
IMAP_SECRET = "Imap-'canary'\\\"pw-3Z88"
SECRET_KEY = "Secret-key-canary-5d1f0c2a9e"
S3_SECRET = "S3-secret-canary-81b7"
OAUTH_CLIENT_SECRET = "OAuth-client-'canary'-secret-6c2d"
AGENT_PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


@pytest.fixture
def app_config(app_config, smtp_certs) -> dict:
    app_config.update(SECRET_KEY=SECRET_KEY, TLS_CA_FILE=smtp_certs.ca_file)
    if not app_config.get("S3_ENDPOINT"):
        app_config["S3_SECRET_KEY"] = S3_SECRET
    return app_config


def secrets_of(app) -> dict[str, str]:
    """Return every secret the app holds now, stored or configured, by name."""
    found = {"SMTP password": SMTP_SECRET, "IMAP password": IMAP_SECRET, "agent password": AGENT_PASSWORD,
             "OAuth client secret": OAUTH_CLIENT_SECRET,
             "SECRET_KEY": app.config["SECRET_KEY"], "CREDENTIALS_KEY": app.config["CREDENTIALS_KEY"],
             "S3 secret key": app.config["S3_SECRET_KEY"]}
    db.session.expire_all()
    for agent in db.session.scalars(db.select(Agent)):
        found[f"password hash of {agent.email}"] = agent.password_hash
        found[f"session token of {agent.email}"] = agent.session_token
    for config in db.session.scalars(db.select(SmtpConfig)):
        found["stored SMTP password"] = config.password_encrypted
    for mailbox in db.session.scalars(db.select(Mailbox)):
        found[f"stored password of mailbox {mailbox.id}"] = mailbox.password_encrypted
    box = CredentialBox(app.config["CREDENTIALS_KEY"])
    for connection in db.session.scalars(db.select(OAuthConnection)):
        for name in ("client_secret", "refresh_token", "access_token"):
            sealed = getattr(connection, f"{name}_encrypted")
            found[f"stored {name} of OAuth connection {connection.id}"] = sealed
            found[f"{name} of OAuth connection {connection.id}"] = box.open(sealed)
    # The escaped forms a protocol or a repr would show them in count too.
    for name, value in list(found.items()):
        for form in (value.replace("\\", "\\\\").replace('"', '\\"'), repr(value)[1:-1]):
            if form != value:
                found[f"{name} (escaped)"] = form
    return {name: value for name, value in found.items() if value}


def token_of(client, url: str = "/tickets") -> str:
    return CSRF.search(client.get(url).get_data(as_text=True)).group(1)


def sign_in(client, email: str) -> str:
    client.post("/login", data={"email": email, "password": AGENT_PASSWORD, "csrf_token": token_of(client, "/login")})
    return token_of(client)


def get_urls(app, values: dict) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods:
            urls.append(re.sub(r"<(?:[^:>]+:)?(\w+)>", lambda m: str(values[m.group(1)]),
                               re.sub(r"<any\([^)]*\):kind>", "<kind>", rule.rule)))
    return urls


def act_as_admin(admin, world: dict, smtp, imap_port: str, folder: str, keep) -> None:
    """Store the SMTP and IMAP passwords as an admin would, then use everything that sends them."""
    token = sign_in(admin, "admin@example.test")
    outbound = {"host": smtp.host, "port": str(smtp.port), "security": "starttls", "username": smtp.username,
                "password": SMTP_SECRET, "from_address": "support@helpdesk.test", "from_name": "Support",
                "verify_tls": "y", "timeout": "10", "csrf_token": token}
    inbound = {"name": "Support", "host": "127.0.0.1", "port": imap_port, "security": "ssl",
               "username": "support@example.test", "password": IMAP_SECRET, "folder": folder, "poll_interval": "120",
               "enabled": "y", "after_processing": "seen", "reply_from_address": "support@example.test",
               "csrf_token": token}  # verify_tls left off: the test Dovecot's CA is not the one trusted here
    mailbox_id = world["mailbox_id"]
    keep("save SMTP", admin.post("/admin/settings/email/outbound", data=outbound, follow_redirects=True))
    keep("save IMAP", admin.post(f"/admin/settings/email/inbound/{mailbox_id}", data=inbound, follow_redirects=True))
    keep("save OAuth app", admin.post("/admin/settings/email/inbound/new", follow_redirects=True, data={
        **inbound, "name": "Billing", "password": "", "enabled": "", "auth_method": "oauth2", "oauth_provider": "microsoft",
        "oauth_client_id": "app-id", "oauth_client_secret": OAUTH_CLIENT_SECRET, "oauth_tenant": "organizations"}))
    # Every button that reaches a server with the stored passwords (left blank: the stored one is used).
    for htmx in ({}, {"HX-Request": "true"}):
        keep("Test SMTP", admin.post("/admin/settings/email/outbound/test",
                                     data={**outbound, "password": "", "test_to": "x@customer.test"}, headers=htmx))
        for action in ("test", "folders"):
            keep(f"IMAP {action}", admin.post(f"/admin/settings/email/inbound/{mailbox_id}/{action}",
                                              data={**inbound, "password": ""}, headers=htmx))
    keep("poll", admin.post(f"/admin/settings/email/inbound/{mailbox_id}/poll", data={"csrf_token": token},
                            headers={"HX-Request": "true"}))
    keep("reply", admin.post(f"/tickets/{world['ticket_id']}/comments", follow_redirects=True,
                             data={"visibility": "public", "body": "On its way", "csrf_token": token,
                                   "files": [(io.BytesIO(b"log"), "log.txt")]}, content_type="multipart/form-data"))
    keep("send test template", admin.post("/admin/settings/email/templates/new_ticket/send-test",
                                          data={"csrf_token": token}, follow_redirects=True))


def test_no_secret_in_any_page_partial_log_line_or_command_output(app, world, smtp_server, services, folder, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, str]] = []  # (where, text)

    def keep(where: str, response) -> None:
        seen.append((where, response.get_data(as_text=True) + str(response.headers)))
        response.close()

    smtp = smtp_server("starttls")
    admin = app.test_client()
    # Each visitor in an app context of its own: the test's context outlives requests, and Flask-Login
    # and Flask-WTF keep the signed-in agent and the form token in it.
    with app.app_context():
        act_as_admin(admin, world, smtp, services["HELPDESK_TEST_IMAPS_PORT"], folder, keep)

    # The commands an operator runs.
    runner = app.test_cli_runner()
    for args in (["email", "poll"], ["tickets", "show", str(world["ticket_id"])],
                 ["tickets", "show", "--json", str(world["ticket_id"])], ["users", "create-admin", "ops@example.test"]):
        result = runner.invoke(args=args)
        seen.append((" ".join(args), result.output + repr(result.exception or "")))

    # Every page and partial, as each kind of visitor.
    for who in ("admin", "agent", "anonymous"):
        with app.app_context():
            client = admin if who == "admin" else app.test_client()
            if who == "agent":
                sign_in(client, "agent@example.test")
            for url in get_urls(app, world):
                for headers in ({}, {"HX-Request": "true"}):
                    keep(f"{who} GET {url} {headers}", client.get(url, headers=headers))

    seen.append(("log", caplog.text))
    secrets = secrets_of(app)
    assert db.session.get(Mailbox, world["mailbox_id"]).password_encrypted, "the IMAP password was not stored"
    assert db.session.scalar(db.select(SmtpConfig)).password_encrypted, "the SMTP password was not stored"
    assert db.session.scalar(db.select(OAuthConnection)).client_secret_encrypted, "the client secret was not stored"
    leaks = [(where, name) for where, text in seen for name, value in secrets.items() if value in text]
    assert leaks == []
    assert len(seen) > 150
