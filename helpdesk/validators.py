"""WTForms validators in the helpdesk's terms: mail addresses and host names."""
from __future__ import annotations

import re

from wtforms.validators import ValidationError

from helpdesk.mail.addresses import AddressError, check_address

HOST = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


class MailAddress:
    """Require a valid mail address; the field keeps the normalised form."""

    def __call__(self, form, field):
        if not field.data:
            return
        try:
            field.data = check_address(field.data)
        except AddressError as exc:
            raise ValidationError(str(exc)) from exc


class HostName:
    """Require a host name or IP address, without a scheme or port."""

    def __call__(self, form, field):
        value = (field.data or "").strip()
        field.data = value
        if not value:
            return
        if "://" in value or "/" in value:
            raise ValidationError("Enter only the server name, e.g. smtp.example.com — no https:// or path.")
        if ":" in value and not value.startswith("["):
            raise ValidationError("Enter the port in the Port field, not after the host.")
        ipv4 = IPV4.match(value)
        if ipv4 and all(int(part) <= 255 for part in ipv4.groups()):
            return
        if not HOST.match(value):
            raise ValidationError(f"“{value}” is not a valid host name.")
