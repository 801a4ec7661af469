"""Attachments uploaded in the console land in S3 (SeaweedFS here) and come back identical through the app."""
import hashlib
import io
import uuid

import pytest
from minio import Minio

from helpdesk.extensions import db
from helpdesk.models import Attachment


@pytest.fixture
def app_config(app_config, services):
    app_config.update(S3_ENDPOINT=services["HELPDESK_TEST_S3_ENDPOINT"],
                      S3_ACCESS_KEY=services["HELPDESK_TEST_S3_ACCESS_KEY"],
                      S3_SECRET_KEY=services["HELPDESK_TEST_S3_SECRET_KEY"], S3_SECURE=False,
                      S3_BUCKET=f"hd-{uuid.uuid4().hex[:12]}")
    return app_config


def test_upload_is_stored_in_s3_and_downloads_identical(app, admin_client, make_ticket, services):
    ticket = make_ticket()
    payload = b"%PDF-1.7\n" + bytes(range(256)) * 1000
    admin_client.auth.post(f"/tickets/{ticket.id}/comments",
                           {"visibility": "public", "body": "Invoice attached",
                            "files": [(io.BytesIO(payload), "invoice.pdf", "application/pdf")]},
                           content_type="multipart/form-data")
    attachment = db.session.scalar(db.select(Attachment))
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    s3 = Minio(services["HELPDESK_TEST_S3_ENDPOINT"], access_key=services["HELPDESK_TEST_S3_ACCESS_KEY"],
               secret_key=services["HELPDESK_TEST_S3_SECRET_KEY"], secure=False)
    stat = s3.stat_object(app.config["S3_BUCKET"], attachment.storage_key)
    assert stat.size == len(payload)
    response = admin_client.get(f"/attachments/{attachment.id}")
    assert response.data == payload
    assert response.mimetype == "application/pdf"
