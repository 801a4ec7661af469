"""The domain of email: parsing, routing, rendering, SMTP, IMAP. Imports no Flask."""
