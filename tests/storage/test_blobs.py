"""J1: message bodies and documents are encrypted at rest; tampering is detected; keys rotate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caducee.config import load_settings
from caducee.gateway.cli import main
from caducee.gateway.runtime import build_gateway
from caducee.storage.blobs import BlobError, BlobIntegrityError, BlobRow, BlobStore
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring

PLAINTEXT = b"Compte rendu de biologie: TSH 2.1 mUI/L. Patiente PAT-TROIS Dominique. " * 50


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", Keyring.create(tmp_path / "kek"))


def test_j1_blob_round_trip_and_no_plaintext_on_disk(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    raw = store.path_of(blob_id).read_bytes()
    assert b"PAT-TROIS" not in raw and b"TSH" not in raw and PLAINTEXT[:16] not in raw
    with database.transaction() as session:
        assert store.read(session, blob_id) == PLAINTEXT
    # nothing of the plaintext lands anywhere else in the blob folder either
    for path in store.root.rglob("*"):
        if path.is_file():
            assert b"PAT-TROIS" not in path.read_bytes()


@pytest.mark.parametrize("offset", [0, 3, 5, 10, 17, 100, -1])
def test_j1_flipping_one_byte_fails_the_read_clearly(
    store: BlobStore, database: Database, offset: int
) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    path = store.path_of(blob_id)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with database.transaction() as session, pytest.raises(BlobIntegrityError, match=blob_id):
        store.read(session, blob_id)


def test_j1_swapped_blob_files_are_detected(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        first = store.write(session, b"first document")
        second = store.write(session, b"second document")
    first_bytes = store.path_of(first).read_bytes()
    store.path_of(first).write_bytes(store.path_of(second).read_bytes())
    store.path_of(second).write_bytes(first_bytes)
    with database.transaction() as session, pytest.raises(BlobIntegrityError):
        store.read(session, first)


def test_j1_truncated_and_missing_blobs(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    path = store.path_of(blob_id)
    path.write_bytes(path.read_bytes()[:-20])
    with database.transaction() as session, pytest.raises(BlobIntegrityError):
        store.read(session, blob_id)
    path.unlink()
    with database.transaction() as session, pytest.raises(BlobError, match="missing"):
        store.read(session, blob_id)


def test_j1_altered_wrapped_key_is_detected(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    with database.transaction() as session:
        row = session.get(BlobRow, blob_id)
        assert row is not None
        wrapped = bytearray(row.wrapped_key)
        wrapped[4] ^= 0x80
        row.wrapped_key = bytes(wrapped)
    with (
        database.transaction() as session,
        pytest.raises(BlobIntegrityError, match="wrapped data key"),
    ):
        store.read(session, blob_id)


def test_j1_rolled_back_blob_is_an_orphan(store: BlobStore, database: Database) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        store.write(session, b"never committed")
        raise RuntimeError("abort")
    with database.transaction() as session:
        assert len(store.orphans(session)) == 1


def test_j1_keys_rotate_rewraps_every_blob(
    home_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(home_dir)
    gateway = build_gateway(settings)
    contents = [os.urandom(64) + bytes([n]) * n for n in range(30)]
    try:
        with gateway.database.transaction() as session:
            ids = [gateway.blobs.write(session, data) for data in contents]
        old_key = gateway.keyring.active_id
    finally:
        gateway.close()
    assert main(["keys", "rotate", "--home", str(home_dir)]) == 0
    out = capsys.readouterr().out
    assert "Rewrapped 30 data key(s); retired 1 old key(s)." in out
    gateway = build_gateway(load_settings(home_dir))
    try:
        assert gateway.keyring.active_id != old_key
        assert old_key not in gateway.keyring.key_ids()
        with gateway.database.transaction() as session:
            assert gateway.blobs.kek_ids_in_use(session) == {gateway.keyring.active_id}
            assert [gateway.blobs.read(session, blob_id) for blob_id in ids] == contents
    finally:
        gateway.close()


def test_j1_rotation_without_downtime_old_process_keeps_reading_and_writing(home_dir: Path) -> None:
    """A serving process built before the rotation still reads old and new blobs."""
    running = build_gateway(load_settings(home_dir))
    try:
        with running.database.transaction() as session:
            before = running.blobs.write(session, b"before rotation")
        assert main(["keys", "rotate", "--home", str(home_dir)]) == 0
        with running.database.transaction() as session:
            after = running.blobs.write(session, b"after rotation")
            assert running.blobs.read(session, before) == b"before rotation"
            assert running.blobs.read(session, after) == b"after rotation"
            # the running process follows the new active key
            assert running.blobs.kek_ids_in_use(session) == {running.keyring.active_id}
    finally:
        running.close()


def test_j1_key_files_are_private(home_dir: Path) -> None:
    for pattern in ("keys/kek/*.key", "tls/*.key", "dkim/*.key"):
        for path in home_dir.glob(pattern):
            assert path.stat().st_mode & 0o077 == 0, path
