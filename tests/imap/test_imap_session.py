"""ImapSession against the real Dovecot: connecting, reading new mail, marking it done."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from imapclient.imapclient import IMAPlibLoggerAdapter

from helpdesk.mail.imap import ImapError, ImapSession, ImapSettings

SEEN = b"\\Seen"


def append_all(settings, folder, messages) -> list[int]:
    with ImapSession(settings) as session:
        return [session.append(folder, raw) for raw in messages]


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_connects_and_logs_in_with_each_security_mode(services, imap_settings, folder, security):
    port = services["HELPDESK_TEST_IMAPS_PORT" if security == "ssl" else "HELPDESK_TEST_IMAP_PORT"]
    settings = imap_settings(security=security, port=int(port))
    with ImapSession(settings) as session:
        assert session.greeting.startswith("* OK")
        assert folder in session.list_folders()
        assert "INBOX" in session.list_folders()
        # The TLS modes really run over TLS, the plain one really does not.
        wrapped = hasattr(session.client.socket(), "cipher")
        assert wrapped is (security != "none")
    assert session.client is None


def test_tls_uses_host_name_checks_on_a_name_in_the_certificate(services, imap_settings):
    settings = imap_settings(host="localhost", security="ssl", port=int(services["HELPDESK_TEST_IMAPS_PORT"]))
    with ImapSession(settings) as session:
        assert session.client.socket().getpeercert()["subject"] == ((("commonName", "localhost"),),)


def test_unverified_tls_is_possible_only_when_asked(services, imap_settings):
    port = int(services["HELPDESK_TEST_IMAPS_PORT"])
    with pytest.raises(ImapError) as caught:
        with ImapSession(imap_settings(security="ssl", port=port, ca_file=None)):
            pass
    assert caught.value.kind == "tls_cert"
    with ImapSession(imap_settings(security="ssl", port=port, ca_file=None, verify_tls=False)) as session:
        assert session.list_folders()


def test_a_changed_ca_file_is_read_again(services, imap_settings, tmp_path):
    # TLS contexts are reused between connections; one built from an older CA file must not be.
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(Path(services["HELPDESK_TEST_CA"]).read_bytes())
    settings = imap_settings(security="ssl", port=int(services["HELPDESK_TEST_IMAPS_PORT"]), ca_file=str(ca_file))
    with ImapSession(settings) as session:
        assert session.list_folders()
    ca_file.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())  # no longer names our CA
    with pytest.raises(ImapError) as caught:
        with ImapSession(settings):
            pass
    assert caught.value.kind == "tls_cert"


def test_xoauth2_token_logs_in(services, imap_settings, folder):
    settings = imap_settings(security="ssl", port=int(services["HELPDESK_TEST_IMAPS_PORT"]),
                             password="", oauth_token="tok-support")
    with ImapSession(settings) as session:
        assert folder in session.list_folders()


def test_unknown_xoauth2_token_is_an_auth_error(imap_settings):
    settings = imap_settings(password="", oauth_token="tok-nobody")
    with pytest.raises(ImapError) as caught:
        with ImapSession(settings):
            pass
    assert caught.value.kind == "auth"
    assert "tok-nobody" not in str(caught.value)


def test_settings_repr_hides_secrets(imap_settings):
    settings = imap_settings(password="s3cret-pw", oauth_token="s3cret-token")
    assert "s3cret" not in repr(settings)
    assert "support@example.test" in repr(settings)


def test_unknown_security_mode_is_refused():
    with pytest.raises(ValueError):
        ImapSettings(host="localhost", security="tls")


def test_select_reports_uidvalidity_uidnext_and_count(imap_settings, folder, make_message):
    uids = append_all(imap_settings(), folder, [make_message(n) for n in range(3)])
    with ImapSession(imap_settings()) as session:
        state = session.select(folder)
        again = session.select(folder, readonly=True)
    assert state.exists == 3
    assert state.uidvalidity > 0
    assert state.uidnext == max(uids) + 1
    assert again == state


def test_uidvalidity_changes_when_the_folder_is_recreated(imap_settings, folder):
    with ImapSession(imap_settings()) as session:
        first = session.select(folder).uidvalidity
        session.delete_folder(folder)
        session.create_folder(folder)
        second = session.select(folder).uidvalidity
    assert first != second


def test_missing_folder_raises_folder_error(imap_settings, folder):
    with ImapSession(imap_settings()) as session:
        with pytest.raises(ImapError) as caught:
            session.select(folder + ".missing")
    assert caught.value.kind == "folder"
    assert "exist" in caught.value.server_reply


def test_fetch_since_zero_returns_every_message_in_order_with_exact_bytes(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(5)]
    uids = append_all(imap_settings(), folder, messages)
    assert uids == sorted(uids)
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        got = list(session.fetch_since(0, batch=2))
        flags = session.client.get_flags(uids)
    assert [uid for uid, _ in got] == uids
    assert [raw for _, raw in got] == messages
    # BODY.PEEK[] leaves the messages unread for the humans who also read this mailbox.
    assert all(SEEN not in f for f in flags.values())


def test_fetch_since_last_uid_returns_only_newer_messages(imap_settings, folder, make_message):
    old = append_all(imap_settings(), folder, [make_message(n) for n in range(2)])
    newer_messages = [make_message(n) for n in range(2, 5)]
    newer = append_all(imap_settings(), folder, newer_messages)
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        assert session.search_uids_since(old[-1]) == newer
        got = list(session.fetch_since(old[-1]))
    assert got == list(zip(newer, newer_messages))


def test_uid_range_star_does_not_return_the_last_message_again(imap_settings, folder, make_message):
    uids = append_all(imap_settings(), folder, [make_message(n) for n in range(3)])
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        # The server answers "UID n:*" with the highest message even when its UID is below n.
        raw = session.client.search(["UID", f"{uids[-1] + 1}:*"])
        assert raw == [uids[-1]]
        assert session.search_uids_since(uids[-1]) == []
        assert list(session.fetch_since(uids[-1])) == []
        assert session.search_uids_since(uids[-1] + 50) == []
        assert list(session.fetch_since(uids[-1] + 50)) == []


def test_fetch_uids_returns_the_asked_messages_and_skips_vanished_ones(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(4)]
    uids = append_all(imap_settings(), folder, messages)
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        got = list(session.fetch_uids([uids[3], uids[1], uids[3] + 100]))
    assert got == [(uids[1], messages[1]), (uids[3], messages[3])]


def test_fetch_uids_can_name_the_vanished_ones(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(2)]
    uids = append_all(imap_settings(), folder, messages)
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        got = list(session.fetch_uids([uids[1], uids[1] + 100, uids[0]], missing=True))
    assert got == [(uids[0], messages[0]), (uids[1], messages[1]), (uids[1] + 100, None)]


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
def test_the_protocol_log_writes_out_fetched_mail_only_when_it_is_wanted(imap_settings, folder, make_message,
                                                                           caplog, monkeypatch, level):
    message = make_message(1)
    append_all(imap_settings(), folder, [message])
    subject = message.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
    written = []  # what imaplib formatted for the log, whether or not the logger kept it
    monkeypatch.setattr(IMAPlibLoggerAdapter, "debug", lambda self, text, *args: written.append(text))
    with caplog.at_level(level, logger="imapclient.imaplib"):
        with ImapSession(imap_settings()) as session:
            session.select(folder)
            assert [raw for _, raw in session.fetch_since(0)] == [message]
    if level == logging.DEBUG:
        assert any(subject in text for text in written)
    else:
        assert written == []  # formatting each mail only to drop it cost half a FETCH's CPU


def test_fetch_in_an_empty_folder_yields_nothing(imap_settings, folder):
    with ImapSession(imap_settings()) as session:
        state = session.select(folder)
        assert state.exists == 0
        assert list(session.fetch_since(0)) == []


def test_mark_done_seen_is_visible_to_another_connection(imap_settings, folder, make_message):
    uids = append_all(imap_settings(), folder, [make_message(n) for n in range(3)])
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        session.mark_done(uids[:2], "seen")
    with ImapSession(imap_settings()) as other:
        other.select(folder)
        flags = other.client.get_flags(uids)
    assert SEEN in flags[uids[0]] and SEEN in flags[uids[1]]
    assert SEEN not in flags[uids[2]]


def test_mark_done_move_creates_the_target_and_moves(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(3)]
    uids = append_all(imap_settings(), folder, messages)
    target = folder + ".Done"
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        session.mark_done(uids[:2], "move", folder=target)
    with ImapSession(imap_settings()) as other:
        assert target in other.list_folders()
        other.select(folder)
        assert [raw for _, raw in other.fetch_since(0)] == [messages[2]]
        other.select(target)
        assert [raw for _, raw in other.fetch_since(0)] == messages[:2]


def test_mark_done_move_into_an_existing_folder(imap_settings, folder, make_message):
    uids = append_all(imap_settings(), folder, [make_message(1)])
    target = folder + ".Processed"
    with ImapSession(imap_settings()) as session:
        session.create_folder(target)
        session.create_folder(target)  # a second create of an existing folder is harmless
        session.select(folder)
        session.move(uids, target)
        assert session.select(target).exists == 1


def test_mark_done_delete_expunges_only_those_messages(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(3)]
    uids = append_all(imap_settings(), folder, messages)
    with ImapSession(imap_settings()) as other:
        # Someone else flagged a message \Deleted without expunging; it must survive our delete.
        other.select(folder)
        other.client.add_flags([uids[2]], [b"\\Deleted"])
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        session.mark_done([uids[0]], "delete")
    with ImapSession(imap_settings()) as other:
        state = other.select(folder)
        assert state.exists == 2
        assert [uid for uid, _ in other.fetch_since(0)] == uids[1:]


def test_mark_done_rejects_unknown_modes(imap_settings, folder):
    with ImapSession(imap_settings()) as session:
        session.select(folder)
        with pytest.raises(ValueError):
            session.mark_done([1], "archive")
        with pytest.raises(ValueError):
            session.mark_done([1], "move")


def test_append_with_flags(imap_settings, folder, make_message):
    with ImapSession(imap_settings()) as session:
        uid = session.append(folder, make_message(1), flags=[b"\\Seen"])
        session.select(folder)
        assert SEEN in session.client.get_flags([uid])[uid]


def test_two_users_do_not_see_each_other(imap_settings, folder):
    with ImapSession(imap_settings(username="billing@example.test", password="billingpw")) as session:
        assert folder not in session.list_folders()


def test_move_and_delete_without_move_or_uidplus(imap_settings, folder, make_message):
    messages = [make_message(n) for n in range(3)]
    uids = append_all(imap_settings(), folder, messages)
    target = folder + ".Done"
    with ImapSession(imap_settings()) as session:
        assert {"MOVE", "UIDPLUS"} <= session.capabilities
        # Act as for an older server: the real Dovecot then gets COPY, STORE \Deleted and EXPUNGE.
        session.capabilities = session.capabilities - {"MOVE", "UIDPLUS"}
        session.select(folder)
        session.mark_done([uids[0]], "move", folder=target)
        session.mark_done([uids[1]], "delete")
    with ImapSession(imap_settings()) as other:
        other.select(folder)
        assert list(other.fetch_since(0)) == [(uids[2], messages[2])]
        other.select(target)
        assert [raw for _, raw in other.fetch_since(0)] == [messages[0]]
