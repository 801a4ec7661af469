"""Both attachment stores, for real: a local folder and SeaweedFS over the S3 API."""
from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone

import pytest

from helpdesk.storage import CHUNK_SIZE, LocalStore, S3Store, StorageError, StoredObject, make_store

KEY_RE = re.compile(r"att/\d{4}/\d{2}/[0-9a-f]{32}")


class Stream:
    """A read()-only source of deterministic pseudo-random bytes, never held whole in memory."""

    def __init__(self, total: int, seed: bytes = b"seed") -> None:
        self.left = total
        self.block = hashlib.sha256(seed).digest()
        self.sha256 = hashlib.sha256()
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        want = self.left if size is None or size < 0 else min(size, self.left)
        out = bytearray()
        while len(out) < want:
            self.block = hashlib.sha256(self.block).digest()
            out += self.block
        data = bytes(out[:want])
        self.left -= len(data)
        self.sha256.update(data)
        return data


class BrokenStream:
    """A source that fails half-way, as a dropped upload would."""

    def __init__(self) -> None:
        self.sent = False

    def read(self, size: int = -1) -> bytes:
        if self.sent:
            raise OSError("connection reset by peer")
        self.sent = True
        return b"first part"


def test_put_bytes_then_read_back(store):
    data = b"%PDF-1.7 invoice\x00\xff" * 1000
    stored = store.put(data, content_type="application/pdf")
    assert isinstance(stored, StoredObject)
    assert KEY_RE.fullmatch(stored.key)
    now = datetime.now(timezone.utc)
    assert stored.key.startswith(f"att/{now:%Y}/{now:%m}/")
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.exists(stored.key)
    assert store.read(stored.key) == data
    assert b"".join(store.open(stored.key)) == data


