"""Admin → Settings → Email: Outbound (SMTP), Inbound (IMAP), Templates and the mail logs."""
