"""Admin → Settings → Email → Inbound (IMAP): saving, write-only password, validation, tests against Dovecot."""
from __future__ import annotations

import html as html_module
import re

import pytest

from helpdesk.extensions import db
from helpdesk.mail.secrets import CredentialBox
from helpdesk.models import Mailbox

HTMX = {"HX-Request": "true"}
BASE = "/admin/settings/email/inbound"


def form_values(services, folder, **overrides) -> dict:
    values = {"name": "Support", "host": "127.0.0.1", "port": services["HELPDESK_TEST_IMAPS_PORT"],
              "security": "ssl", "username": "support@example.test", "password": "supportpw", "folder": folder,
              "poll_interval": "120", "enabled": "y", "after_processing": "seen", "move_to_folder": "",
              "reply_from_address": "support@example.test", "verify_tls": "y"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def only_mailbox() -> Mailbox:
    db.session.expire_all()
    [mailbox] = db.session.scalars(db.select(Mailbox)).all()
    return mailbox


def field_errors(html: str, field: str) -> str:
    """Return the text of the field's wrapper (label, input and the errors beside it)."""
    match = re.search(rf'<div class="field has-error[^"]*" id="field-{field}">(.*?)</div>', html, re.S)
    return html_module.unescape(match.group(1)) if match else ""


def add_blank_mailbox() -> Mailbox:
    """Add the disabled, unconfigured "Support" mailbox an admin starts from."""
    mailbox = Mailbox(name="Support", host="", enabled=False)
    db.session.add(mailbox)
    db.session.commit()
    return mailbox


def test_page_shows_a_new_mailbox_form_and_writes_nothing(admin_client):
    page = admin_client.get(BASE)

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<title>Inbound (IMAP)" in html and "<h1>Inbound (IMAP)</h1>" in html
    for label in ("Host", "Port", "Username", "Password", "Mailbox"):
        assert re.search(rf"<label for=\"\w+\">{label}</label>", html), label
    assert "New mailbox" in html and f'action="{BASE}/new"' in html
    assert 'value="Support"' in html and 'value="INBOX"' in html and 'value="120"' in html
    assert "Microsoft 365" in html and "OAuth" in html and "App Password" in html
    # A GET only shows: the mailbox exists once the admin saves it.
    assert db.session.scalar(db.select(db.func.count(Mailbox.id))) == 0


def test_page_shows_the_first_mailbox_and_its_poll_status(admin_client):
    mailbox = add_blank_mailbox()

    html = admin_client.get(BASE).get_data(as_text=True)

    assert f'action="{BASE}/{mailbox.id}"' in html
    assert 'hx-trigger="every 10s"' in html and "Poll now" in html
    assert db.session.scalar(db.select(db.func.count(Mailbox.id))) == 1


def test_a_full_page_load_of_the_status_url_shows_the_whole_page(admin_client):
    mailbox = add_blank_mailbox()

    page = admin_client.get(f"{BASE}/{mailbox.id}/status")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Inbound (IMAP)</h1>" in html and 'id="inbound-status"' in html and 'id="inbound-form"' in html


def test_agents_get_403_everywhere(agent_client, app):
    mailbox = Mailbox(name="Support")
    db.session.add(mailbox)
    db.session.commit()
    for url in (BASE, f"{BASE}/{mailbox.id}", f"{BASE}/log", f"{BASE}/{mailbox.id}/status"):
        assert agent_client.get(url).status_code == 403, url
    for url in (f"{BASE}/{mailbox.id}", f"{BASE}/{mailbox.id}/test", f"{BASE}/{mailbox.id}/folders",
                f"{BASE}/{mailbox.id}/poll", f"{BASE}/{mailbox.id}/delete"):
        assert agent_client.auth.post(url, form_values({"HELPDESK_TEST_IMAPS_PORT": "993"}, "INBOX")).status_code \
            == 403, url
    assert db.session.get(Mailbox, mailbox.id) is not None


def test_save_stores_the_password_encrypted_and_never_shows_it(admin_client, admin, app, services, folder):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id

    saved = admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, folder, password="s3cret-Imap-pw"),
                                   follow_redirects=True)

    html = saved.get_data(as_text=True)
    assert saved.status_code == 200 and "Mailbox “Support” saved." in html
    assert "s3cret-Imap-pw" not in html
    assert "A password is stored" in html
    mailbox = only_mailbox()
    assert (mailbox.host, mailbox.port, mailbox.folder, mailbox.enabled) == (
        "127.0.0.1", int(services["HELPDESK_TEST_IMAPS_PORT"]), folder, True)
    assert "s3cret-Imap-pw" not in mailbox.password_encrypted
    assert CredentialBox(app.config["CREDENTIALS_KEY"]).open(mailbox.password_encrypted) == "s3cret-Imap-pw"
    assert mailbox.updated_by_id == admin.id and mailbox.updated_at is not None

    # A blank password keeps the stored one.
    admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, folder, password="", poll_interval="300"))
    mailbox = only_mailbox()
    assert mailbox.poll_interval == 300
    assert CredentialBox(app.config["CREDENTIALS_KEY"]).open(mailbox.password_encrypted) == "s3cret-Imap-pw"


