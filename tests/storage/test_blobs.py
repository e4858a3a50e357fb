"""J1: message bodies and documents are encrypted at rest; tampering is detected; keys rotate.

K2: the same contract holds whatever backend keeps the large blobs: the folder, or
S3-compatible object storage (a real S3 API server, moto in server mode, over HTTP).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from caducee.config import load_settings
from caducee.gateway.cli import main
from caducee.gateway.runtime import build_gateway
from caducee.storage.blob_backends import BlobBackendError, FolderBackend
from caducee.storage.blobs import BlobError, BlobIntegrityError, BlobRow, BlobStore
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring
from tests.harness.s3 import MotoServer, start_moto

PLAINTEXT = b"Compte rendu de biologie: TSH 2.1 mUI/L. Patiente PAT-TROIS Dominique. " * 50
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from start_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    keyring = Keyring.create(tmp_path / "kek")
    if request.param == "folder":
        return BlobStore(tmp_path / "blobs", keyring)
    server: MotoServer = request.getfixturevalue("s3_server")
    backend = server.backend(
        server.new_bucket(), multipart_threshold_bytes=5 * MIB, part_size_bytes=5 * MIB
    )
    return BlobStore(tmp_path / "unused", keyring, backend=backend)


def stored(store: BlobStore, blob_id: str) -> bytes:
    """The bytes the backend holds for ``blob_id`` (a file, or an object)."""
    return b"".join(store.backend.open(blob_id))


def overwrite(store: BlobStore, blob_id: str, data: bytes) -> None:
    store.backend.put(blob_id, [data], len(data))


def test_j1_blob_round_trip_and_no_plaintext_on_disk(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    raw = stored(store, blob_id)
    assert b"PAT-TROIS" not in raw and b"TSH" not in raw and PLAINTEXT[:16] not in raw
    with database.transaction() as session:
        assert store.read(session, blob_id) == PLAINTEXT
    # nothing of the plaintext lands anywhere else in the blob store either
    for item in store.backend.listing():
        assert b"PAT-TROIS" not in stored(store, item.blob_id)


@pytest.mark.parametrize("offset", [0, 3, 5, 10, 17, 100, -1])
def test_j1_flipping_one_byte_fails_the_read_clearly(
    store: BlobStore, database: Database, offset: int
) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    data = bytearray(stored(store, blob_id))
    data[offset] ^= 0x01
    overwrite(store, blob_id, bytes(data))
    with database.transaction() as session, pytest.raises(BlobIntegrityError, match=blob_id):
        store.read(session, blob_id)


def test_j1_swapped_blob_files_are_detected(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        first = store.write(session, b"first document")
        second = store.write(session, b"second document")
    first_bytes = stored(store, first)
    overwrite(store, first, stored(store, second))
    overwrite(store, second, first_bytes)
    with database.transaction() as session, pytest.raises(BlobIntegrityError):
        store.read(session, first)


def test_j1_truncated_and_missing_blobs(store: BlobStore, database: Database) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    overwrite(store, blob_id, stored(store, blob_id)[:-20])
    with database.transaction() as session, pytest.raises(BlobIntegrityError):
        store.read(session, blob_id)
    overwrite(store, blob_id, stored(store, blob_id)[:10])
    with database.transaction() as session, pytest.raises(BlobIntegrityError):
        store.read(session, blob_id)
    store.backend.delete(blob_id)
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


def test_k2_sweep_deletes_old_orphans_and_keeps_live_objects(
    store: BlobStore, database: Database
) -> None:
    with database.transaction() as session:
        live = store.write(session, PLAINTEXT)
    with pytest.raises(RuntimeError), database.transaction() as session:
        orphan = store.write(session, b"never committed")
        raise RuntimeError("abort")
    with database.reading() as session:
        # within the grace period an object may be waiting for its commit: kept
        assert store.sweep(session, older_than=timedelta(hours=1), dry_run=False) == []
        # the default is a dry run: listed, not deleted
        listed = store.sweep(session, older_than=timedelta(0))
        assert [item.blob_id for item in listed] == [orphan]
        assert [item.blob_id for item in store.orphans(session)] == [orphan]
        swept = store.sweep(session, older_than=timedelta(0), dry_run=False)
        assert [item.blob_id for item in swept] == [orphan]
        assert store.orphans(session) == []
        assert store.read(session, live) == PLAINTEXT
    assert {item.blob_id for item in store.backend.listing()} == {live}


def test_k2_deleting_a_blob_removes_its_object_only_when_the_transaction_commits(
    store: BlobStore, database: Database
) -> None:
    with database.transaction() as session:
        blob_id = store.write(session, PLAINTEXT)
    with pytest.raises(RuntimeError), database.transaction() as session:
        store.delete(session, blob_id)
        raise RuntimeError("abort")
    with database.transaction() as session:
        assert store.read(session, blob_id) == PLAINTEXT  # never a row without its object
    with database.transaction() as session:
        store.delete(session, blob_id)
    assert [item.blob_id for item in store.backend.listing()] == []


def test_k2_large_blobs_stream_in_parts_and_read_back(store: BlobStore, database: Database) -> None:
    """12 MiB: a multipart upload of 5 MiB parts on S3, a streamed file on the folder."""
    data = os.urandom(MIB) * 12
    with database.transaction() as session:
        blob_id = store.write(session, data)
    raw = stored(store, blob_id)
    assert len(raw) == len(data) + 5 + 12 + 16 and data[:4096] not in raw
    with database.transaction() as session:
        assert store.read(session, blob_id) == data
    if not isinstance(store.backend, FolderBackend):
        client = store.backend.client  # type: ignore[attr-defined]
        head = client.head_object(
            Bucket=store.backend.options.bucket,  # type: ignore[attr-defined]
            Key=store.backend.key_of(blob_id),  # type: ignore[attr-defined]
        )
        assert head["ETag"].strip('"').endswith("-3")  # three parts


def test_k2_no_row_unless_the_object_store_acknowledged(
    s3_server: MotoServer, database: Database, tmp_path: Path
) -> None:
    """The object is stored before the row; a store that refuses it leaves no row behind."""
    store = BlobStore(
        tmp_path / "unused",
        Keyring.create(tmp_path / "kek"),
        backend=s3_server.backend("no-such-bucket-" + os.urandom(4).hex()),
    )
    with pytest.raises(BlobBackendError, match="NoSuchBucket"), database.transaction() as session:
        store.write(session, PLAINTEXT)
    with database.reading() as session:
        assert session.scalars(select(BlobRow.id)).all() == []


def test_k2_small_blobs_stay_inline_whatever_the_backend(
    store: BlobStore, database: Database
) -> None:
    store.inline_max_bytes = 1024
    with database.transaction() as session:
        blob_id = store.write(session, b"petit message")
    assert list(store.backend.listing()) == []
    with database.transaction() as session:
        assert store.read(session, blob_id) == b"petit message"


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
    assert "Rewrapped 30 data key(s), re-sealed 0 value(s); retired 1 old key(s)." in out
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


def test_k2_keys_rotate_with_the_s3_backend_rewraps_rows_only(
    home_dir: Path,
    s3_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_server.new_bucket()
    for name, value in s3_server.env(bucket).items():
        monkeypatch.setenv(name, value)
    gateway = build_gateway(load_settings(home_dir))
    contents = [os.urandom(2000) + bytes([n]) * n for n in range(1, 6)]
    try:
        with gateway.database.transaction() as session:
            ids = [gateway.blobs.write(session, data) for data in contents]
        gateway.blobs.inline_max_bytes = 0
        with gateway.database.transaction() as session:
            ids.append(gateway.blobs.write(session, b"stored in the bucket"))
        before = {key: stored(gateway.blobs, key) for key in [ids[-1]]}
    finally:
        gateway.close()
    assert main(["keys", "rotate", "--home", str(home_dir)]) == 0
    assert "Rewrapped 6 data key(s), re-sealed 0 value(s); retired 1 old key(s)." in (
        capsys.readouterr().out
    )
    gateway = build_gateway(load_settings(home_dir))
    try:
        assert stored(gateway.blobs, ids[-1]) == before[ids[-1]]  # the object is not rewritten
        with gateway.database.transaction() as session:
            assert gateway.blobs.kek_ids_in_use(session) == {gateway.keyring.active_id}
            got = [gateway.blobs.read(session, blob_id) for blob_id in ids]
        assert got == [*contents, b"stored in the bucket"]
    finally:
        gateway.close()
