"""The attachment store: attachment bytes kept in S3 (or a local folder), addressed by opaque keys."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

CHUNK_SIZE = 64 * 1024
# S3's smallest multipart part; one part is the most an upload of unknown size holds in memory.
PART_SIZE = 5 * 1024 * 1024

# Path segments start with a letter or digit, so "." / ".." and hidden names are impossible.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


class StorageError(Exception):
    """The attachment store cannot do what was asked; the message says why in plain words."""

    def __init__(self, message: str, kind: str = "backend") -> None:
        super().__init__(message)
        self.kind = kind  # "missing", "auth", "unreachable", "tls", "bucket", "invalid_key", "size", "backend"


@dataclass(frozen=True)
class StoredObject:
    """Where an attachment went, how big it is and its SHA-256 (hex)."""

    key: str
    size: int
    sha256: str


def new_key() -> str:
    """Return a fresh, unguessable key for an attachment."""
    now = datetime.now(timezone.utc)
    return f"att/{now:%Y}/{now:%m}/{uuid.uuid4().hex}"


def _checked_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise StorageError(f"Invalid attachment key {key!r}", kind="invalid_key")
    return key


class _HashingReader:
    """A read-only stream view that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            data = bytes(data)
            self.digest.update(data)
            self.size += len(data)
        return data


def _not_deleted(failed: list[str]) -> StorageError:
    """Return the error for a `delete_many` that left some keys behind (`failed`: "key: why" each)."""
    return StorageError(f"Cannot delete {len(failed)} attachment(s): " + "; ".join(failed[:5]))


