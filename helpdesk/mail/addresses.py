"""Check mail addresses the way mail servers read them (email-validator, syntax only)."""
from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


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
