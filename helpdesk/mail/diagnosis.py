"""The answer a connection test gives an admin: ok or not, in plain words."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    """Outcome of a Test SMTP / Test IMAP run: a one-line summary and the server's own words."""

    ok: bool
    summary: str
    detail: str = ""
    kind: str = "ok"  # failure class, e.g. "dns", "refused", "tls", "auth"; "ok" on success
    hint: str = ""  # provider-specific advice (Gmail App Password, Microsoft 365 Authenticated SMTP)
