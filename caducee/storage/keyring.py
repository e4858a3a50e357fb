"""The key-encryption keys (KEKs) that wrap every blob's data key.

A keyring is a folder of 256-bit keys, one file per key named ``<id>.key``,
and a file ``active`` naming the key that wraps new data keys. Retired keys
move to ``retired/`` and stay readable, so a process that has not yet seen a
rotation keeps working: rotation needs no downtime. The active key is re-read
whenever the ``active`` file changes, so long-running servers follow a
rotation made by ``caducee keys rotate`` in another process.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

KEY_BYTES = 32
ACTIVE_FILE = "active"
RETIRED_FOLDER = "retired"


class KeyringError(Exception):
    """The keyring is missing, unreadable or lacks a key that data refers to."""


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Keyring:
    """Loads KEKs from a folder; thread-safe; follows rotations made elsewhere."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._active_id = ""
        self._active_stamp: tuple[int, int] = (0, 0)
        self._refresh_active()

    @staticmethod
    def create(folder: Path) -> Keyring:
        """Create a keyring with one fresh active key; refuse to overwrite one."""
        if (folder / ACTIVE_FILE).exists():
            raise KeyringError(f"a keyring already exists in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        Keyring._add_key(folder)
        return Keyring(folder)

    @staticmethod
    def _add_key(folder: Path) -> str:
        key_id = datetime.now(UTC).strftime("kek-%Y%m%dT%H%M%S-") + secrets.token_hex(4)
        encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
        _write_private(folder / f"{key_id}.key", encoded + "\n")
        _write_private(folder / ACTIVE_FILE, key_id + "\n")
        return key_id

    def _refresh_active(self) -> None:
        path = self.folder / ACTIVE_FILE
        try:
            status = path.stat()
            stamp = (status.st_mtime_ns, status.st_ino)
            if stamp == self._active_stamp and self._active_id:
                return
            active_id = path.read_text(encoding="ascii").strip()
        except OSError as error:
            raise KeyringError(
                f"cannot read the keyring's active key file {path}: {error}"
            ) from None
        self._load(active_id)
        self._active_id = active_id
        self._active_stamp = stamp

    def _load(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is not None:
            return key
        if not key_id or "/" in key_id or key_id.startswith("."):
            raise KeyringError(f"invalid key id {key_id!r}")
        for candidate in (
            self.folder / f"{key_id}.key",
            self.folder / RETIRED_FOLDER / f"{key_id}.key",
        ):
            if candidate.exists():
                try:
                    key = base64.b64decode(
                        candidate.read_text(encoding="ascii").strip(), validate=True
                    )
                except (OSError, ValueError) as error:
                    raise KeyringError(f"key file {candidate} is unreadable: {error}") from None
                if len(key) != KEY_BYTES:
                    raise KeyringError(f"key file {candidate} does not hold a 256-bit key")
                self._keys[key_id] = key
                return key
        raise KeyringError(f"key-encryption key {key_id} is not in the keyring {self.folder}")

    @property
    def active_id(self) -> str:
        """The id of the key that wraps new data keys."""
        with self._lock:
            self._refresh_active()
            return self._active_id

    def active(self) -> tuple[str, bytes]:
        """The active key id and key."""
        with self._lock:
            self._refresh_active()
            return self._active_id, self._keys[self._active_id]

    def key(self, key_id: str) -> bytes:
        """The key with this id, active or retired."""
        with self._lock:
            return self._load(key_id)

    def rotate(self) -> str:
        """Make a new key the active one and return its id; old keys stay readable."""
        with self._lock:
            key_id = self._add_key(self.folder)
            self._active_stamp = (0, 0)
            self._refresh_active()
            return key_id

    def retire(self, key_id: str) -> None:
        """Move a key that no data refers to any more out of the active folder."""
        with self._lock:
            if key_id == self._active_id:
                raise KeyringError("the active key cannot be retired")
            source = self.folder / f"{key_id}.key"
            if source.exists():
                retired = self.folder / RETIRED_FOLDER
                retired.mkdir(mode=0o700, exist_ok=True)
                os.replace(source, retired / source.name)

    def key_ids(self) -> list[str]:
        """Ids of the keys in the active folder (not retired), oldest first."""
        return sorted(path.stem for path in self.folder.glob("*.key"))