def test_put_a_stream_of_unknown_size(store):
    source = Stream(300_000)
    stored = store.put(source, content_type="image/png")
    assert stored.size == 300_000
    assert stored.sha256 == source.sha256.hexdigest()
    assert source.reads > 1
    chunks = list(store.open(stored.key))
    assert all(len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == stored.sha256


def test_put_a_file_with_known_size(store, tmp_path):
    path = tmp_path / "upload.bin"
    path.write_bytes(os.urandom(70_000))
    with path.open("rb") as handle:
        stored = store.put(handle, content_type="application/octet-stream", size=70_000)
    assert store.read(stored.key) == path.read_bytes()
    assert stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_empty_attachment(store):
    stored = store.put(b"", content_type="text/plain")
    assert stored.size == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert store.read(stored.key) == b""


def test_keys_are_fresh_for_equal_content(store):
    first = store.put(b"same", content_type="text/plain")
    second = store.put(b"same", content_type="text/plain")
    assert first.key != second.key
    assert first.sha256 == second.sha256


def test_delete_then_missing(store):
    stored = store.put(b"to be removed", content_type="text/plain")
    store.delete(stored.key)
    assert not store.exists(stored.key)
    with pytest.raises(StorageError) as caught:
        store.read(stored.key)
    assert caught.value.kind == "missing"
    store.delete(stored.key)  # deleting twice is not an error


def test_delete_many_removes_them_all_and_minds_no_missing_one(store):
    kept = store.put(b"stays", content_type="text/plain")
    gone = [store.put(f"file {n}".encode(), content_type="text/plain").key for n in range(5)]
    store.delete(gone[2])
    store.delete_many(gone + ["att/2024/01/" + "0" * 32])
    assert [key for key in gone if store.exists(key)] == []
    assert store.read(kept.key) == b"stays"


def test_s3_delete_many_with_a_wrong_secret_says_so(s3_store):
    good = s3_store()
    stored = good.put(b"x", content_type="text/plain")
    with pytest.raises(StorageError) as caught:
        s3_store(bucket=good.bucket, secret_key="not-the-secret").delete_many([stored.key])
    assert "S3_SECRET_KEY" in str(caught.value)
    assert good.exists(stored.key)


def test_open_of_a_missing_key_fails_before_iteration(store):
    with pytest.raises(StorageError) as caught:
        store.open("att/2024/01/" + "0" * 32)
    assert caught.value.kind == "missing"
    assert "att/2024/01/" in str(caught.value)
    assert not store.exists("att/2024/01/" + "0" * 32)


def test_announced_size_must_match(store):
    with pytest.raises(StorageError) as caught:
        store.put(b"12345", content_type="text/plain", size=9)
    assert caught.value.kind == "size"


@pytest.mark.parametrize("key", ["../secret", "/etc/passwd", "att/../../secret", "att/./x", "att//x",
                                 ".hidden", "", "att/x/", "att\\..\\x", "att/x\x00"])
def test_unsafe_keys_are_rejected(store, key):
    for action in (store.read, store.exists, store.delete, store.open):
        with pytest.raises(StorageError) as caught:
            action(key)
        assert caught.value.kind == "invalid_key"


def test_local_store_cannot_be_walked_out_of(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not serve")
    store = LocalStore(str(tmp_path / "attachments"))
    store.check()
    with pytest.raises(StorageError):
        store.read("../secret")
    with pytest.raises(StorageError):
        store.delete("../secret")
    assert secret.read_bytes() == b"do not serve"


def test_local_store_leaves_no_partial_file_on_failure(tmp_path):
    store = LocalStore(str(tmp_path / "attachments"))
    with pytest.raises(StorageError):
        store.put(BrokenStream(), content_type="text/plain")
    assert [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()] == []
    stored = store.put(b"whole", content_type="text/plain")
    files = [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()]
    assert files == [tmp_path / "attachments" / stored.key]


def test_local_store_check_fails_when_the_folder_is_a_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StorageError) as caught:
        LocalStore(str(blocker)).check()
    assert str(blocker) in str(caught.value)


def test_s3_keeps_the_content_type(s3_store):
    store = s3_store()
    stored = store.put(b"<p>hi</p>", content_type="text/html")
    assert store.client.stat_object(store.bucket, stored.key).content_type == "text/html"


def test_s3_bucket_is_created_on_check(s3_store):
    store = s3_store()
    assert not store.client.bucket_exists(store.bucket)
    store.check()
    assert store.client.bucket_exists(store.bucket)
    store.check()  # an existing bucket is fine


def test_s3_bucket_is_created_on_first_put(s3_store):
    store = s3_store()
    stored = store.put(b"first", content_type="text/plain")
    assert store.client.bucket_exists(store.bucket)
    assert store.read(stored.key) == b"first"


def test_s3_read_from_a_missing_bucket_is_missing(s3_store):
    store = s3_store()
    with pytest.raises(StorageError) as caught:
        store.read("att/2024/01/" + "0" * 32)
    assert caught.value.kind == "missing"


def test_s3_wrong_secret_gives_a_clear_message(s3_store):
    store = s3_store(secret_key="not-the-secret")
    for action in (store.check, lambda: store.put(b"x", content_type="text/plain")):
        with pytest.raises(StorageError) as caught:
            action()
        assert caught.value.kind == "auth"
        assert "The S3 server refused our credentials" in str(caught.value)
        assert "check S3_ACCESS_KEY / S3_SECRET_KEY" in str(caught.value)
        assert "not-the-secret" not in str(caught.value)


def test_s3_wrong_secret_on_an_existing_bucket(s3_store):
    good = s3_store()
    stored = good.put(b"x", content_type="text/plain")
    bad = s3_store(bucket=good.bucket, secret_key="not-the-secret")
    with pytest.raises(StorageError) as caught:
        bad.read(stored.key)
    assert caught.value.kind == "auth"
    assert "S3_SECRET_KEY" in str(caught.value)


def test_s3_unreachable_endpoint(s3_store, closed_port):
    store = s3_store(endpoint=f"127.0.0.1:{closed_port}")
    with pytest.raises(StorageError) as caught:
        store.check()
    assert caught.value.kind == "unreachable"
    assert str(caught.value).startswith(f"Cannot reach the S3 server at 127.0.0.1:{closed_port}: ")
    assert "refused" in str(caught.value).lower()


@pytest.mark.parametrize("bucket", ["Not_A_Valid_Bucket", "ab"])  # refused by the server / by minio itself
def test_s3_invalid_bucket_name(s3_store, bucket):
    with pytest.raises(StorageError) as caught:
        s3_store(bucket=bucket).check()
    assert caught.value.kind == "bucket"
    assert repr(bucket) in str(caught.value)


def test_s3_large_streamed_upload_uses_multipart(s3_store):
    store = s3_store()
    size = 12 * 1024 * 1024 + 123
    source = Stream(size, seed=b"large")
    stored = store.put(source, content_type="application/zip")
    assert stored.size == size
    assert stored.sha256 == source.sha256.hexdigest()
    # A multipart object's ETag ends with "-<number of parts>": 5 MiB parts make three.
    assert store.client.stat_object(store.bucket, stored.key).etag.endswith("-3")
    digest, total, biggest = hashlib.sha256(), 0, 0
    for chunk in store.open(stored.key):
        digest.update(chunk)
        total += len(chunk)
        biggest = max(biggest, len(chunk))
    assert (total, digest.hexdigest()) == (size, stored.sha256)
    assert biggest <= CHUNK_SIZE


def test_s3_stream_abandoned_half_way_releases_the_connection(s3_store):
    store = s3_store()
    stored = store.put(Stream(1_000_000), content_type="application/octet-stream")
    chunks = store.open(stored.key)
    assert next(chunks)
    chunks.close()
    assert store.read(stored.key)[:10]


def test_make_store_picks_s3_when_an_endpoint_is_set(services, tmp_path):
    s3 = make_store(s3_endpoint=services["HELPDESK_TEST_S3_ENDPOINT"],
                    s3_access_key="k", s3_secret_key="s", s3_bucket="b", s3_secure=False,
                    local_folder=str(tmp_path))
    assert isinstance(s3, S3Store)
    local = make_store(s3_endpoint=None, s3_access_key=None, s3_secret_key=None, s3_bucket=None,
                       s3_secure=True, local_folder=str(tmp_path))
    assert isinstance(local, LocalStore)
    stored = local.put(b"here", content_type="text/plain")
    assert (tmp_path / stored.key).read_bytes() == b"here"


def test_local_store_does_not_follow_a_symlink_out_of_its_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not serve")
    root = tmp_path / "attachments"
    root.mkdir()
    (root / "att").symlink_to(outside, target_is_directory=True)
    store = LocalStore(str(root))
    with pytest.raises(StorageError) as caught:
        store.read("att/secret")
    assert caught.value.kind == "invalid_key"
    with pytest.raises(StorageError):
        store.put(b"x", content_type="text/plain")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_s3_https_against_a_plain_http_server(s3_store):
    store = s3_store(secure=True)
    with pytest.raises(StorageError) as caught:
        store.check()
    assert caught.value.kind == "tls"
    assert "check S3_SECURE" in str(caught.value)


@pytest.mark.parametrize("attempt", range(5))
def test_first_uploads_to_a_new_bucket_from_several_threads_and_stores_all_succeed(s3_store, attempt):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    first = s3_store()
    # A second store on the same bucket stands for another process (a poll's helper) starting too.
    second = s3_store(bucket=first.bucket)
    files = [os.urandom(2_000 + n) for n in range(8)]
    start = threading.Barrier(8)

    def put(n: int) -> StoredObject:
        start.wait(30)  # every first upload at the same moment, as a poll's batch does
        return (first if n % 2 else second).put(files[n], content_type="x/y")

    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(put, range(8)))
    assert [first.read(obj.key) for obj in stored] == files


