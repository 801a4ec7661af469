"""The IDLE watch follows the settings: mailboxes enabled, added or disabled while it runs, no restart."""
import threading
import time

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSession
from helpdesk.models import Mailbox, Ticket
from helpdesk.services.watch import Watch, push_status


def _mail(subject: str) -> bytes:
    return (f"From: Watched Customer <watched@customer.test>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@customer.test>\r\n\r\nPlease help.\r\n").encode()


def _wait_for(condition, limit: float = 60.0) -> bool:
    # A bound on a wait for an event, not a speed requirement.
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        db.session.rollback()
        if condition():
            return True
        time.sleep(0.2)
    return False


def _ticket(title: str) -> bool:
    return db.session.scalar(db.select(Ticket).filter_by(title=title)) is not None


def test_a_mailbox_enabled_while_the_watch_runs_is_watched_without_a_restart(app, make_mailbox, imap, folder):
    first = make_mailbox(name="Support", poll_interval=3600)
    with ImapSession(imap()) as session:
        session.create_folder(folder + ".sales")
    second = make_mailbox(name="Sales", folder=folder + ".sales", poll_interval=3600, enabled=False)
    stop = threading.Event()
    watch = Watch(app, stop, rescan=0.5)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: db.session.get(Mailbox, first.id).push_state == "watching")
        status = push_status(db.session.get(Mailbox, first.id))
        assert status.startswith("Watching (IDLE) since "), status
        assert push_status(db.session.get(Mailbox, second.id)) == "Off: the mailbox is disabled."

        second = db.session.get(Mailbox, second.id)
        second.enabled = True
        db.session.commit()
        assert _wait_for(lambda: db.session.get(Mailbox, second.id).push_state == "watching")
        with ImapSession(imap()) as session:
            session.append(folder + ".sales", _mail("Sales mail while watched"))
        assert _wait_for(lambda: _ticket("Sales mail while watched"))

        # Disabled while the watch runs: it is left alone (mail there waits for a poll or a re-enable).
        first = db.session.get(Mailbox, first.id)
        first.enabled = False
        db.session.commit()
        time.sleep(2)  # several rescans
        with ImapSession(imap()) as session:
            session.append(folder, _mail("Support mail while disabled"))
        with ImapSession(imap()) as session:
            session.append(folder + ".sales", _mail("Second sales mail"))
        assert _wait_for(lambda: _ticket("Second sales mail"))
        assert not _ticket("Support mail while disabled")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_without_a_running_watch_the_panel_says_polling_only(app, make_mailbox):
    mailbox = make_mailbox()
    assert push_status(mailbox) == "Polling only: the IDLE watch is not running (start “flask email watch”)."
