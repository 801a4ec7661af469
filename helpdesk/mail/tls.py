"""TLS for the mail servers we connect to: certificates verified unless the admin says otherwise."""
from __future__ import annotations

import os
import ssl
from functools import lru_cache


def client_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """Return a client TLS context trusting `ca_file` (the system's CAs when None)."""
    # Loading the CA certificates takes tens of milliseconds, and a poll opens a connection in each
    # of its helpers too; a context is reused until its CA file changes.
    version = None
    if ca_file and os.path.exists(ca_file):
        found = os.stat(ca_file)
        version = (found.st_ino, found.st_size, found.st_mtime_ns)
    return _context(ca_file, version, verify)


@lru_cache(maxsize=8)
def _context(ca_file: str | None, _version: tuple | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # The admin asked for it explicitly (self-signed in-house servers); the default stays strict.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