def test_a_bucket_another_process_is_creating_is_waited_for_not_reported_missing(s3_store):
    from minio.error import S3Error

    store = s3_store()
    other = s3_store(bucket=store.bucket)

    def create_racing(bucket, location=None):
        # The other process wins the race; this server then answers our create with NoSuchBucket.
        other.client.make_bucket(bucket)
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", bucket, "req", "host", None,
                      bucket_name=bucket)

    store.client.make_bucket = create_racing
    stored = store.put(b"after the race", content_type="text/plain")
    assert store.read(stored.key) == b"after the race"


def test_a_file_put_under_its_own_key_twice_is_one_object_with_its_bytes(store):
    data = b"%PDF-1.4 the same invoice in two mails"
    first = store.put(data, content_type="application/pdf", key="att/sha256/abc123")
    again = store.put(data, content_type="application/pdf", key="att/sha256/abc123")
    assert first.key == again.key == "att/sha256/abc123"
    assert store.read("att/sha256/abc123") == data


def test_keys_older_than_lists_only_old_files_under_the_prefix(store):
    from datetime import timedelta

    kept = store.put(b"one", content_type="text/plain", key="att/sha256/one")
    store.put(b"raw", content_type="message/rfc822", key="raw/two")
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert list(store.keys_older_than("att/", later)) == [kept.key]
    assert list(store.keys_older_than("att/", later - timedelta(hours=1))) == []
