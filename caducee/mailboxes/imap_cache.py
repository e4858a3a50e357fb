"""The encrypted IMAP structure of a message, written when the message is stored.

A first IMAP listing of mail that arrived by SMTP used to pay, per message, a
decryption of the whole message, a MIME parse, an encryption and a commit
(issue 15: the cold listing ran at 0.14× Dovecot). Delivery now seals the
structure beside the message (:func:`seal_structure`) and records it in the
same transaction (:func:`record_structure`), so IMAP only decrypts a small
blob. This module sits apart from :mod:`caducee.mailboxes.imap_store` because
delivery cannot import the store (the store imports delivery's folder helpers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from caducee.mailboxes.imap_models import StructureCache
from caducee.mailboxes.imap_structure import (
    STRUCTURE_VERSION,
    MessageStructure,
    envelope_record,
    parse_message,
)
from caducee.storage.blobs import BlobStore, SealedBlob
from caducee.storage.db import utcnow

_CACHE = cast(Table, StructureCache.__table__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A thread-safe least-recently-used map bounded by the bytes its values are charged.

    IMAP keeps decrypted message structures and small message bytes of this process
    here (issue 15: a warm listing or a message opened again should cost neither a
    query nor a decryption). Messages never change once stored, so entries need no
    invalidation; the bound is in bytes, not entries, because one entry can be a
    100-byte structure or a 256 KiB message. Nothing here is ever written out (J1).
    """

    def __init__(self, max_bytes: int, *, max_item_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = max_bytes if max_item_bytes is None else max_item_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The cached values among ``keys`` (one lock for a whole batch)."""
        found: dict[K, V] = {}
        with self._lock:
            items = self._items
            for key in keys:
                item = items.get(key)
                if item is not None:
                    items.move_to_end(key)
                    found[key] = item[0]
        return found

    def put(self, key: K, value: V, size: int) -> None:
        """Keep ``value``, charged ``size`` bytes (not kept above ``max_item_bytes``)."""
        if size > self.max_item_bytes or self.max_bytes <= 0:
            return
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                self.bytes -= previous[1]
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


@dataclass(frozen=True)
class SealedStructure(SealedBlob):
    """A sealed structure and, sealed apart, the message's rendered ENVELOPE.

    A :class:`SealedBlob` (the structure) so that delivery and SMTP pass it along
    unchanged; :func:`record_structure` records both. A listing
    (``FETCH 1:* (FLAGS ENVELOPE)``) then decrypts the small envelope record and
    never parses the structure (issue 15: a cold listing in a fresh process). One
    record per message, like the message itself: messages never change.
    """

    envelope: SealedBlob | None = None


def seal_structure(blobs: BlobStore, content: bytes) -> SealedBlob | None:
    """The encrypted IMAP structure of a message, ready to record (best outside transactions).

    A :class:`SealedStructure` (structure and rendered ENVELOPE), or None if the
    parser fails: a parser defect must never cost a delivery (the message is still
    stored; IMAP then tries again at first access, where a failure costs one FETCH,
    not the mail).
    """
    try:
        structure = parse_message(content)
        envelope = envelope_record(structure)
    except Exception:  # see above; the parser is fuzzed not to raise
        return None
    return seal_parsed(blobs, structure, envelope)


def seal_parsed(
    blobs: BlobStore, structure: MessageStructure, envelope: bytes | None = None
) -> SealedStructure:
    """A parsed structure sealed with its ENVELOPE record (APPEND parses for itself)."""
    sealed = blobs.seal(structure.to_json())
    if envelope is None:
        envelope = envelope_record(structure)
    return SealedStructure(
        id=sealed.id,
        kek_id=sealed.kek_id,
        wrapped_key=sealed.wrapped_key,
        size=sealed.size,
        inline=sealed.inline,
        envelope=blobs.seal(envelope),
    )


def record_structure(
    session: Session, blobs: BlobStore, message_id: int, sealed: SealedBlob
) -> None:
    """Record a structure sealed by :func:`seal_structure` for ``message_id`` (caller commits).

    Its ENVELOPE record too when it has one (a :class:`SealedStructure`).
    """
    envelope = sealed.envelope if isinstance(sealed, SealedStructure) else None
    session.connection().execute(
        insert(_CACHE).values(
            message_id=message_id,
            blob_id=blobs.record(session, sealed),
            version=STRUCTURE_VERSION,
            created_at=utcnow(),
            envelope_blob_id=blobs.record(session, envelope) if envelope is not None else None,
        )
    )
