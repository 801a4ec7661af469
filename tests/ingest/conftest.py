"""Fixtures for the inbound pipeline tests: hand-made mails, signal listeners, our reply tokens."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from datetime import datetime, timezone
from email.utils import format_datetime, make_msgid

import pytest

from helpdesk import events
from helpdesk.mail.tokens import make_message_id


@pytest.fixture
def make_mail() -> Callable[..., bytes]:
    """Return a builder of raw mails; keyword arguments name the parts that matter to a test."""

    def build(subject: str = "Printer on fire", sender: str = "Jane Doe <jane@customer.test>",
              body: str = "The printer in room 4 smokes.\n", *, html: str | None = None,
              message_id: str | None = "auto", to: str = "support@example.test",
              headers: dict[str, str] | None = None,
              attachments: list[tuple[str, str, bytes]] = (),
              inline_images: list[tuple[str, str, bytes]] = ()) -> bytes:
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc))
        if message_id == "auto":
            message_id = make_msgid(domain="customer.test")
        if message_id:
            msg["Message-ID"] = message_id
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
            html_part = msg.get_payload()[1]
            for cid, ctype, data in inline_images:
                maintype, subtype = ctype.split("/")
                html_part.add_related(data, maintype=maintype, subtype=subtype, cid=f"<{cid}>")
        for filename, ctype, data in attachments:
            maintype, subtype = ctype.split("/")
            if maintype == "message":
                from email import message_from_bytes, policy

                msg.add_attachment(message_from_bytes(data, policy=policy.default), filename=filename)
            else:
                msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        return msg.as_bytes()

    return build


@pytest.fixture
def token_key(app) -> bytes:
    """Return the key our outbound mail signs reply tokens with, as the outbound side takes it."""
    return app.config["SECRET_KEY"].encode()


@pytest.fixture
def our_message_id(token_key) -> Callable[[int | None], str]:
    """Return a maker of Message-IDs as our outbound mail writes them (with the ticket's token)."""
    return lambda ticket_id: make_message_id(ticket_id, token_key, "helpdesk.test")


@pytest.fixture
def created_notify() -> Iterator[list[bool]]:
    """Collect the `notify` flag of every ticket-created event while the test runs."""
    seen: list[bool] = []

    def listen(ticket, **data) -> None:
        seen.append(data["notify"])

    events.ticket_created.connect(listen)
    yield seen
    events.ticket_created.disconnect(listen)


@pytest.fixture
def clean_bucket(app) -> Iterator[None]:
    """Remove the test's S3 bucket afterwards (the PostgreSQL pass keeps attachments in S3)."""
    yield
    if not app.config.get("S3_ENDPOINT"):
        return
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    from helpdesk.storage import S3Store

    store = app.extensions.get("attachment_store")
    if not isinstance(store, S3Store):
        return
    client = store.client
    try:
        if not client.bucket_exists(store.bucket):
            return
        for obj in client.list_objects(store.bucket, recursive=True):
            client.remove_object(store.bucket, obj.object_name)
        client.remove_bucket(store.bucket)
    except (MinioException, HTTPError):
        pass  # a bucket on a deliberately broken endpoint: nothing was stored there
