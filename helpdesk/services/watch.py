"""The IMAP IDLE watch: mail becomes a ticket as soon as the server announces it, for every enabled mailbox.

One thread per mailbox waits in IDLE and polls when mail arrives; the interval polls stay the
safety net. A supervisor re-reads the settings every RESCAN_SECONDS, so mailboxes added,
enabled, disabled or changed are watched (or left) without a restart. Each mailbox row keeps
the watch's own account of itself (push_state), which the status panel shows.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask
from sqlalchemy import case, update

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapError, ImapSession
from helpdesk.mail.secrets import CredentialError
from helpdesk.models import Mailbox, OAuthConnection
from helpdesk.models._time import utcnow
from helpdesk.services import mailboxes
from helpdesk.services.inbound import poll_mailbox

log = logging.getLogger(__name__)

IDLE_SECONDS = 300  # re-issue IDLE well inside the 29 minutes after which servers may drop it
RESCAN_SECONDS = 30.0  # how soon a settings change reaches the watch
NO_IDLE = "the server does not offer IDLE"


def watch_mailbox(mailbox_id: int, stop: threading.Event, *, idle_seconds: float = IDLE_SECONDS) -> None:
    """Poll the mailbox whenever the server announces new mail (IMAP IDLE), until `stop` is set.

    Servers without IDLE make this return at once. Errors back off and reconnect.
    """
    backoff = 5.0
    while not stop.is_set():
        try:
            mailbox = db.session.get(Mailbox, mailbox_id)
            if mailbox is None or not mailbox.enabled or not mailbox.host:
                return
            settings, folder = mailboxes.imap_settings(mailbox), mailbox.folder
            db.session.rollback()  # hold no transaction (or SQLite lock) while idling
            with ImapSession(settings) as session:
                if not session.can_idle:
                    log.info("mailbox %s: the server has no IDLE; interval polling only", mailbox_id)
                    _record(mailbox_id, "polling", NO_IDLE)
                    return
                session.select(folder, readonly=True)
                poll_mailbox(mailbox_id)  # whatever came while nobody watched
                _record(mailbox_id, "watching")
                backoff = 5.0
                while not stop.is_set():
                    if session.wait_for_new_mail(idle_seconds):
                        poll_mailbox(mailbox_id)
        except (ImapError, CredentialError) as exc:
            db.session.rollback()
            log.warning("mailbox %s: IDLE watch stopped (%s); retrying in %.0fs", mailbox_id, exc, backoff)
            _record(mailbox_id, "reconnecting", f"{exc} — next try in {backoff:.0f} s")
            stop.wait(backoff)
            backoff = min(backoff * 2, 300.0)


def _record(mailbox_id: int, state: str, note: str = "") -> None:
    """Write the watch's state on the mailbox row; `push_since` moves only when the state changes."""
    now = utcnow()
    db.session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(
        push_state=state, push_note=note[:1000], push_seen_at=now,
        push_since=case((Mailbox.push_state == state, Mailbox.push_since), else_=now),
    ).execution_options(synchronize_session=False))
    db.session.commit()


@dataclass
class _Watcher:
    """One mailbox's IDLE thread and the settings it was started with."""

    fingerprint: tuple
    stop: threading.Event
    thread: threading.Thread
    returned: bool = False  # it ended by itself (no IDLE on the server): not again until the settings change


class Watch:
    """Keep one IDLE thread per enabled mailbox, following the settings while it runs."""

    def __init__(self, app: Flask, stop: threading.Event, *, rescan: float = RESCAN_SECONDS,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.app, self.stop = app, stop
        self.rescan, self.idle_seconds = rescan, idle_seconds
        self._watchers: dict[int, _Watcher] = {}

    def run(self) -> None:
        """Follow the settings until `stop` is set; then stop every mailbox's thread."""
        try:
            while not self.stop.is_set():
                try:
                    self.sync()
                except Exception:  # noqa: BLE001 - the database may be away for a while; try again
                    log.exception("IDLE watch: cannot read the mailboxes; trying again in %.0f s", self.rescan)
                self.stop.wait(self.rescan)
        finally:
            for watcher in self._watchers.values():
                watcher.stop.set()

    def sync(self) -> int:
        """Start threads for newly enabled or changed mailboxes, stop those of disabled ones; return how many."""
        with self.app.app_context():
            wanted = {row.id: tuple(row[1:]) for row in db.session.execute(
                db.select(Mailbox.id, Mailbox.updated_at, Mailbox.auth_method, OAuthConnection.connected_at)
                .outerjoin(OAuthConnection, Mailbox.oauth_connection_id == OAuthConnection.id)
                .where(Mailbox.enabled.is_(True), Mailbox.host != ""))}
            for mailbox_id, watcher in list(self._watchers.items()):
                changed = wanted.get(mailbox_id) != watcher.fingerprint
                if changed or not (watcher.thread.is_alive() or watcher.returned):
                    watcher.stop.set()  # heard within one IDLE round (at most `rescan` seconds)
                    del self._watchers[mailbox_id]
            for mailbox_id, fingerprint in wanted.items():
                if mailbox_id not in self._watchers:
                    self._watchers[mailbox_id] = self._start(mailbox_id, fingerprint)
            if wanted:
                # The watch's sign of life: the status panel tells a running watch from none.
                db.session.execute(update(Mailbox).where(Mailbox.id.in_(list(wanted))).values(push_seen_at=utcnow())
                                   .execution_options(synchronize_session=False))
                db.session.commit()
        return len(wanted)

    def _start(self, mailbox_id: int, fingerprint: tuple) -> _Watcher:
        stop = threading.Event()
        # The IDLE round is cut to `rescan` seconds so that a stop is heard that soon.
        idle = min(self.idle_seconds, self.rescan)

        def run() -> None:
            with self.app.app_context():
                watch_mailbox(mailbox_id, stop, idle_seconds=idle)
            watcher.returned = True

        watcher = _Watcher(fingerprint, stop, threading.Thread(target=run, name=f"imap-idle-{mailbox_id}", daemon=True))
        watcher.thread.start()
        return watcher


def start_watch(app: Flask, stop: threading.Event, **options) -> tuple[Watch, threading.Thread]:
    """Start the watch in a thread of its own (for `flask email watch` and `make run`)."""
    watch = Watch(app, stop, **options)
    thread = threading.Thread(target=watch.run, name="imap-idle-watch", daemon=True)
    thread.start()
    return watch, thread


def push_status(mailbox: Mailbox) -> str:
    """Say in words whether mail on this mailbox is pushed (IDLE) or only polled, and why."""
    if not mailbox.enabled:
        return "Off: the mailbox is disabled."
    stale = mailbox.push_seen_at is None or utcnow() - mailbox.push_seen_at > timedelta(seconds=3 * RESCAN_SECONDS)
    if stale:
        return "Polling only: the IDLE watch is not running (start “flask email watch”)."
    if mailbox.push_state == "watching":
        return f"Watching (IDLE) since {mailbox.push_since:%Y-%m-%d %H:%M} UTC."
    if mailbox.push_state == "reconnecting":
        return f"Reconnecting: {mailbox.push_note}"
    if mailbox.push_state == "polling":
        return f"Polling only: {mailbox.push_note}."
    return "Starting the IDLE watch…"
