"""Where encrypted blobs that do not fit in their row live: a folder or S3-compatible storage (K2).

:class:`~caducee.storage.blobs.BlobStore` encrypts and frames; a backend only
stores opaque framed ciphertext under a blob id. Both backends have the same
contract:

- :meth:`ObjectBackend.put` returns only once the bytes are durable (the file
  fsynced and renamed and its folder fsynced; the object store acknowledged the
  upload), so the row that points to them can be committed afterwards: a crash in
  between leaves an orphan object, never a row without its object;
- :meth:`ObjectBackend.open` yields the stored bytes in chunks (streamed, never
  a whole large object in one buffer) and raises :class:`BlobMissing` when absent;
- :meth:`ObjectBackend.listing` lists stored ids with their age, for the sweep
  of orphans.

The S3 backend uses boto3 (botocore's "standard" retry mode: bounded exponential
back-off with jitter on throttling, 5xx and connection errors), uploads with one
``PutObject`` below ``multipart_threshold_bytes`` and a multipart upload above
(aborted on failure), and resumes an interrupted read with a ranged ``GET`` from
the byte it had reached. Credentials come from environment variables named in
the settings (or boto3's usual chain), never from the configuration file.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from caducee.config import Settings

READ_CHUNK_BYTES = 1024 * 1024
S3_MIN_PART_BYTES = 5 * 1024 * 1024


class BlobBackendError(Exception):
    """The blob backend failed (after its retries); the message names no content."""


class BlobMissing(BlobBackendError):
    """No stored object has this id."""


@dataclass(frozen=True)
class StoredObject:
    """One stored object: its blob id and when it was last written."""

    blob_id: str
    modified: datetime


class ObjectBackend(Protocol):
    """Durable storage of framed ciphertext, addressed by blob id."""

    name: str

    def put(self, blob_id: str, chunks: Iterable[bytes], size: int) -> None:
        """Store ``size`` bytes given in ``chunks``; return once durable."""
        ...

    def open(self, blob_id: str) -> Iterator[bytes]:
        """The stored bytes in chunks; :class:`BlobMissing` if there is no such object."""
        ...

    def delete(self, blob_id: str) -> None:
        """Remove the object (no error if it is already gone)."""
        ...

    def listing(self) -> Iterator[StoredObject]:
        """Every stored object (complete ones only)."""
        ...

    def describe(self) -> str:
        """Where the objects are, for messages (no secret)."""
        ...


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FolderBackend:
    """Files under a folder with two levels of fan-out (``ab/cd/abcd…``)."""

    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def put(self, blob_id: str, chunks: Iterable[bytes], size: int) -> None:
        path = self.path_of(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, path)
        _fsync_folder(path.parent)

    def open(self, blob_id: str) -> Iterator[bytes]:
        try:
            handle = self.path_of(blob_id).open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {blob_id} is missing from the blob folder") from None
        return self._chunks(handle)

    @staticmethod
    def _chunks(handle: Any) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                yield chunk

    def delete(self, blob_id: str) -> None:
        self.path_of(blob_id).unlink(missing_ok=True)

    def listing(self) -> Iterator[StoredObject]:
        for path in self.root.glob("??/??/*"):
            if path.name.endswith(".tmp"):
                continue
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue
            yield StoredObject(path.name, modified)

    def describe(self) -> str:
        return f"blob folder {self.root}"


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket (see ``[blobs]`` in the example configuration)."""

    bucket: str
    endpoint_url: str = ""
    region: str = "us-east-1"
    prefix: str = "blobs/"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: str = "auto"
    verify_tls: bool = True
    ca_bundle: str = ""
    max_attempts: int = 5
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    multipart_threshold_bytes: int = 16 * 1024 * 1024
    part_size_bytes: int = 8 * 1024 * 1024


