"""Command-line tools: `flask users`, `flask demo`, `flask tickets`, `flask email`, `flask search`."""
from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from helpdesk.extensions import db
from helpdesk.models import Agent, Ticket

users = AppGroup("users", help="Manage agents.")
tickets = AppGroup("tickets", help="Look at tickets.")
demo = AppGroup("demo", help="Demo data for a first look.")
email = AppGroup("email", help="Mail in and out.")
search = AppGroup("search", help="The full-text search index.")


@users.command("create-admin")
@click.argument("email_address")
@click.option("--password", help="Password to set; a random one is generated and printed when omitted.")
@click.option("--name", default="Admin", show_default=True)
def create_admin(email_address: str, password: str | None, name: str) -> None:
    """Create an admin (or make an existing agent admin and reset the password)."""
    password = password or secrets.token_urlsafe(12)
    agent = db.session.scalar(db.select(Agent).filter_by(email=email_address.strip().lower()))
    if agent is None:
        agent = Agent(email=email_address, name=name)
        db.session.add(agent)
    agent.role, agent.active = "admin", True
    agent.set_password(password)
    db.session.commit()
    click.echo(f"Admin {agent.email} ready. Password: {password}")


@tickets.command("show")
@click.argument("ticket_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_ticket(ticket_id: int, as_json: bool) -> None:
    """Print a ticket with its comments and attachments (ID is the database id)."""
    ticket = db.session.get(Ticket, ticket_id)
    if ticket is None:
        raise click.ClickException(f"No ticket with id {ticket_id}")
    data = ticket_as_dict(ticket)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"#{data['number']} [{data['status']}] {data['title']}")
    click.echo(f"Contact: {data['contact']}  Customer: {data['customer']}")
    click.echo(data["description"])
    for c in data["comments"]:
        click.echo(f"--- {c['author']} ({'public' if c['public'] else 'internal'}, {c['source']})\n{c['body']}")


def ticket_as_dict(ticket: Ticket) -> dict:
    """Return the ticket as plain data, for `tickets show --json` and tests."""
    return {
        "id": ticket.id, "number": ticket.number, "title": ticket.title, "description": ticket.description,
        "status": ticket.status, "priority": ticket.priority,
        "contact": {"name": ticket.contact.name, "email": ticket.contact.email} if ticket.contact else None,
        "customer": ticket.customer.name if ticket.customer else None,
        "comments": [{"public": c.public, "author": c.author_name, "body": c.body_text, "source": c.source,
                      "message_id": c.message_id} for c in ticket.comments],
        "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size,
                         "sha256": a.sha256, "inline": a.inline, "content_id": a.content_id}
                        for a in ticket.attachments],
    }


@demo.command("seed")
@click.option("--admin-email", default="admin@example.com", show_default=True)
def seed_demo(admin_email: str) -> None:
    """Fill an empty database with a demo admin and demo data; print the login."""
    from flask import current_app

    from helpdesk.services.demo import seed

    # The demo login is kept beside the database so every `make run` can print it again.
    saved = Path(current_app.instance_path) / "demo-login.txt"
    login = seed(admin_email)
    if login is not None:
        saved.write_text(f"{login[0]} {login[1]}\n")
        saved.chmod(0o600)
    elif saved.exists():
        login = tuple(saved.read_text().split())
    if login is None:
        click.echo("The database already has agents: no demo data added.")
    else:
        click.echo(f"Demo admin: {login[0]}  password: {login[1]}")


@email.command("ingest")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
def ingest_files(files: tuple[str, ...]) -> None:
    """Turn raw mails (FILEs, or stdin when none or "-") into tickets and comments; print one JSON line per mail."""
    from helpdesk.services.ingest import ingest_mail

    unreadable = 0
    for name in files or ("-",):
        try:
            with click.open_file(name, "rb") as stream:
                raw = stream.read()
        except OSError as exc:
            unreadable += 1
            click.echo(json.dumps({"file": name, "message_id": None, "outcome": "unreadable", "ticket_id": None,
                                   "reason": f"cannot read the file: {exc.strerror or exc}"}, ensure_ascii=False))
            continue
        # Quarantined mails are recorded with their raw bytes: not a failure of this command.
        result = ingest_mail(raw, channel="cli")
        click.echo(json.dumps({"file": name, **result.summary()}, ensure_ascii=False))
    _finish_queued_jobs()
    if unreadable:
        raise click.ClickException(f"{unreadable} file(s) could not be read; nothing was done with them")


