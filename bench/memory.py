"""Memory of one large mail: a 30 MB mail (a 22 MB attachment) through ingest, attachments in S3.

Run: `python bench/memory.py` with the test services' environment loaded (`make bench` does).
Reports the peak of what ingest allocates (tracemalloc) beside the mail's own size, and the
process's resident memory before and after; the target is a peak of at most 4x the mail's size,
counting the mail itself.
"""
from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile
import tracemalloc
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from helpdesk import create_app  # noqa: E402
from helpdesk.services.ingest import ingest_mail  # noqa: E402


def big_mail(attachment_bytes: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.test>"
    msg["To"] = "support@example.test"
    msg["Subject"] = "The full log, as asked"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@customer.test>"
    msg.set_content("Hello,\n\nthe log is attached.\n")
    msg.add_attachment(os.urandom(attachment_bytes), maintype="application", subtype="octet-stream",
                       filename="server.log.gz")
    return msg.as_bytes(policy=SMTP)


def _remove_bucket(bucket: str) -> None:
    """Delete the run's bucket and its files, so the S3 server does not fill up."""
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    s3 = Minio(os.environ["HELPDESK_TEST_S3_ENDPOINT"], access_key=os.environ["HELPDESK_TEST_S3_ACCESS_KEY"],
               secret_key=os.environ["HELPDESK_TEST_S3_SECRET_KEY"], secure=False)
    for _error in s3.remove_objects(bucket, [DeleteObject(o.object_name) for o in s3.list_objects(bucket, recursive=True)]):
        pass  # what stays costs only space on a test server
    s3.remove_bucket(bucket)


def main() -> None:
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="hd-memory-"))
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'memory.sqlite'}", "SECRET_KEY": "bench-secret",
        "CREDENTIALS_KEY": Fernet.generate_key().decode(), "ATTACHMENT_FOLDER": str(workdir / "attachments"),
        "S3_ENDPOINT": os.environ["HELPDESK_TEST_S3_ENDPOINT"], "S3_ACCESS_KEY": os.environ["HELPDESK_TEST_S3_ACCESS_KEY"],
        "S3_SECRET_KEY": os.environ["HELPDESK_TEST_S3_SECRET_KEY"], "S3_SECURE": False,
        "S3_BUCKET": f"hd-memory-{uuid.uuid4().hex[:8]}", "JOBS_INLINE": False, "REDIS_URL": None,
        "MAIL_MAX_SIZE": 64 * 1024 * 1024})
    with app.app_context():
        upgrade()
        ingest_mail(big_mail(1000))  # settings, templates and the bucket made before measuring
        raw = big_mail(22 * 1024 * 1024)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        result = ingest_mail(raw)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _remove_bucket(app.config["S3_BUCKET"])
    size = len(raw)
    print(f"| one {size / 1e6:.1f} MB mail ({result.outcome}), attachments in S3 | value |")
    print("|---|---:|")
    print(f"| peak allocated by ingest | {peak / 1e6:.1f} MB ({peak / size:.1f}× the mail) |")
    print(f"| the mail itself plus that peak | {(size + peak) / 1e6:.1f} MB ({(size + peak) / size:.1f}×; target ≤ 4×) |")
    print(f"| process peak RSS before / after | {rss_before:.0f} MB / {rss_after:.0f} MB |")


if __name__ == "__main__":
    main()