def _check_size(expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise StorageError(
            f"The attachment was announced as {expected} bytes but {actual} bytes arrived",
            kind="size",
        )


class AttachmentStore(ABC):
    """Keep attachment bytes somewhere and hand them back by key."""

    @abstractmethod
    def put(self, data: bytes | BinaryIO, *, content_type: str, size: int | None = None,
            sha256: str | None = None, key: str | None = None) -> StoredObject:
        """Store `data` under `key` (a new one if None); return the key, size and SHA-256 (the caller's `sha256` of
        bytes, if given). Putting the same bytes under the same key again is harmless."""

    @abstractmethod
    def open(self, key: str) -> Iterator[bytes]:
        """Return the stored bytes of `key` as chunks; raise StorageError(kind="missing") now if absent."""

    def read(self, key: str) -> bytes:
        """Return the stored bytes of `key` in one piece."""
        return b"".join(self.open(key))

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a key that is already gone is not an error."""

    def delete_many(self, keys: list[str]) -> None:
        """Remove every key of `keys` (as `delete` does each); raise StorageError naming what stayed."""
        failed = []
        for key in keys:
            try:
                self.delete(key)
            except StorageError as exc:
                failed.append(f"{key}: {exc}")
        if failed:
            raise _not_deleted(failed)

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Tell whether `key` is stored."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError when the store cannot be used."""

    def ready(self) -> None:
        """Prepare the store to take files, once per store object; raise StorageError when it cannot."""

    @abstractmethod
    def keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        """Yield the keys under `prefix` stored before `before`."""


class LocalStore(AttachmentStore):
    """Attachments as files under one folder (for single-server installs and development)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder).resolve()

    def _path(self, key: str) -> Path:
        path = (self.folder / _checked_key(key)).resolve()
        if not path.is_relative_to(self.folder):
            raise StorageError(f"Invalid attachment key {key!r}", kind="invalid_key")
        return path

    def put(self, data: bytes | BinaryIO, *, content_type: str, size: int | None = None,
            sha256: str | None = None, key: str | None = None) -> StoredObject:
        # content_type is the caller's record to keep; a plain file has nowhere to hold it.
        key = key or new_key()
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        except OSError as exc:
            raise StorageError(f"Cannot write attachments under {self.folder}: {exc}") from exc
        in_memory = isinstance(data, (bytes, bytearray, memoryview))
        digest, written = None if sha256 and in_memory else hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                source = io.BytesIO(data) if in_memory else data
                while chunk := source.read(CHUNK_SIZE):
                    if digest is not None:
                        digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            _check_size(size, written)
            # Readers never see a half-written file: the name appears only when complete.
            os.replace(tmp_name, path)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise StorageError(f"Cannot write attachment {key} under {self.folder}: {exc}") from exc
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size=written, sha256=digest.hexdigest() if digest is not None else sha256)

    def open(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise StorageError(f"Attachment {key} is not in the store", kind="missing") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read attachment {key}: {exc}") from exc
        return self._chunks(handle, key)

    @staticmethod
    def _chunks(handle: BinaryIO, key: str) -> Iterator[bytes]:
        with handle:
            try:
                while chunk := handle.read(CHUNK_SIZE):
                    yield chunk
            except OSError as exc:
                raise StorageError(f"Cannot read attachment {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot delete attachment {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        top = self._path(prefix.rstrip("/"))
        if not top.is_dir():
            return
        cutoff = before.timestamp()
        for path in top.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and path.stat().st_mtime < cutoff:
                yield path.relative_to(self.folder).as_posix()

    def check(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as exc:
            raise StorageError(f"Cannot write attachments under {self.folder}: {exc}") from exc


class S3Store(AttachmentStore):
    """Attachments as objects in one S3 bucket (AWS, MinIO, SeaweedFS, Garage...)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = True,
        region: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        # Our own pool: fewer retries than minio's default so an unreachable server is reported
        # in seconds, and the admin's CA file when given (else the system's CAs, not certifi's).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=120),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        try:
            self.client = Minio(
                endpoint, access_key=access_key, secret_key=secret_key,
                secure=secure, region=region, http_client=http,
            )
        except ValueError as exc:
            raise StorageError(f"The S3 endpoint {endpoint!r} is not usable: {exc}") from exc
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()  # a console serves requests on several threads

    def _error(self, exc: Exception, key: str | None = None) -> StorageError:
        """Translate a minio/urllib3 failure into a StorageError an admin can act on."""
        if isinstance(exc, S3Error):
            code = exc.code or ""
            if code in _CREDENTIAL_CODES:
                return StorageError(
                    f"The S3 server refused our credentials ({code}): check S3_ACCESS_KEY / S3_SECRET_KEY",
                    kind="auth",
                )
            if code == "AccessDenied":
                return StorageError(
                    f"The S3 server denied access to bucket {self.bucket!r} (AccessDenied): check "
                    "S3_ACCESS_KEY / S3_SECRET_KEY and that this key may use the bucket",
                    kind="auth",
                )
            if code in _MISSING_CODES and key is not None:
                return StorageError(f"Attachment {key} is not in the store", kind="missing")
            if code == "NoSuchBucket":
                return StorageError(f"The S3 bucket {self.bucket!r} does not exist", kind="missing")
            if code in {"InvalidBucketName", "BucketAlreadyExists"}:
                return StorageError(
                    f"The S3 bucket name {self.bucket!r} cannot be used ({code}): {exc.message}",
                    kind="bucket",
                )
            return StorageError(f"The S3 server at {self.endpoint} answered {code}: {exc.message}")
        if isinstance(exc, MaxRetryError):
            reason = exc.reason if exc.reason is not None else exc
            if isinstance(reason, SSLError):
                return StorageError(
                    f"TLS with the S3 server at {self.endpoint} failed ({reason}): check S3_SECURE "
                    "(https or plain http) and that the server's certificate is trusted",
                    kind="tls",
                )
            return StorageError(f"Cannot reach the S3 server at {self.endpoint}: {reason}", kind="unreachable")
        if isinstance(exc, HTTPError):
            return StorageError(f"Cannot reach the S3 server at {self.endpoint}: {exc}", kind="unreachable")
        return StorageError(f"The S3 server at {self.endpoint} gave an unusable answer: {exc}")

    def ready(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if not self._bucket_ready:
                self._create_bucket()
                self._bucket_ready = True

    def _create_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, location=self.region)
        except S3Error as exc:
            # Another worker or process may be creating it at this very moment: some servers then
            # answer BucketAlreadyOwnedByYou, others (SeaweedFS) NoSuchBucket until it exists.
            if exc.code != "BucketAlreadyOwnedByYou" and not self._bucket_appears():
                raise self._error(exc) from exc
        except (MinioException, HTTPError) as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # minio checks bucket names locally before any request
            raise StorageError(f"The S3 bucket name {self.bucket!r} cannot be used: {exc}", kind="bucket") from exc

    def _bucket_appears(self) -> bool:
        """Tell whether the bucket exists within a second (another process is creating it)."""
        for delay in (0.02, 0.08, 0.2, 0.7):
            time.sleep(delay)
            try:
                if self.client.bucket_exists(self.bucket):
                    return True
            except (MinioException, HTTPError):
                pass
        return False

    def put(self, data: bytes | BinaryIO, *, content_type: str, size: int | None = None,
            sha256: str | None = None, key: str | None = None) -> StoredObject:
        self.ready()
        key = _checked_key(key) if key else new_key()
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            _check_size(size, len(data))
            # A digest the caller has is not computed again: one pass over the bytes fewer.
            reader = io.BytesIO(data) if sha256 else _HashingReader(io.BytesIO(data))
            length, part_size = len(data), 0
        else:
            sha256 = None  # a stream is hashed as it is read
            reader = _HashingReader(data)
            # Unknown length: minio uploads PART_SIZE parts as they fill, so memory stays bounded.
            length, part_size = (size, 0) if size is not None else (-1, PART_SIZE)
        try:
            self.client.put_object(
                self.bucket, key, reader, length,
                content_type=content_type or "application/octet-stream",
                part_size=part_size,
                # One part in flight at a time keeps memory at one part, not three.
                num_parallel_uploads=1,
            )
        except (MinioException, HTTPError) as exc:
            raise self._error(exc) from exc
        except OSError as exc:  # minio raises IOError when the stream ends before `size`
            raise StorageError(f"Cannot upload attachment: {exc}", kind="size") from exc
        if sha256:
            return StoredObject(key=key, size=length, sha256=sha256)
        return StoredObject(key=key, size=reader.size, sha256=reader.digest.hexdigest())

    def open(self, key: str) -> Iterator[bytes]:
        _checked_key(key)
        try:
            response = self.client.get_object(self.bucket, key)
        except (MinioException, HTTPError) as exc:
            raise self._error(exc, key) from exc
        return self._chunks(response, key)

    def _chunks(self, response: urllib3.BaseHTTPResponse, key: str) -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK_SIZE)
        except HTTPError as exc:
            raise self._error(exc, key) from exc
        finally:
            response.close()
            response.release_conn()

    def delete(self, key: str) -> None:
        _checked_key(key)
        try:
            self.client.remove_object(self.bucket, key)
        except (MinioException, HTTPError) as exc:
            error = self._error(exc, key)
            if error.kind != "missing":
                raise error from exc

    def delete_many(self, keys: list[str]) -> None:
        # One request for up to a thousand keys (S3's DeleteObjects), not one each.
        targets = [DeleteObject(_checked_key(key)) for key in keys]
        try:
            failed = [f"{error.name}: {error.message}" for error in self.client.remove_objects(self.bucket, targets)
                      if error.code not in _MISSING_CODES]
        except (MinioException, HTTPError) as exc:
            raise self._error(exc) from exc
        if failed:
            raise _not_deleted(failed)

    def exists(self, key: str) -> bool:
        _checked_key(key)
        try:
            self.client.stat_object(self.bucket, key)
        except (MinioException, HTTPError) as exc:
            error = self._error(exc, key)
            if error.kind == "missing":
                return False
            raise error from exc
        return True

    def keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.last_modified is not None and obj.last_modified < before:
                    yield obj.object_name
        except (MinioException, HTTPError) as exc:
            raise self._error(exc) from exc

    def check(self) -> None:
        self._bucket_ready = False
        self.ready()


def make_store(
    *,
    s3_endpoint: str | None,
    s3_access_key: str | None,
    s3_secret_key: str | None,
    s3_bucket: str | None,
    s3_secure: bool,
    local_folder: str,
) -> AttachmentStore:
    """Return the S3 store when an endpoint is configured, else the local-folder store."""
    if s3_endpoint:
        if not s3_bucket:
            raise StorageError("S3_ENDPOINT is set but S3_BUCKET is empty", kind="bucket")
        return S3Store(
            s3_endpoint, s3_access_key or "", s3_secret_key or "", s3_bucket, secure=s3_secure,
        )
    return LocalStore(local_folder)
