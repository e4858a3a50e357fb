"""Encrypted blob store (J1): rows here, large ciphertext in a folder or an object store (K2).

Every blob (a message body, a document) is encrypted with AES-256-GCM under a
data key of its own. The data key is wrapped (RFC 3394 AES key wrap) by the
active key-encryption key and stored in the ``blobs`` table, not beside the
file: rotating the KEK rewraps small rows and never rewrites the blobs, and a
copy of the blob folder alone reveals nothing. The blob id is bound into the
GCM tag as associated data, so swapping two files is detected like any other
tampering.

Framing: ``MAGIC`` (5 bytes) + nonce (12 bytes) + ciphertext and tag. Large
blobs are objects of a backend (:mod:`caducee.storage.blob_backends`: files
fsynced and renamed in a folder, or objects acknowledged by S3-compatible
storage), stored before the row that points to them can be committed. Blobs up
to ``inline_max_bytes`` keep the same framed ciphertext in their row instead:
one database commit then makes a whole batch of small messages durable, where
a file each would cost two fsyncs each (see ``bench/``).

Writing is split in two so that the slow part can run anywhere: :meth:`BlobStore.seal`
encrypts (and stores the object), :meth:`BlobStore.record` adds the row to a
transaction. :meth:`BlobStore.sweep` deletes objects left without a row.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import LargeBinary, String, event, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.config import Settings
from caducee.storage.blob_backends import (
    BlobBackendError,
    BlobMissing,
    FolderBackend,
    ObjectBackend,
    StoredObject,
    make_backend,
)
from caducee.storage.db import Base, UtcDateTime, table_of, utcnow
from caducee.storage.keyring import Keyring

log = logging.getLogger("caducee.blobs")

MAGIC = b"CADB\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
STREAM_CHUNK_BYTES = 1024 * 1024

Observer = Callable[[str, str, float], None]
"""Told ``(operation, backend, seconds)`` after each object put and get (metrics)."""


class BlobError(Exception):
    """A blob cannot be read: unknown, missing, or its integrity check failed.

    A backend that fails for a while (network, throttling) raises
    :class:`~caducee.storage.blob_backends.BlobBackendError` instead, which is
    not a ``BlobError``: jobs retry it rather than giving up.
    """


class BlobIntegrityError(BlobError):
    """The stored bytes were altered, truncated, or do not belong to this blob id."""


class BlobRow(Base):
    """Where a blob is, and its data key wrapped by a key-encryption key."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    size: Mapped[int]
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at = mapped_column(UtcDateTime(), default=utcnow, nullable=False)


_INSERT_BLOB = table_of(BlobRow).insert()


@dataclass(frozen=True)
class SealedBlob:
    """An encrypted blob ready to be recorded: its file is durable, or its bytes are inline."""

    id: str
    kek_id: str
    wrapped_key: bytes
    size: int
    inline: bytes | None


@dataclass(frozen=True)
class RewrapReport:
    """What one pass of KEK rotation did."""

    rewrapped: int
    new_kek_id: str


def _associated_data(blob_id: str) -> bytes:
    return b"caducee-blob-v1:" + blob_id.encode("ascii")


