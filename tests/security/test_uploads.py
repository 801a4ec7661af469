"""Agents' attachments are named like inbound ones: a name, never a path."""
from __future__ import annotations

import io

import pytest

from helpdesk.extensions import db
from helpdesk.mail.parse import clean_filename
from helpdesk.models import Attachment


@pytest.mark.parametrize(("sent", "kept"), [
    ("../../../../tmp/pwned.txt", "pwned.txt"),
    ("/etc/passwd", "passwd"),
    ("..", "attachment"),
    ("notes\x00\x1b.txt", "notes.txt"),
    ("Quote “2026”.pdf", "Quote “2026”.pdf"),
])
def test_an_uploaded_filename_loses_its_path(admin_client, make_ticket, sent, kept):
    ticket = make_ticket()

    admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                           {"visibility": "public", "body": "See attached", "files": [(io.BytesIO(b"data"), sent)]},
                           content_type="multipart/form-data")

    [attachment] = db.session.scalars(db.select(Attachment)).all()
    assert attachment.filename == kept
    assert clean_filename(sent) == (None if kept == "attachment" else kept)


def test_windows_paths_lose_their_folders_too():
    assert clean_filename("C:\\Users\\me\\..\\report.pdf") == "report.pdf"
