"""What every response of the console carries for the browser's protection: cookie flags, headers, the proxy."""
from __future__ import annotations

from flask import Flask, Response, g
from werkzeug.middleware.proxy_fix import ProxyFix

# Scripts only from our own static files; styles may be inline (style attributes, htmx's indicator style).
# Images from ourselves and data: URLs: a remote image in a mail loads only after "Show remote images".
_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def allow_remote_images() -> None:
    """Let this response's page load images from other sites (the agent asked to see a mail's remote images)."""
    g.allow_remote_images = True


def content_security_policy(remote_images: bool = False) -> str:
    """Return the Content-Security-Policy of the console's pages."""
    policy = dict(_POLICY)
    if remote_images:
        policy["img-src"] += " https: http:"
    return "; ".join(f"{name} {value}" for name, value in policy.items())


def _set_headers(response: Response) -> Response:
    headers = response.headers
    # Downloads set a stricter policy of their own (a sandbox); keep it.
    headers.setdefault("Content-Security-Policy", content_security_policy(g.get("allow_remote_images", False)))
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    # Ticket URLs name customers' issues: never hand them to another site.
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask, overrides: dict) -> None:
    """Set the cookie flags from PUBLIC_BASE_URL, trust the configured proxies, add the headers to every response."""
    secure = app.config["PUBLIC_BASE_URL"].lower().startswith("https://")
    cookie_flags = {
        "SESSION_COOKIE_SECURE": secure, "REMEMBER_COOKIE_SECURE": secure,
        "SESSION_COOKIE_HTTPONLY": True, "REMEMBER_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax", "REMEMBER_COOKIE_SAMESITE": "Lax",
    }
    for name, value in cookie_flags.items():
        if name not in overrides:
            app.config[name] = value
    proxies = int(app.config.get("PROXY_COUNT") or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    app.after_request(_set_headers)