class S3Backend:
    """Objects ``<prefix><blob id>`` in one bucket of an S3-compatible store."""

    name = "s3"

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (boto3 is imported only for this backend)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            options = self.options
            config = Config(
                region_name=options.region or None,
                retries={"mode": "standard", "max_attempts": options.max_attempts},
                connect_timeout=options.connect_timeout_seconds,
                read_timeout=options.read_timeout_seconds,
                s3={"addressing_style": options.addressing_style},
                # Checksums on every request only where the store supports them.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            verify: bool | str = options.verify_tls
            if options.verify_tls and options.ca_bundle:
                verify = options.ca_bundle
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=options.endpoint_url or None,
                aws_access_key_id=options.access_key_id,
                aws_secret_access_key=options.secret_access_key,
                config=config,
                verify=verify,
            )
        return self._client

    def key_of(self, blob_id: str) -> str:
        return self.options.prefix + blob_id

    def _fail(self, action: str, blob_id: str, error: Exception) -> BlobBackendError:
        code = _error_code(error)
        return BlobBackendError(
            f"object store {self.describe()}: {action} {blob_id} failed ({code})"
        )

    def put(self, blob_id: str, chunks: Iterable[bytes], size: int) -> None:
        key = self.key_of(blob_id)
        try:
            if size < self.options.multipart_threshold_bytes:
                body = b"".join(chunks)
                self.client.put_object(Bucket=self.options.bucket, Key=key, Body=body)
            else:
                self._multipart(key, chunks)
        except BlobBackendError:
            raise
        except Exception as error:
            raise self._fail("storing", blob_id, error) from None

    def _multipart(self, key: str, chunks: Iterable[bytes]) -> None:
        bucket = self.options.bucket
        part_size = max(self.options.part_size_bytes, S3_MIN_PART_BYTES)
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for number, body in enumerate(_parts(chunks, part_size), start=1):
                answer = self.client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # On failure here too, the store's lifecycle rule expires the abandoned upload.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def open(self, blob_id: str) -> Iterator[bytes]:
        first = self._get(blob_id, 0)
        return self._stream(blob_id, first)

    def _get(self, blob_id: str, offset: int) -> Any:
        arguments: dict[str, Any] = {"Bucket": self.options.bucket, "Key": self.key_of(blob_id)}
        if offset:
            arguments["Range"] = f"bytes={offset}-"
        try:
            return self.client.get_object(**arguments)
        except Exception as error:
            if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
                raise BlobMissing(f"blob {blob_id} is missing from {self.describe()}") from None
            raise self._fail("reading", blob_id, error) from None

    def _stream(self, blob_id: str, answer: Any) -> Iterator[bytes]:
        """Yield the body; on a broken stream, resume with a ranged GET (bounded attempts)."""
        from botocore.exceptions import BotoCoreError

        total = int(answer.get("ContentLength", 0))
        etag = answer.get("ETag")
        offset = 0
        attempts = 0
        while True:
            try:
                for chunk in answer["Body"].iter_chunks(READ_CHUNK_BYTES):
                    offset += len(chunk)
                    yield chunk
                return
            except (BotoCoreError, OSError) as error:
                attempts += 1
                if attempts >= self.options.max_attempts or offset >= total:
                    raise self._fail("reading", blob_id, error) from None
                time.sleep(min(0.1 * 2**attempts, 5.0))
                answer = self._get(blob_id, offset)
                if etag and answer.get("ETag") != etag:
                    raise BlobBackendError(
                        f"object store {self.describe()}: {blob_id} changed while being read"
                    ) from None

    def delete(self, blob_id: str) -> None:
        try:
            self.client.delete_object(Bucket=self.options.bucket, Key=self.key_of(blob_id))
        except Exception as error:
            raise self._fail("deleting", blob_id, error) from None

    def listing(self) -> Iterator[StoredObject]:
        prefix = self.options.prefix
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.options.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                blob_id = str(item["Key"])[len(prefix) :]
                if blob_id and "/" not in blob_id:
                    yield StoredObject(blob_id, item["LastModified"])

    def check(self) -> None:
        """Raise :class:`BlobBackendError` unless the bucket answers and lets us list it."""
        try:
            self.client.head_bucket(Bucket=self.options.bucket)
            self.client.list_objects_v2(
                Bucket=self.options.bucket, Prefix=self.options.prefix, MaxKeys=1
            )
        except Exception as error:
            raise BlobBackendError(
                f"object store {self.describe()}: not reachable ({_error_code(error)})"
            ) from None

    def describe(self) -> str:
        where = self.options.endpoint_url or f"AWS S3 ({self.options.region})"
        return f"bucket {self.options.bucket!r} at {where}"


def _error_code(error: Exception) -> str:
    """A short, secret-free name of an S3 failure (the error code, else the exception type)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def _parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    """Regroup ``chunks`` into parts of exactly ``part_size`` bytes (the last one shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


def make_backend(settings: Settings, environ: Mapping[str, str] | None = None) -> ObjectBackend:
    """The backend ``[blobs] backend`` names; S3 credentials are read from the environment."""
    blobs = settings.blobs
    if blobs.backend == "folder":
        return FolderBackend(settings.path(blobs.path))
    environ = os.environ if environ is None else environ
    return S3Backend(
        S3Options(
            bucket=blobs.bucket,
            endpoint_url=blobs.endpoint_url,
            region=blobs.region,
            prefix=blobs.prefix,
            access_key_id=environ.get(blobs.access_key_id_env) or None,
            secret_access_key=environ.get(blobs.secret_access_key_env) or None,
            addressing_style=blobs.addressing_style,
            verify_tls=blobs.verify_tls,
            ca_bundle=str(settings.path_of(blobs.ca_bundle)) if blobs.ca_bundle else "",
            max_attempts=blobs.max_attempts,
            connect_timeout_seconds=blobs.connect_timeout_seconds,
            read_timeout_seconds=blobs.read_timeout_seconds,
            multipart_threshold_bytes=blobs.multipart_threshold_bytes,
            part_size_bytes=blobs.part_size_bytes,
        )
    )