class BlobStore:
    """Writes and reads encrypted blobs; rows go through the caller's session.

    Large blobs go to an :class:`~caducee.storage.blob_backends.ObjectBackend`
    (a folder by default, or S3-compatible object storage); the encryption, the
    framing and the rows are the same whatever the backend.
    """

    def __init__(
        self,
        root: Path,
        keyring: Keyring,
        *,
        inline_max_bytes: int = 0,
        backend: ObjectBackend | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.root = root
        self.keyring = keyring
        self.inline_max_bytes = inline_max_bytes
        self.backend: ObjectBackend = backend if backend is not None else FolderBackend(root)
        self.observe = observe

    def path_of(self, blob_id: str) -> Path:
        """Where the file of ``blob_id`` lives with the folder backend (two levels of fan-out)."""
        return FolderBackend(self.root).path_of(blob_id)

    def _timed(self, operation: str, started: float) -> None:
        if self.observe is not None:
            self.observe(operation, self.backend.name, time.perf_counter() - started)

    def seal(self, data: bytes) -> SealedBlob:
        """Encrypt ``data`` under a new data key; store it durably unless small enough to inline."""
        if len(data) <= self.inline_max_bytes:
            blob_id = uuid.uuid4().hex
            data_key = AESGCM.generate_key(bit_length=256)
            nonce = secrets.token_bytes(NONCE_BYTES)
            framed = (
                MAGIC + nonce + AESGCM(data_key).encrypt(nonce, data, _associated_data(blob_id))
            )
            kek_id, kek = self.keyring.active()
            return SealedBlob(blob_id, kek_id, aes_key_wrap(kek, data_key), len(data), framed)
        return self.seal_stream(
            (data[at : at + STREAM_CHUNK_BYTES] for at in range(0, len(data), STREAM_CHUNK_BYTES)),
            size=len(data),
        )

    def seal_stream(self, chunks: Iterable[bytes], *, size: int) -> SealedBlob:
        """Encrypt ``size`` bytes given in ``chunks`` straight into the backend (never inline).

        The ciphertext is produced and stored chunk by chunk (a multipart upload
        for large objects), with the same framing as :meth:`seal`.
        """
        blob_id = uuid.uuid4().hex
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_BYTES)
        seen = [0]

        def framed() -> Iterator[bytes]:
            encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
            encryptor.authenticate_additional_data(_associated_data(blob_id))
            yield MAGIC + nonce
            for chunk in chunks:
                seen[0] += len(chunk)
                yield encryptor.update(chunk)
            yield encryptor.finalize() + encryptor.tag

        started = time.perf_counter()
        self.backend.put(blob_id, framed(), len(MAGIC) + NONCE_BYTES + size + TAG_BYTES)
        self._timed("put", started)
        if seen[0] != size:
            self._discard(blob_id)
            raise BlobError(f"blob {blob_id}: {seen[0]} bytes given, {size} announced")
        kek_id, kek = self.keyring.active()
        return SealedBlob(blob_id, kek_id, aes_key_wrap(kek, data_key), size, None)

    def _discard(self, blob_id: str) -> None:
        try:
            self.backend.delete(blob_id)
        except BlobBackendError:
            log.warning("blob object not deleted; the sweep will", extra={"blob": blob_id})

    def record(self, session: Session, sealed: SealedBlob) -> str:
        """Add the row of a sealed blob to ``session``; visible when the caller commits.

        A rollback leaves an orphan object (for large blobs) that :meth:`orphans` finds.
        """
        session.connection().execute(
            _INSERT_BLOB,
            {
                "id": sealed.id,
                "kek_id": sealed.kek_id,
                "wrapped_key": sealed.wrapped_key,
                "size": sealed.size,
                "data": sealed.inline,
                "created_at": utcnow(),
            },
        )
        return sealed.id

    def write(self, session: Session, data: bytes) -> str:
        """Seal ``data`` and record it in ``session``; return the blob id."""
        return self.record(session, self.seal(data))

    def read(self, session: Session, blob_id: str) -> bytes:
        """Decrypt a blob; raise :class:`BlobIntegrityError` on any tampering.

        An object is decrypted as it streams in; nothing is returned before the
        GCM tag has been checked.
        """
        row = session.get(BlobRow, blob_id)
        if row is None:
            raise BlobError(f"blob {blob_id} is unknown")
        try:
            data_key = aes_key_unwrap(self.keyring.key(row.kek_id), row.wrapped_key)
        except InvalidUnwrap:
            raise BlobIntegrityError(f"blob {blob_id}: its wrapped data key was altered") from None
        if row.data is not None:
            data = _decrypt(blob_id, data_key, iter((row.data,)))
        else:
            started = time.perf_counter()
            try:
                data = _decrypt(blob_id, data_key, self.backend.open(blob_id))
            except BlobMissing as missing:
                raise BlobError(str(missing)) from None
            self._timed("get", started)
        if len(data) != row.size:
            raise BlobIntegrityError(f"blob {blob_id} has the wrong length")
        return data

    def delete(self, session: Session, blob_id: str) -> None:
        """Remove the row now and the object once the caller commits.

        Deleting the object only after the commit keeps "never a row without its
        object" true when the transaction rolls back; a crash after the commit
        leaves an orphan for the sweep.
        """
        row = session.get(BlobRow, blob_id)
        if row is None:
            return
        stored = row.data is None
        session.delete(row)
        if stored:
            _after_commit(session, self, blob_id)

    def rewrap_batch(self, session: Session, new_kek_id: str, batch_size: int = 500) -> int:
        """Rewrap up to ``batch_size`` data keys not yet under ``new_kek_id``; return how many."""
        new_kek = self.keyring.key(new_kek_id)
        rows = session.execute(
            select(BlobRow.id, BlobRow.kek_id, BlobRow.wrapped_key)
            .where(BlobRow.kek_id != new_kek_id)
            .limit(batch_size)
        ).all()
        for blob_id, kek_id, wrapped in rows:
            data_key = aes_key_unwrap(self.keyring.key(kek_id), wrapped)
            session.execute(
                update(BlobRow)
                .where(BlobRow.id == blob_id, BlobRow.kek_id == kek_id)
                .values(kek_id=new_kek_id, wrapped_key=aes_key_wrap(new_kek, data_key))
            )
        return len(rows)

    def kek_ids_in_use(self, session: Session) -> set[str]:
        """Every KEK id some blob row still refers to."""
        return set(session.scalars(select(BlobRow.kek_id).distinct()))

    def orphans(
        self, session: Session, *, older_than: timedelta = timedelta(0)
    ) -> list[StoredObject]:
        """Stored objects with no row, last written more than ``older_than`` ago.

        They are left by transactions that rolled back (or crashed) after the
        object was stored. The grace period spares objects whose row is about to
        be committed.
        """
        cutoff = datetime.now(UTC) - older_than
        found: list[StoredObject] = []
        batch: list[StoredObject] = []

        def flush() -> None:
            ids = [item.blob_id for item in batch]
            known = set(session.scalars(select(BlobRow.id).where(BlobRow.id.in_(ids))))
            found.extend(item for item in batch if item.blob_id not in known)
            batch.clear()

        for item in self.backend.listing():
            if item.modified <= cutoff:
                batch.append(item)
                if len(batch) >= 500:
                    flush()
        if batch:
            flush()
        return found

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        keyring: Keyring,
        *,
        observe: Observer | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> BlobStore:
        """The blob store ``[blobs]`` describes (folder or S3-compatible storage)."""
        return cls(
            settings.path(settings.blobs.path),
            keyring,
            inline_max_bytes=settings.blobs.inline_max_bytes,
            backend=make_backend(settings, environ),
            observe=observe,
        )

    def sweep(
        self, session: Session, *, older_than: timedelta, dry_run: bool = True
    ) -> list[StoredObject]:
        """Delete (unless ``dry_run``) the orphans older than ``older_than``; return them."""
        orphans = self.orphans(session, older_than=older_than)
        if not dry_run:
            for item in orphans:
                self.backend.delete(item.blob_id)
        return orphans


