"""The app's attachment store, chosen by configuration, and storing files for tickets."""
from __future__ import annotations

from typing import BinaryIO

from flask import current_app

from helpdesk.extensions import db
from helpdesk.mail.parse import clean_filename
from helpdesk.models import Attachment, Comment, Ticket
from helpdesk.storage import AttachmentStore, StoredObject, make_store


def attachment_store() -> AttachmentStore:
    """Return the configured store (S3 when S3_ENDPOINT is set, else a local folder), built once."""
    store = current_app.extensions.get("attachment_store")
    if store is None:
        cfg = current_app.config
        store = current_app.extensions["attachment_store"] = make_store(
            s3_endpoint=cfg["S3_ENDPOINT"], s3_access_key=cfg["S3_ACCESS_KEY"], s3_secret_key=cfg["S3_SECRET_KEY"],
            s3_bucket=cfg["S3_BUCKET"], s3_secure=cfg["S3_SECURE"], local_folder=cfg["ATTACHMENT_FOLDER"])
    return store


def add_attachment(ticket: Ticket, data: bytes | BinaryIO, *, filename: str, content_type: str,
                   comment: Comment | None = None, size: int | None = None,
                   content_id: str | None = None, inline: bool = False) -> Attachment:
    """Store the bytes, then link them to the ticket (and comment)."""
    stored = attachment_store().put(data, content_type=content_type or "application/octet-stream", size=size)
    return link_attachment(ticket, stored, filename=filename, content_type=content_type, comment=comment,
                           content_id=content_id, inline=inline)


def link_attachment(ticket: Ticket, stored: StoredObject, *, filename: str, content_type: str,
                    comment: Comment | None = None, content_id: str | None = None,
                    inline: bool = False) -> Attachment:
    """Link bytes already in the store to the ticket (and comment)."""
    attachment = Attachment(
        ticket=ticket, comment=comment,
        # Agents' uploads are named by their browser: cleaned as inbound names are.
        filename=(clean_filename(filename or "") or "attachment")[:255],
        content_type=(content_type or "application/octet-stream")[:255],
        size=stored.size, sha256=stored.sha256, storage_key=stored.key, content_id=content_id, inline=inline)
    db.session.add(attachment)
    db.session.flush()  # callers name it by its id: inline images' URLs, an outbox mail's files
    return attachment
