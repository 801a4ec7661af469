"""Fixtures for the attachment store tests: a local folder store and an S3 store on SeaweedFS."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
from minio.error import S3Error

from helpdesk.storage import LocalStore, S3Store


def drop_bucket(store: S3Store) -> None:
    """Remove the test's bucket with everything in it."""
    client = store.client
    try:
        if not client.bucket_exists(store.bucket):
            return
    except ValueError:  # minio refuses the bad names of the invalid-bucket test before asking
        return
    except S3Error as exc:
        if exc.code == "InvalidBucketName":  # ...or the server refuses them
            return
        raise
    for obj in client.list_objects(store.bucket, recursive=True):
        client.remove_object(store.bucket, obj.object_name)
    client.remove_bucket(store.bucket)


@pytest.fixture
def s3_store(services) -> Iterator[Callable[..., S3Store]]:
    """Return a factory of S3 stores, each on its own uuid-named bucket, removed afterwards."""
    made: list[S3Store] = []

    def make(**overrides) -> S3Store:
        values = {
            "endpoint": services["HELPDESK_TEST_S3_ENDPOINT"],
            "access_key": services["HELPDESK_TEST_S3_ACCESS_KEY"],
            "secret_key": services["HELPDESK_TEST_S3_SECRET_KEY"],
            "bucket": f"hd-test-{uuid.uuid4().hex}",
            "secure": False,
        }
        values.update(overrides)
        store = S3Store(**values)
        made.append(store)
        return store

    yield make
    for store in made:
        good = S3Store(services["HELPDESK_TEST_S3_ENDPOINT"], services["HELPDESK_TEST_S3_ACCESS_KEY"],
                       services["HELPDESK_TEST_S3_SECRET_KEY"], store.bucket, secure=False)
        drop_bucket(good)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_store):
    """Yield each backend in turn, ready to use."""
    if request.param == "local":
        backend = LocalStore(str(tmp_path / "attachments"))
    else:
        backend = s3_store()
    backend.check()
    return backend


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
