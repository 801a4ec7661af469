"""What every blueprint shares: access decorators, page-or-partial rendering, formatting."""
from __future__ import annotations

from datetime import datetime
from functools import wraps

from flask import abort, make_response, render_template, request, url_for
from flask_login import current_user, login_required


def agent_required(view):
    """Let in any signed-in, active agent."""
    return login_required(view)


def admin_required(view):
    """Let in admins only; other signed-in agents get 403."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def render_htmx(template: str, partial: str, **context):
    """Render the full page, or only its partial for an htmx request; the page includes the partial."""
    is_htmx = request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")
    response = make_response(render_template(partial if is_htmx else template, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def page_url(page: int) -> str:
    """Return the current URL with another page number, keeping the filters."""
    args = request.args.to_dict()
    args["page"] = page
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def format_when(value: datetime | None) -> str:
    """Show a stored UTC time the way lists show it."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M") + " UTC"


def format_size(size: int | None) -> str:
    """Show a byte count in human units."""
    size = size or 0
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"

