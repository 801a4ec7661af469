"""Use cases that touch the database: tickets, replies, attachments, mail in and out."""
from flask import current_app

from helpdesk.mail.secrets import CredentialBox


def credential_box() -> CredentialBox:
    """Return the box that seals and opens stored SMTP/IMAP passwords with the app's CREDENTIALS_KEY."""
    return CredentialBox(current_app.config["CREDENTIALS_KEY"])
