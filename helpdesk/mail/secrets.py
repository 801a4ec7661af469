"""Encrypt stored credentials (SMTP/IMAP passwords, OAuth tokens) with Fernet."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class CredentialError(Exception):
    """A stored credential cannot be read back (the key changed or the value was altered)."""


class CredentialBox:
    """Seal and open secrets with the server's credentials key."""

    def __init__(self, key: str | bytes):
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    def seal(self, secret: str) -> str:
        """Return the encrypted form of `secret` ("" stays "")."""
        return self._fernet.encrypt(secret.encode()).decode() if secret else ""

    def open(self, sealed: str) -> str:
        """Return the secret behind `sealed`, or raise CredentialError."""
        if not sealed:
            return ""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise CredentialError("The stored password cannot be decrypted: was CREDENTIALS_KEY changed? "
                                  "Enter the password again and save.") from exc

    def __repr__(self) -> str:
        return "CredentialBox(<key hidden>)"