def _decrypt(blob_id: str, data_key: bytes, chunks: Iterator[bytes]) -> bytes:
    """Check the framing and decrypt streamed ``chunks``; the tag is checked before returning."""
    header = bytearray()
    held = bytearray()
    output: list[bytes] = []
    decryptor = None
    for chunk in chunks:
        if decryptor is None:
            header += chunk
            if len(header) < len(MAGIC) + NONCE_BYTES:
                continue
            if not header.startswith(MAGIC):
                raise BlobIntegrityError(f"blob {blob_id} is truncated or not a Caducée blob")
            nonce = bytes(header[len(MAGIC) : len(MAGIC) + NONCE_BYTES])
            decryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).decryptor()
            decryptor.authenticate_additional_data(_associated_data(blob_id))
            chunk = bytes(header[len(MAGIC) + NONCE_BYTES :])
        held += chunk
        if len(held) > TAG_BYTES:
            output.append(decryptor.update(bytes(held[:-TAG_BYTES])))
            del held[:-TAG_BYTES]
    if decryptor is None or len(held) < TAG_BYTES:
        raise BlobIntegrityError(f"blob {blob_id} is truncated or not a Caducée blob")
    try:
        output.append(decryptor.finalize_with_tag(bytes(held)))
    except InvalidTag:
        raise BlobIntegrityError(
            f"blob {blob_id} failed its integrity check: the stored bytes were altered"
        ) from None
    return b"".join(output)


_PENDING_DELETES = "caducee.blob_deletes"


def _after_commit(session: Session, store: BlobStore, blob_id: str) -> None:
    """Delete ``blob_id``'s object once ``session`` commits; forget it on rollback."""
    pending: list[tuple[BlobStore, str]] | None = session.info.get(_PENDING_DELETES)
    if pending is None:
        pending = session.info[_PENDING_DELETES] = []

        def committed(_session: Session) -> None:
            todo = list(pending)
            pending.clear()
            for owner, victim in todo:
                owner._discard(victim)

        def rolled_back(_session: Session) -> None:
            pending.clear()

        event.listen(session, "after_commit", committed)
        event.listen(session, "after_rollback", rolled_back)
    pending.append((store, blob_id))
