"""IMAP IDLE: a mail APPENDed to a watched folder becomes a ticket without waiting for a poll interval.

The watch follows the settings: mailboxes enabled, added or disabled while it runs, without a restart.
"""
import select
import threading
import time

from helpdesk.extensions import db
from helpdesk.mail.imap import ImapSession
from helpdesk.models import Mailbox, Ticket
from helpdesk.services.watch import Watch, push_status, watch_mailbox


def _mail(subject: str) -> bytes:
    return (f"From: Idle Customer <idle@customer.test>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@customer.test>\r\n\r\nPlease help.\r\n").encode()


def _wait_for(condition, limit: float = 60.0) -> bool:
    # A bound on a wait for an event, not a speed requirement: IDLE answers in about a second.
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        db.session.rollback()  # see what the watch's threads committed
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_watch_turns_new_mail_into_a_ticket_as_it_arrives(app, make_mailbox, imap, folder):
    mailbox = make_mailbox()
    mailbox.poll_interval = 3600  # no interval poll could be the one that picks it up
    db.session.commit()
    stop = threading.Event()
    done = []

    def watch():
        with app.app_context():
            watch_mailbox(mailbox.id, stop, idle_seconds=2)
            done.append(True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        with ImapSession(imap()) as session:
            session.append(folder, _mail("Arrived while watched"))

        def ticket_exists():
            db.session.rollback()
            return db.session.scalar(db.select(Ticket).filter_by(title="Arrived while watched")) is not None

        assert _wait_for(ticket_exists)
        with ImapSession(imap()) as session:  # and a second one on the same watch
            session.append(folder, _mail("Second while watched"))
        assert _wait_for(lambda: db.session.rollback() or db.session.scalar(
            db.select(Ticket).filter_by(title="Second while watched")) is not None)
    finally:
        stop.set()
        thread.join(30)
    assert done == [True] and not thread.is_alive()


def test_watch_of_a_disabled_mailbox_returns_at_once(app, make_mailbox):
    mailbox = make_mailbox()
    mailbox.enabled = False
    db.session.commit()
    watch_mailbox(mailbox.id, threading.Event())
    db.session.refresh(mailbox)
    assert mailbox.last_poll_at is None


def test_mail_announced_while_idle_ends_is_not_missed(imap, folder):
    with ImapSession(imap()) as watcher:
        watcher.select(folder, readonly=True)
        client = watcher.client

        def woken_by_something_else(timeout=None):
            # New mail arrives just as IDLE returns for another reason (a flag change, a timeout):
            # the server's EXISTS then comes in with the reply to DONE.
            with ImapSession(imap()) as other:
                other.append(folder, _mail("Arrived as IDLE ended"))
            # Wait (without reading) until the server has pushed its notice to this connection.
            assert select.select([client.socket()], [], [], 30)[0], "the server announced nothing"
            return []

        client.idle_check = woken_by_something_else
        assert watcher.wait_for_new_mail(5) is True


def test_mail_announced_with_the_idle_go_ahead_does_not_wait_for_the_timeout(imap, folder):
    with ImapSession(imap()) as watcher:
        watcher.select(folder, readonly=True)
        client = watcher.client
        real_idle = client.idle
        waited = []

        def idle_then_read_ahead():
            real_idle()
            # The announcement arrives right behind "+ idling", and imaplib's buffered reader
            # takes it in with that line: the socket has nothing more to signal.
            with ImapSession(imap()) as other:
                other.append(folder, _mail("Announced with the go-ahead"))
            assert select.select([client.socket()], [], [], 30)[0], "the server announced nothing"
            assert client._imap.file.peek(1)

        def idle_check(timeout=None):
            waited.append(timeout)  # a wait on the quiet socket would last the whole timeout
            return []

        client.idle, client.idle_check = idle_then_read_ahead, idle_check
        assert watcher.wait_for_new_mail(30) is True
        assert waited == []


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