def test_changing_the_folder_resets_the_uid_checkpoint(admin_client, services, folder):
    add_blank_mailbox()
    mailbox = only_mailbox()
    admin_client.auth.post(f"{BASE}/{mailbox.id}", form_values(services, "INBOX"))
    mailbox = only_mailbox()
    mailbox.uidvalidity, mailbox.last_uid = 1234, 99
    db.session.commit()
    admin_client.auth.post(f"{BASE}/{mailbox.id}", form_values(services, "INBOX", password="", poll_interval="60"))
    assert only_mailbox().poll_interval == 60
    assert (only_mailbox().uidvalidity, only_mailbox().last_uid) == (1234, 99)

    admin_client.auth.post(f"{BASE}/{mailbox.id}", form_values(services, folder, password=""))

    assert (only_mailbox().uidvalidity, only_mailbox().last_uid) == (None, 0)


@pytest.mark.parametrize("field, value, message", [
    ("port", "70000", "The port is a number from 1 to 65535."),
    ("port", "", "Enter the port"),
    ("poll_interval", "10", "Poll at most every 30 seconds"),
    ("host", "https://imap.example.com", "Enter only the server name"),
    ("host", "", "Enter the IMAP server's host name to enable polling."),
    ("move_to_folder", "", "Name the folder processed mail is moved to"),
    ("reply_from_address", "not an address", ""),
])
def test_validation_messages_are_shown_beside_the_field(admin_client, services, field, value, message):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id
    overrides = {field: value}
    if field == "move_to_folder":
        overrides["after_processing"] = "move"

    page = admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, "INBOX", **overrides))

    assert page.status_code == 200
    beside = field_errors(page.get_data(as_text=True), field)
    assert 'class="error"' in beside and message in beside
    assert only_mailbox().host == ""  # nothing saved


def test_a_disabled_mailbox_may_be_saved_half_filled(admin_client, services):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id
    admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, "INBOX", enabled=None, host="", password=""))
    assert only_mailbox().enabled is False


def test_test_connection_partial_succeeds_against_dovecot(admin_client, services, folder):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id

    result = admin_client.auth.post(f"{BASE}/{mailbox_id}/test", form_values(services, folder), headers=HTMX)

    html = result.get_data(as_text=True)
    assert result.status_code == 200
    assert html.lstrip().startswith('<div id="inbound-test-result"') and "<html" not in html
    assert "Connection works" in html and f"{folder} has 0 messages" in html
    assert "supportpw" not in html
    assert only_mailbox().host == ""  # testing saves nothing


def test_test_connection_diagnoses_a_wrong_password(admin_client, services, folder):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id

    result = admin_client.auth.post(f"{BASE}/{mailbox_id}/test", form_values(services, folder, password="wrong-pw-42"),
                                    headers=HTMX)

    html = result.get_data(as_text=True)
    assert "Connection failed" in html and "refused the login" in html
    assert "wrong-pw-42" not in html


def test_test_connection_uses_the_stored_password_only_for_the_same_server(admin_client, services, folder):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id
    admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, folder))

    same = admin_client.auth.post(f"{BASE}/{mailbox_id}/test", form_values(services, folder, password=""),
                                  headers=HTMX)
    other = admin_client.auth.post(f"{BASE}/{mailbox_id}/test",
                                   form_values(services, folder, password="", host="localhost"), headers=HTMX)

    assert "Connection works" in same.get_data(as_text=True)
    assert "type the password again" in other.get_data(as_text=True)


def test_test_connection_without_htmx_renders_the_whole_page(admin_client, services, folder):
    add_blank_mailbox()
    page = admin_client.auth.post(f"{BASE}/{only_mailbox().id}/test", form_values(services, folder))
    html = page.get_data(as_text=True)
    assert "<h1>Inbound (IMAP)</h1>" in html and "Connection works" in html
    assert 'value="supportpw"' not in html


def test_load_folders_lists_the_servers_folders(admin_client, services, folder):
    add_blank_mailbox()

    result = admin_client.auth.post(f"{BASE}/{only_mailbox().id}/folders", form_values(services, folder),
                                    headers=HTMX)

    html = result.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="inbound-folders"')
    assert f'<option value="{folder}"' in html and '<option value="INBOX"' in html
    assert 'datalist id="folder-options"' in html


