"""services.smtp_config: the single settings row and the SmtpSettings the senders get from it."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from helpdesk.extensions import db
from helpdesk.mail.secrets import CredentialBox, CredentialError
from helpdesk.models import SmtpConfig
from helpdesk.services.smtp_config import get_config, load_smtp_settings, save_config

VALUES = dict(host="smtp.example.test", port=465, security="ssl", username="mailer", password="s3cret-Pw",
              clear_password=False, from_address="support@example.test", from_name="Example Support",
              verify_tls=False, timeout=20)


def test_get_config_adds_one_empty_row_and_then_returns_it(app):
    first = get_config()
    db.session.commit()

    assert get_config().id == first.id
    assert db.session.scalar(db.select(db.func.count()).select_from(SmtpConfig)) == 1
    assert (first.host, first.port, first.security, first.verify_tls, first.timeout) == ("", 587, "starttls", True, 15)


def test_nothing_to_load_before_anything_is_saved(app):
    assert load_smtp_settings() is None
    get_config()
    assert load_smtp_settings() is None


@pytest.mark.parametrize("missing", ["host", "from_address"])
def test_not_configured_without_host_or_from_address(app, admin, missing):
    save_config({**VALUES, missing: ""}, admin)
    db.session.commit()

    assert load_smtp_settings() is None


def test_loads_the_decrypted_settings_with_the_servers_ca_file(app, admin):
    app.config["TLS_CA_FILE"] = "/etc/helpdesk/ca.pem"
    save_config(VALUES, admin)
    db.session.commit()

    settings, from_address, from_name = load_smtp_settings()

    assert (settings.host, settings.port, settings.security, settings.username) == (
        "smtp.example.test", 465, "ssl", "mailer")
    assert settings.password == "s3cret-Pw"
    assert settings.verify_tls is False
    assert settings.timeout == 20.0
    assert settings.ca_file == "/etc/helpdesk/ca.pem"
    assert (from_address, from_name) == ("support@example.test", "Example Support")
    assert "s3cret-Pw" not in repr(settings)


def test_a_password_sealed_with_another_key_says_so(app, admin):
    save_config(VALUES, admin)
    get_config().password_encrypted = CredentialBox(Fernet.generate_key()).seal("x")
    db.session.commit()

    with pytest.raises(CredentialError, match="CREDENTIALS_KEY"):
        load_smtp_settings()


def test_callers_that_leave_out_verify_and_timeout_get_the_safe_defaults(app, admin):
    save_config({"host": "smtp.example.test", "port": 25, "security": "none",
                 "from_address": "support@example.test"}, admin)
    db.session.commit()

    settings, _, from_name = load_smtp_settings()

    assert settings.verify_tls is True
    assert settings.timeout == 15.0
    assert (settings.username, settings.password, from_name) == ("", "", "")
