"""The helpdesk: a support mailbox turned into tickets, customers kept informed by mail."""
from __future__ import annotations

import logging

from dotenv import load_dotenv
from flask import Flask, render_template

from helpdesk import config as config_module
from helpdesk import notifications, security
from helpdesk.extensions import configure_sqlite, csrf, db, htmx, limiter, login_manager, migrate


def create_app(config: dict | None = None) -> Flask:
    """Build the app from the environment, with `config` overriding it (tests pass theirs)."""
    app = Flask(__name__, instance_relative_config=True)
    load_dotenv()
    app.config.from_mapping(config_module.from_environment(app.instance_path))
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024 * 1024)
    if config:
        app.config.update(config)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
        config_module.create_private_sqlite_file(app.config["SQLALCHEMY_DATABASE_URI"])
    security.init_app(app, config or {})

    db.init_app(app)
    with app.app_context():
        configure_sqlite(db.engine)
    migrate.init_app(app, db, directory=str(_migrations_dir()))
    csrf.init_app(app)
    # Sign-in counts live in Redis when there is one, so every console worker sees them.
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # Redis down: count in this process rather than refuse every sign-in.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"

    from helpdesk import models  # noqa: F401  (registers every table on the metadata)
    from helpdesk.models import Agent

    @login_manager.user_loader
    def load_agent(cookie_id: str):
        # "id:token": a cookie from before the last sign-out names an old token and loads no one.
        agent_id, _, token = cookie_id.partition(":")
        agent = db.session.get(Agent, int(agent_id)) if agent_id.isdigit() else None
        return agent if agent is not None and agent.has_session_token(token) else None

    _register_blueprints(app)
    notifications.connect()
    _register_jobs(app)
    _register_errors(app)
    _register_cli(app)
    _register_template_helpers(app)

    if not app.debug and not app.testing:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def _migrations_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "migrations"


def _register_blueprints(app: Flask) -> None:
    from helpdesk.admin_email.routes import bp as admin_email_bp
    from helpdesk.agents.routes import bp as agents_bp
    from helpdesk.auth.routes import bp as auth_bp
    from helpdesk.people.routes import bp as people_bp
    from helpdesk.tickets.routes import bp as tickets_bp

    for bp in (auth_bp, tickets_bp, people_bp, agents_bp, admin_email_bp):
        app.register_blueprint(bp)


def _register_errors(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    def page(code: int, title: str, message: str):
        return render_template("error.html", code=code, title=title, message=message), code

    app.register_error_handler(400, lambda e: page(400, "Bad request", getattr(e, "description", "")))
    app.register_error_handler(CSRFError, lambda e: page(
        400, "Form expired", "The form was missing its security token or it expired. Go back, reload and try again."))
    app.register_error_handler(403, lambda e: page(403, "Not allowed", "This page is for admins only."))
    app.register_error_handler(404, lambda e: page(404, "Not found", "There is nothing at this address."))
    app.register_error_handler(413, lambda e: page(413, "Too large", "The upload is larger than the server accepts."))
    app.register_error_handler(500, lambda e: page(500, "Something went wrong",
                                                   "The error was logged. Try again in a moment."))


def _register_jobs(app: Flask) -> None:
    import jobs

    # What the services ask for after a commit (mail to send, a mailbox to poll) runs as these jobs.
    jobs.init_app(app)


def _register_cli(app: Flask) -> None:
    from helpdesk.cli import register

    register(app)


def _register_template_helpers(app: Flask) -> None:
    from helpdesk import web
    from helpdesk.admin_email.oauth import settings_url
    from helpdesk.services import sign_in, watch

    # Called by the layout for admins only: the banner of a failing mail sign-in on every page.
    app.jinja_env.globals.update(page_url=web.page_url, sign_in_incidents=sign_in.incidents,
                                 describe_owner=sign_in.describe, sign_in_settings_url=settings_url,
                                 push_status=watch.push_status)

    # Not `config.COMPANY_NAME` in the templates: pages that pass a `config` of their own (the SMTP
    # settings) would hide Flask's.
    @app.context_processor
    def company() -> dict:
        name = app.config.get("COMPANY_NAME") or "Helpdesk"
        return {"company_name": name, "brand": name if name.endswith("Helpdesk") else f"{name} Helpdesk"}
    app.jinja_env.filters["when"] = web.format_when
    app.jinja_env.filters["filesize"] = web.format_size
