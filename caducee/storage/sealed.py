"""Columns sealed at rest (J1): subjects, document titles, author and patient names.

Bodies and documents are blobs with their own data keys (:mod:`caducee.storage.blobs`). The
short texts that describe them — a subject, a document's title, its author's and
organisation's names, a patient's names — sit in ordinary columns, and a database dump would
show them. :class:`SealedText` is the column type for them: the value is encrypted with
AES-256-GCM before it is bound and decrypted when it is read, so the ORM and Core queries of
the rest of the code see plain strings and the database only ever holds
``s1:<kek id>:<nonce + ciphertext, base64url>``.

Keys. The column key is derived (HKDF-SHA256) from a key-encryption key of the keyring, named
in every value, so a value sealed before ``caducee keys rotate`` still opens with its retired
KEK and new values use the active one. The associated data is the column's label (for example
``documents.title``): a value copied into another column does not open.

Where the key lives. A :class:`ColumnSealer` is attached to the SQLAlchemy dialect of one
:class:`~caducee.storage.db.Database` (:meth:`Database.seal_with`): the type reaches it through
the ``dialect`` argument SQLAlchemy hands to every bind and result processor, so no module
keeps a global key. A handle without a sealer refuses to write or read a sealed column rather
than storing it in clear.

What this costs in search. No query filters or sorts on a sealed column in SQL: the patient's
documents are listed per patient and filtered after decryption (a bounded list), IMAP SEARCH
reads the encrypted parsed structure per mailbox. An exact match on a sealed value, if one is
ever needed, takes a blind index (HMAC of the normalised value) beside the column.
"""

from __future__ import annotations

import base64
import secrets
import threading
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Dialect
from sqlalchemy.types import Text, TypeDecorator

from caducee.storage.keyring import Keyring

PREFIX = "s1:"
NONCE_BYTES = 12
_KEY_INFO = b"caducee sealed columns v1"
DIALECT_ATTRIBUTE = "caducee_column_sealer"


class SealedColumnError(Exception):
    """A sealed value could not be written or read (no key on this handle, or tampering)."""


class ColumnSealer:
    """Seals and opens column values with keys derived from a keyring's KEKs."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._lock = threading.Lock()
        self._derived: dict[str, AESGCM] = {}

    def _cipher(self, kek_id: str, kek: bytes | None = None) -> AESGCM:
        with self._lock:
            cipher = self._derived.get(kek_id)
        if cipher is not None:
            return cipher
        material = kek if kek is not None else self.keyring.key(kek_id)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(material)
        cipher = AESGCM(key)
        with self._lock:
            self._derived[kek_id] = cipher
        return cipher

    def seal(self, value: str, label: str) -> str:
        """The stored form of ``value`` for the column ``label``."""
        kek_id, kek = self.keyring.active()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._cipher(kek_id, kek).encrypt(
            nonce, value.encode("utf-8"), label.encode("ascii")
        )
        encoded = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{PREFIX}{kek_id}:{encoded}"

    def open(self, stored: str, label: str) -> str:
        """The value sealed in ``stored`` for the column ``label``."""
        if not stored.startswith(PREFIX):
            raise SealedColumnError(f"{label}: a value in clear where a sealed value belongs")
        try:
            kek_id, encoded = stored[len(PREFIX) :].split(":", 1)
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            plain = self._cipher(kek_id).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], label.encode("ascii")
            )
        except (ValueError, InvalidTag) as error:
            raise SealedColumnError(f"{label}: a sealed value does not open") from error
        return plain.decode("utf-8")


def is_sealed(stored: str) -> bool:
    """Whether a stored value is already in its sealed form (used by the data migration)."""
    return stored.startswith(PREFIX)


def attach(dialect: Dialect, sealer: ColumnSealer) -> None:
    """Make ``sealer`` the one every sealed column bound or read through ``dialect`` uses."""
    setattr(dialect, DIALECT_ATTRIBUTE, sealer)


def sealer_of(dialect: Dialect) -> ColumnSealer:
    """The sealer attached to ``dialect``; refuses rather than falling back to clear text."""
    sealer = getattr(dialect, DIALECT_ATTRIBUTE, None)
    if not isinstance(sealer, ColumnSealer):
        raise SealedColumnError(
            "this database handle has no column key: open it with its home's keyring "
            "(Database.seal_with)"
        )
    return sealer


class SealedText(TypeDecorator[str]):
    """A text column stored sealed; ``label`` (``table.column``) is its associated data."""

    impl = Text
    cache_ok = True

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).seal(value, self.label)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).open(value, self.label)

    def copy(self, **kwargs: Any) -> SealedText:
        return SealedText(self.label)