@search.command("reindex")
def search_reindex() -> None:
    """Rebuild the search documents of tickets, comments, files, contacts and the mail logs."""
    from helpdesk import search as ticket_search

    ticket_search.reindex()
    click.echo("Search index rebuilt.")


def register(app: Flask) -> None:
    """Add the command groups to the app's CLI."""
    for group in (users, tickets, demo, email, search, serve):
        app.cli.add_command(group)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, envvar="PORT")
def serve(host: str, port: int) -> None:
    """Serve the console; without REDIS_URL, run the background jobs in this process too."""
    from flask import current_app

    from helpdesk.services.watch import start_watch

    app = current_app._get_current_object()
    if not app.config["REDIS_URL"]:
        from jobs import runner

        runner(app).start_recurring()
        start_watch(app, threading.Event())
        click.echo("Background jobs: in-process (no REDIS_URL); IMAP IDLE on every enabled mailbox.")
    else:
        click.echo("Background jobs: RQ on REDIS_URL — run `rq worker` and `rq cron jobs/cron.py`.")
    from werkzeug.serving import run_simple

    click.echo(f"Console on http://{host}:{port}")
    run_simple(host, port, app, use_reloader=False, threaded=True)


@email.command("poll")
@click.option("--mailbox", "mailbox_id", type=int, help="Poll only this mailbox (by id), even when it is disabled.")
def poll_mailboxes(mailbox_id: int | None) -> None:
    """Poll the enabled mailboxes once now; print one JSON line per mail processed."""
    from helpdesk.models import Mailbox
    from helpdesk.services.inbound import poll_mailbox

    if mailbox_id is not None:
        if db.session.get(Mailbox, mailbox_id) is None:
            raise click.ClickException(f"No mailbox with id {mailbox_id}")
        ids = [mailbox_id]
    else:
        ids = list(db.session.scalars(db.select(Mailbox.id).where(Mailbox.enabled.is_(True)).order_by(Mailbox.id)))
    failed = 0
    for each in ids:
        def line(uid, result, each=each):
            click.echo(json.dumps({"mailbox": each, "uid": uid, "file": None, "message_id": result.message_id,
                                   "outcome": result.outcome, "ticket_id": result.ticket_id,
                                   "reason": result.reason}, ensure_ascii=False))

        report = poll_mailbox(each, on_result=line)
        if not report.ok:
            click.echo(f"mailbox {each}: {report.summary}", err=True)
            if not report.skipped:  # "another poll is running" is not a failure
                failed += 1
    _finish_queued_jobs()
    if failed:
        raise click.ClickException(f"{failed} mailbox poll(s) failed")


def _finish_queued_jobs() -> None:
    """Wait for the jobs this command queued (confirmation mails): without Redis, a thread of this process runs them."""
    from flask import current_app

    from helpdesk.services import background

    seconds = current_app.config["JOBS_WAIT_SECONDS"]
    if not background.wait_for_queued(seconds):
        click.echo(f"Background jobs still running after {seconds:g} s (JOBS_WAIT_SECONDS) stop with this command; "
                   "the recurring outbox sweep sends the mail they did not.", err=True)


@email.command("watch")
def watch_mailboxes() -> None:
    """Wait on every enabled mailbox with IMAP IDLE and poll as soon as mail arrives (runs until stopped)."""
    from flask import current_app

    from helpdesk.services.watch import RESCAN_SECONDS, Watch

    stop = threading.Event()
    watch = Watch(current_app._get_current_object(), stop)
    click.echo(f"Watching every enabled mailbox with IMAP IDLE (settings re-read every {RESCAN_SECONDS:.0f} s); "
               "Ctrl+C stops.")
    try:
        watch.run()
    except KeyboardInterrupt:
        stop.set()
