"""F4: the audit trail is append-only and hash-chained; ``caducee audit verify`` finds an edited or
deleted event and names its position; concurrent writers never fork the chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update

from caducee.config import load_settings
from caducee.gateway.cli import main as caducee_main
from caducee.gateway.home import open_database
from caducee.storage.audit import (
    GENESIS_HASH,
    Action,
    AuditEvent,
    AuditHead,
    AuditTrail,
    record_event,
    verify_chain,
)
from caducee.storage.db import Database


def _append(database: Database, count: int, subject: int | None = None) -> None:
    for number in range(count):
        with database.transaction() as session:
            record_event(
                session,
                actor_kind="professional",
                actor_id=f"idnat:81009999{number:04d}",
                action=Action.DOCUMENT_READ.value,
                object_type="document",
                object_id=f"doc{number}",
                result="allowed",
                rule="F2.known-professional",
                subject_account_id=subject,
                channel="http",
            )


@pytest.fixture
def home_database(home_dir: Path) -> Database:
    database = open_database(load_settings(home_dir))
    yield database  # type: ignore[misc]
    database.dispose()


def _verify(home: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = caducee_main(["audit", "verify", "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_f4_chain_links_each_event_to_the_previous(database: Database) -> None:
    with database.reading() as session:
        empty = verify_chain(session)
    assert empty.intact and empty.events == 0 and empty.head_hash == GENESIS_HASH
    _append(database, 5, subject=7)
    with database.reading() as session:
        rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.position)))
        report = verify_chain(session)
        head = session.get(AuditHead, 1)
        assert head is not None and head.position == 5 and head.hash == rows[-1].hash
        assert [row.position for row in rows] == [1, 2, 3, 4, 5]
        assert rows[0].previous_hash == GENESIS_HASH
        assert all(rows[i].previous_hash == rows[i - 1].hash for i in range(1, 5))
    assert report.intact and report.events == 5


def test_f4_verify_finds_an_edited_event(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(home_database, 6)
    code, out, _ = _verify(home_dir, capsys)
    assert code == 0 and "audit chain intact: 6 event(s)" in out
    with home_database.engine.begin() as connection:
        connection.execute(
            update(AuditEvent).where(AuditEvent.position == 3).values(result="denied")
        )
    code, _, err = _verify(home_dir, capsys)
    assert code == 1
    assert "broken at position 3" in err and "altered" in err


def test_f4_verify_finds_an_event_whose_hash_was_recomputed(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editing a row and its own hash still breaks the next event's link."""
    _append(home_database, 4)
    with home_database.engine.begin() as connection:
        connection.execute(update(AuditEvent).where(AuditEvent.position == 2).values(hash="f" * 64))
    code, _, err = _verify(home_dir, capsys)
    assert code == 1 and "position 2" in err


def test_f4_verify_finds_a_deleted_event(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(home_database, 6)
    with home_database.engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.position == 4))
    code, _, err = _verify(home_dir, capsys)
    assert code == 1
    assert "broken at position 4" in err and "missing" in err


def test_f4_verify_finds_the_last_event_deleted(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(home_database, 3)
    with home_database.engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.position == 3))
    code, _, err = _verify(home_dir, capsys)
    assert code == 1 and "broken at position 3" in err


def test_f4_verify_finds_the_head_deleted(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(home_database, 2)
    with home_database.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_head"))
    code, _, err = _verify(home_dir, capsys)
    assert code == 1 and "head missing" in err


def test_f4_two_writers_never_fork_the_chain(database: Database) -> None:
    """Eight threads append at once, each in its own transactions: one chain, no gap."""
    trail = AuditTrail(database)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for index in range(15):
                trail.record(
                    actor_kind="system",
                    actor_id=f"writer-{number}",
                    action=Action.LOGIN.value,
                    object_type="account",
                    object_id=str(index),
                    result="ok",
                )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    with database.reading() as session:
        report = verify_chain(session)
        count = session.scalar(select(func.count()).select_from(AuditEvent))
    assert report.intact, report
    assert report.events == count == 120


def test_f4_events_are_clipped_and_cleaned_before_hashing(database: Database) -> None:
    with database.transaction() as session:
        fields = record_event(
            session,
            actor_kind="professional",
            actor_id="idnat:" + "9" * 200,
            action=Action.RECORD_SEARCH.value,
            object_type="record",
            object_id="1",
            result="allowed",
            reason="line one\nline two\x00" + "x" * 300,
        )
    assert len(fields.actor_id) == 80
    assert fields.reason is not None and len(fields.reason) == 200 and "\n" not in fields.reason
    with database.reading() as session:
        assert verify_chain(session).intact


def test_f4_audit_list_cli(
    home_dir: Path, home_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(home_database, 3)
    assert caducee_main(["audit", "list", "--json", "--limit", "2", "--home", str(home_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and '"position": 3' in lines[0]
