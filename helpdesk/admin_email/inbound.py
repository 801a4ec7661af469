"""Admin → Settings → Email → Inbound (IMAP)."""
