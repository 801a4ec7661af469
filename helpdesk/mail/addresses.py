"""Mail addresses: checked the way mail servers read them (email-validator, syntax only), and split cheaply."""
from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email


# RFC 5322 atext, and an addr-spec of dot-atoms on both sides: the form nearly every address takes,
# which the standard library's address parser reads to the same parts, at many times the cost.
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDR_SPEC = rf"{ATOM}(?:\.{ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(PLAIN_ADDR_SPEC)


def plain_parts(value: str) -> tuple[str, str] | None:
    """Return (local part, domain) of a plain dot-atom address, or None for any other form."""
    if _PLAIN_ADDRESS.fullmatch(value) is None:
        return None
    local, _, domain = value.rpartition("@")
    return local, domain


class AddressError(ValueError):
    """An address that no mail server would accept, with the reason in plain words."""


def check_address(value: str) -> str:
    """Return the address normalised (domain lowercased), or raise AddressError."""
    value = (value or "").strip()
    if not value:
        raise AddressError("Enter an email address.")
    if any(ch in value for ch in "\r\n"):
        raise AddressError("An address cannot contain line breaks.")
    try:
        # Syntax only: a helpdesk must accept addresses whose DNS it cannot see (intranets, staging
        # servers on the reserved .test domain), so no deliverability look-up here.
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from exc
    return result.normalized