def test_load_folders_explains_a_failure(admin_client, services, folder):
    add_blank_mailbox()
    result = admin_client.auth.post(f"{BASE}/{only_mailbox().id}/folders",
                                    form_values(services, folder, port="1", password="x"), headers=HTMX)
    html = result.get_data(as_text=True)
    assert "Cannot list folders" in html and "refused the connection" in html


def test_status_panel_refreshes_itself_and_poll_now_runs_a_poll(admin_client, services, folder, append,
                                                                customer_mail):
    add_blank_mailbox()
    mailbox_id = only_mailbox().id
    admin_client.auth.post(f"{BASE}/{mailbox_id}", form_values(services, folder))
    append(customer_mail(1), customer_mail(2))

    panel = admin_client.get(f"{BASE}/{mailbox_id}/status", headers=HTMX).get_data(as_text=True)
    assert panel.lstrip().startswith('<section class="card" id="inbound-status"')
    assert 'hx-trigger="every 10s"' in panel and 'hx-target="this"' in panel and 'hx-swap="outerHTML"' in panel
    assert "Never" in panel

    after = admin_client.auth.post(f"{BASE}/{mailbox_id}/poll", headers=HTMX).get_data(as_text=True)

    assert "Poll started." in after
    assert re.search(r"<dt>Mails processed</dt><dd>2</dd>", after)
    assert '<span class="badge ok">OK</span>' in after
    assert only_mailbox().last_poll_count == 2


def test_presets_fill_in_the_server_and_say_what_to_know(admin_client):
    add_blank_mailbox()
    page = admin_client.auth.post(f"{BASE}/{only_mailbox().id}", {"preset": "microsoft365", "name": "Support",
                                                                  "folder": "INBOX", "port": "143"})
    html = page.get_data(as_text=True)
    assert 'value="outlook.office365.com"' in html and 'value="993"' in html
    assert "OAuth" in html
    assert only_mailbox().host == ""  # a preset fills the form, it does not save


def test_add_and_delete_mailboxes(admin_client, services, folder):
    add_blank_mailbox()
    added = admin_client.auth.post(f"{BASE}/new", form_values(services, folder, name="Billing",
                                                              username="billing@example.test",
                                                              password="billingpw"))
    assert added.status_code == 302
    db.session.expire_all()
    billing = db.session.scalar(db.select(Mailbox).filter_by(name="Billing"))
    assert billing is not None and billing.username == "billing@example.test"
    listing = admin_client.get(BASE).get_data(as_text=True)
    assert "Billing" in listing and "Add mailbox" in listing
    page = admin_client.get(f"{BASE}/{billing.id}").get_data(as_text=True)
    assert 'data-confirm="Delete the mailbox “Billing”?' in page

    gone = admin_client.auth.post(f"{BASE}/{billing.id}/delete", follow_redirects=True)

    assert "Mailbox “Billing” deleted" in gone.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, billing.id) is None


def test_a_new_host_or_username_drops_the_stored_imap_password(app, make_mailbox):
    from dataclasses import replace

    from helpdesk.services import mailboxes

    mailbox = make_mailbox()
    values = mailboxes.mailbox_values(mailbox)
    mailboxes.save_mailbox(mailbox, replace(values, poll_interval=300), "", None)
    assert mailboxes.stored_password(mailbox) == "supportpw"  # same server and account: kept
    mailboxes.save_mailbox(mailbox, replace(values, host="imap.elsewhere.test"), "", None)
    assert mailbox.password_encrypted == ""
    mailboxes.save_mailbox(mailbox, replace(values, host="imap.elsewhere.test", username="x@y.test"), "new-pw", None)
    assert mailboxes.stored_password(mailbox) == "new-pw"


def test_a_password_with_accents_gets_a_diagnosis_and_stays_out_of_the_log(admin_client, services, folder, caplog):
    page = admin_client.auth.post(f"{BASE}/test", form_values(services, folder, username="accents@example.test",
                                                            password="Pässwörd-nöpe"), headers=HTMX)

    assert page.status_code == 200
    html = html_module.unescape(page.get_data(as_text=True))
    assert "refused the login" in html
    for piece in ("nöpe", "Pässw"):
        assert piece not in html and piece not in caplog.text


def test_switching_tls_verification_off_warns_on_the_page_and_in_the_log(admin_client, services, folder, caplog):
    page = admin_client.get(BASE).get_data(as_text=True)
    assert 'id="verify-off-warning"' in page and 'data-warning="verify-off-warning"' in page
    assert re.search(r'<p id="verify-off-warning"[^>]*hidden', page)  # on by default: the warning waits

    saved = admin_client.auth.post(f"{BASE}/new", form_values(services, folder, verify_tls=None),
                                   follow_redirects=True).get_data(as_text=True)

    assert re.search(r'<p id="verify-off-warning" class="flash flash-warning" >', saved)
    assert "Certificate verification is off" in saved
    assert "TLS certificate verification is off for mailbox" in caplog.text
    assert "supportpw" not in caplog.text
