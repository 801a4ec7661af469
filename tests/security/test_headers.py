"""What every response carries for the browser's protection, cookie flags, the proxy, the database file's mode."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from helpdesk import create_app
from helpdesk.extensions import db
from helpdesk.models import OutboundMessage


@pytest.fixture
def other_app(app_config):
    """Return a factory of apps with more config overrides; their database connections are closed after."""
    made = []

    def make(**overrides):
        made.append(create_app({**app_config, **overrides}))
        return made[-1]

    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


def policy(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy", "")
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in (p.strip() for p in header.split(";")) if part}


def test_every_page_sends_the_security_headers(client, admin_client):
    for url in ("/login", "/tickets", "/admin/settings/email/outbound", "/no-such-page"):
        response = admin_client.get(url)
        csp = policy(response)
        assert csp["script-src"] == "'self'", url
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'", url
        assert "http" not in csp["img-src"], url  # remote images only on request
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["X-Frame-Options"] == "DENY", url
        assert response.headers["Referrer-Policy"] == "same-origin", url


def test_pages_have_no_inline_scripts_or_event_handlers(admin_client):
    for url in ("/login", "/tickets", "/admin/settings/email/outbound", "/admin/settings/email/inbound"):
        html = admin_client.get(url).get_data(as_text=True)
        for script in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in script, (url, script)
        assert not re.search(r"\son[a-z]+\s*=", html), url


def test_the_outbox_raw_download_is_never_sniffed(admin_client, make_ticket):
    ticket = make_ticket()
    message = OutboundMessage(ticket_id=ticket.id, kind="agent_reply", recipient="jane@customer.test",
                              to="jane@customer.test", subject="Hi", text_body="Hello", message_id="<raw@helpdesk.test>",
                              status="sent", raw_sent=b"Subject: Hi\r\n\r\n<html><script>alert(1)</script>")
    db.session.add(message)
    db.session.commit()

    response = admin_client.get(f"/admin/settings/email/outbox/{message.id}/raw")

    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("attachment")


def test_cookies_are_secure_when_the_console_is_served_over_https(other_app):
    plain = other_app()
    assert plain.config["SESSION_COOKIE_SECURE"] is False and plain.config["REMEMBER_COOKIE_SECURE"] is False

    https = other_app(PUBLIC_BASE_URL="https://help.example.com")

    assert https.config["SESSION_COOKIE_SECURE"] is True and https.config["REMEMBER_COOKIE_SECURE"] is True
    assert https.config["REMEMBER_COOKIE_SAMESITE"] == "Lax" and https.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert https.config["REMEMBER_COOKIE_HTTPONLY"] is True


def test_the_remember_cookie_carries_its_flags(other_app, make_agent):
    app = other_app(PUBLIC_BASE_URL="https://help.example.com")
    make_agent()
    client = app.test_client()
    page = client.get("/login", base_url="https://help.example.com").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    # Over https Flask-WTF also wants the Referer of our own site, as a browser sends it.
    response = client.post("/login", base_url="https://help.example.com",
                           headers={"Referer": "https://help.example.com/login"}, data={
        "email": "agent@example.test", "password": "correct horse battery", "remember": "y", "csrf_token": token})

    assert response.status_code == 302
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    for name in ("remember_token", "session"):
        assert "Secure" in cookies[name] and "HttpOnly" in cookies[name] and "SameSite=Lax" in cookies[name], name


def test_proxy_headers_are_believed_only_when_proxies_are_configured(other_app):
    def seen_by(app) -> str:
        @app.route("/_whoami")
        def whoami():
            from flask import request
            return f"{request.remote_addr} {request.scheme}"
        return app.test_client().get("/_whoami", headers={"X-Forwarded-For": "203.0.113.9",
                                                          "X-Forwarded-Proto": "https"}).get_data(as_text=True)

    assert seen_by(other_app()) == "127.0.0.1 http"
    assert seen_by(other_app(PROXY_COUNT=1)) == "203.0.113.9 https"


def test_a_new_sqlite_database_is_readable_by_its_owner_only(app_config, tmp_path):
    path = tmp_path / "instance" / "helpdesk.sqlite"
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "S3_ENDPOINT": None})
    with app.app_context():
        db.create_all()
        db.session.execute(db.text("SELECT 1"))
        db.session.remove()
        db.engine.dispose()

    for file in [path, *Path(path.parent).glob("helpdesk.sqlite-*")]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
