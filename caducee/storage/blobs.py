"""Encrypted blob store on a folder (J1).

Every blob (a message body, a document) is encrypted with AES-256-GCM under a
data key of its own. The data key is wrapped (RFC 3394 AES key wrap) by the
active key-encryption key and stored in the ``blobs`` table, not beside the
file: rotating the KEK rewraps small rows and never rewrites the blobs, and a
copy of the blob folder alone reveals nothing. The blob id is bound into the
GCM tag as associated data, so swapping two files is detected like any other
tampering.

Framing: ``MAGIC`` (5 bytes) + nonce (12 bytes) + ciphertext and tag. Large
blobs are files, written to a temporary name, fsynced and renamed, and their
folder fsynced, before the row that points to them can be committed. Blobs up
to ``inline_max_bytes`` keep the same framed ciphertext in their row instead:
one database commit then makes a whole batch of small messages durable, where
a file each would cost two fsyncs each (see ``bench/``).

Writing is split in two so that the slow part can run anywhere: :meth:`BlobStore.seal`
encrypts (and writes the file), :meth:`BlobStore.record` adds the row to a
transaction.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import LargeBinary, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, UtcDateTime, table_of, utcnow
from caducee.storage.keyring import Keyring

MAGIC = b"CADB\x01"
NONCE_BYTES = 12


class BlobError(Exception):
    """A blob cannot be read: missing, or its integrity check failed."""


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


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class BlobStore:
    """Writes and reads encrypted blobs; rows go through the caller's session."""

    def __init__(self, root: Path, keyring: Keyring, *, inline_max_bytes: int = 0) -> None:
        self.root = root
        self.keyring = keyring
        self.inline_max_bytes = inline_max_bytes

    def path_of(self, blob_id: str) -> Path:
        """Where the file of ``blob_id`` lives (two levels of fan-out)."""
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def seal(self, data: bytes) -> SealedBlob:
        """Encrypt ``data`` under a new data key; write it to a durable file unless small."""
        blob_id = uuid.uuid4().hex
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_BYTES)
        framed = MAGIC + nonce + AESGCM(data_key).encrypt(nonce, data, _associated_data(blob_id))
        inline: bytes | None = framed
        if len(data) > self.inline_max_bytes:
            self._write_file(blob_id, framed)
            inline = None
        kek_id, kek = self.keyring.active()
        return SealedBlob(blob_id, kek_id, aes_key_wrap(kek, data_key), len(data), inline)

    def _write_file(self, blob_id: str, framed: bytes) -> None:
        path = self.path_of(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(framed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)

    def record(self, session: Session, sealed: SealedBlob) -> str:
        """Add the row of a sealed blob to ``session``; visible when the caller commits.

        A rollback leaves an orphan file (for large blobs) that :meth:`orphans` finds.
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
        """Decrypt a blob; raise :class:`BlobIntegrityError` on any tampering."""
        row = session.get(BlobRow, blob_id)
        if row is None:
            raise BlobError(f"blob {blob_id} is unknown")
        if row.data is not None:
            raw = row.data
        else:
            try:
                raw = self.path_of(blob_id).read_bytes()
            except FileNotFoundError:
                raise BlobError(f"blob {blob_id} is missing from the blob folder") from None
        if len(raw) < len(MAGIC) + NONCE_BYTES + 16 or not raw.startswith(MAGIC):
            raise BlobIntegrityError(f"blob {blob_id} is truncated or not a Caducée blob")
        try:
            data_key = aes_key_unwrap(self.keyring.key(row.kek_id), row.wrapped_key)
        except InvalidUnwrap:
            raise BlobIntegrityError(f"blob {blob_id}: its wrapped data key was altered") from None
        nonce = raw[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            data = AESGCM(data_key).decrypt(
                nonce, raw[len(MAGIC) + NONCE_BYTES :], _associated_data(blob_id)
            )
        except InvalidTag:
            raise BlobIntegrityError(
                f"blob {blob_id} failed its integrity check: the stored bytes were altered"
            ) from None
        if len(data) != row.size:
            raise BlobIntegrityError(f"blob {blob_id} has the wrong length")
        return data

    def delete(self, session: Session, blob_id: str) -> None:
        """Remove the row now and the file once the caller commits."""
        row = session.get(BlobRow, blob_id)
        if row is not None:
            session.delete(row)
        self.path_of(blob_id).unlink(missing_ok=True)

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

    def orphans(self, session: Session) -> list[Path]:
        """Blob files with no row (left by rolled-back transactions)."""
        known = set(session.scalars(select(BlobRow.id).where(BlobRow.data.is_(None))))
        return [
            path
            for path in self.root.glob("??/??/*")
            if not path.name.endswith(".tmp") and path.name not in known
        ]
