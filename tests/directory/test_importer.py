"""Imports of the national extractions (K3, A3): counts, idempotence, updates, refusals.

The acceptance counts come from reading the sample by eye: 22 data lines under
a 52-column header, 21 ADELI practitioners (type 0) and one RPPS practitioner
(type 8, BENHOUCHAME, gynaecologist), five opticians, ten activities in the Ain
(postal codes 01xxx), every identifier valid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, func, inspect, select

from caducee.directory import formats, importer
from caducee.directory.formats import MSS_HEADER, SourceKind, read_header
from caducee.directory.importer import DirectoryImportError, ImportMode, import_file
from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.directory.service import NewEntry, add_entry, find_by_address, set_red_list
from caducee.storage.db import Database

from .samples import org_line, per_line, rpps, write_mss, wrong_key, zip_of


def count(
    database: Database, model: type[DirectoryEntry] | type[Practitioner], **where: str
) -> int:
    with database.transaction() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(session.scalar(query) or 0)


def mss_lines(count_: int = 5) -> list[str]:
    lines = [
        per_line(f"doc{n}@medecin.mssante.fr", n, f"FAMILLE{n}", f"Prenom{n}")
        for n in range(1, count_ + 1)
    ]
    lines.append(org_line("accueil@ch-test.mssante.fr", "010780054", "CH DE TEST"))
    return lines


# --- the real PS_LibreAcces sample ------------------------------------------------


def test_k3_sample_imports_with_the_counts_read_in_the_file(
    database: Database, ps_sample: Path
) -> None:
    summary = import_file(database, ps_sample)
    assert summary.source is SourceKind.PS_LIBREACCES
    assert (summary.read, summary.added, summary.rejected, summary.duplicates) == (22, 22, 0, 0)
    assert count(database, Practitioner) == 22
    assert count(database, Practitioner, id_type="ADELI") == 21
    assert count(database, Practitioner, id_type="RPPS") == 1
    assert count(database, Practitioner, profession_code="28") == 5
    assert count(database, Practitioner, department="01") == 10
    assert count(database, DirectoryEntry) == 0  # no mailbox in PS_LibreAcces
    with database.transaction() as session:
        doctor = session.scalars(
            select(Practitioner).where(Practitioner.national_id == "810106476764")
        ).one()
        assert (doctor.family_name, doctor.given_name) == ("BENHOUCHAME", "Zakaria")
        assert (doctor.speciality_code, doctor.speciality_label) == (
            "SM20",
            "Gynécologie-obstétrique",
        )
        assert doctor.source == "ps_libreacces"


def test_k3_directory_import_idempotent(database: Database, ps_sample: Path) -> None:
    first = import_file(database, ps_sample, now=datetime(2026, 1, 1, tzinfo=UTC))
    second = import_file(database, ps_sample, now=datetime(2026, 1, 2, tzinfo=UTC))
    assert first.added == 22
    assert (second.added, second.changed, second.removed, second.unchanged) == (0, 0, 0, 22)
    with database.transaction() as session:
        stamps = set(session.scalars(select(Practitioner.updated_at)))
    assert stamps == {datetime(2026, 1, 1, tzinfo=UTC)}


def test_k3_import_without_one_row_removes_exactly_that_entry(
    database: Database, ps_sample: Path, ps_lines: list[str], tmp_path: Path
) -> None:
    import_file(database, ps_sample)
    removed_line = ps_lines[9]  # PEYRE Camille, ADELI 018603118
    assert "PEYRE" in removed_line
    smaller = tmp_path / "PS_LibreAcces_Personne_activite_smaller.txt"
    smaller.write_text("\n".join(line for line in ps_lines if line != removed_line) + "\n")
    summary = import_file(database, smaller)
    assert (summary.read, summary.removed, summary.unchanged, summary.added) == (21, 1, 21, 0)
    with database.transaction() as session:
        ids = set(session.scalars(select(Practitioner.national_id)))
    assert len(ids) == 21
    assert "0018603118" not in ids


def test_k3_wrong_rpps_key_is_rejected_with_its_line_and_reason(
    database: Database, ps_lines: list[str], tmp_path: Path
) -> None:
    lines = list(ps_lines)
    lines[-1] = lines[-1].replace("|10106476764|810106476764|", "|10106476765|810106476765|")
    broken = tmp_path / "PS_LibreAcces_Personne_activite_broken.txt"
    broken.write_text("\n".join(lines) + "\n", "utf-8")
    summary = import_file(database, broken)
    assert (summary.read, summary.added, summary.rejected) == (22, 21, 1)
    [rejection] = summary.rejections
    assert rejection.line == 23  # the header is line 1
    assert "RPPS 10106476765" in rejection.reason
    assert "wrong check digit" in rejection.reason
    assert count(database, Practitioner) == 21


def test_k3_mss_wrong_rpps_key_rejected_rest_imported(database: Database, tmp_path: Path) -> None:
    lines = mss_lines(5)
    lines[2] = per_line("bad@medecin.mssante.fr", 3, "FAUX", "Cle", rpps_value=wrong_key(rpps(3)))
    summary = import_file(database, write_mss(tmp_path / "mss.txt", lines))
    assert (summary.read, summary.added, summary.rejected) == (6, 5, 1)
    assert summary.rejections[0].line == 4
    assert "wrong check digit" in summary.rejections[0].reason
    with database.transaction() as session:
        assert find_by_address(session, "bad@medecin.mssante.fr") is None
        assert find_by_address(session, "DOC5@medecin.mssante.fr") is not None


# --- the mailbox extraction ---------------------------------------------------------


def test_mss_import_counts_and_columns(database: Database, tmp_path: Path) -> None:
    summary = import_file(database, write_mss(tmp_path / "mss.txt", mss_lines(5)))
    assert summary.source is SourceKind.MSS_EXTRACTION
    assert (summary.read, summary.added) == (6, 6)
    with database.transaction() as session:
        org = find_by_address(session, "accueil@ch-test.mssante.fr")
        assert org is not None
        assert (org.bal_type, org.national_id, org.id_type) == ("ORG", "1010780054", "FINESS")
        assert org.department == "69"
        assert org.source == "mss_extraction"
        assert org.red_list is False and org.hosted is False


def test_mss_import_from_the_published_zip(database: Database, tmp_path: Path) -> None:
    text = write_mss(tmp_path / "x.txt", mss_lines(3)).read_bytes()
    archive = zip_of(
        tmp_path / "Extraction_Correspondance_MSSante_202608010700.zip",
        {"Extraction_Correspondance_MSSante_202608010700.txt": text},
    )
    summary = import_file(database, archive)
    assert (summary.read, summary.added) == (4, 4)


def test_ps_zip_with_several_files_takes_personne_activite(
    database: Database, ps_sample: Path, tmp_path: Path
) -> None:
    archive = zip_of(
        tmp_path / "PS_LibreAcces_202608010700.zip",
        {
            "PS_LibreAcces_Dipl_AutExerc_202608010700.txt": b"Type d'identifiant PP|x|\n",
            "PS_LibreAcces_Personne_activite_202608010700.txt": ps_sample.read_bytes(),
            "PS_LibreAcces_SavoirFaire_202608010700.txt": b"Type d'identifiant PP|y|\n",
        },
    )
    summary = import_file(database, archive)
    assert (summary.source, summary.added) == (SourceKind.PS_LIBREACCES, 22)


def test_ambiguous_zip_is_refused(database: Database, tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "both.zip", {"a.txt": b"x\n", "b.txt": b"y\n"})
    with pytest.raises(DirectoryImportError, match="cannot tell which file"):
        import_file(database, archive)


def test_k3_changes_are_detected(database: Database, tmp_path: Path) -> None:
    lines = mss_lines(3)
    import_file(database, write_mss(tmp_path / "v1.txt", lines))
    lines[1] = lines[1].replace("FAMILLE2", "FAMILLE-DEUX")
    summary = import_file(database, write_mss(tmp_path / "v2.txt", lines))
    assert (summary.changed, summary.unchanged, summary.added, summary.removed) == (1, 3, 0, 0)
    with database.transaction() as session:
        entry = find_by_address(session, "doc2@medecin.mssante.fr")
        assert entry is not None
        assert entry.family_name == "FAMILLE-DEUX"
        assert entry.name_key == "famille deux prenom2"


def test_k3_duplicate_addresses_are_resolved_whatever_the_line_order(
    database: Database, tmp_path: Path
) -> None:
    first = per_line("dup@medecin.mssante.fr", 1, "UN", "Premier", postal_code="01000")
    second = per_line("dup@medecin.mssante.fr", 1, "UN", "Premier", postal_code="02000")
    lines = [first, *mss_lines(2), second]
    summary = import_file(database, write_mss(tmp_path / "a.txt", lines))
    assert (summary.read, summary.added, summary.duplicates) == (5, 4, 1)
    with database.transaction() as session:
        kept = find_by_address(session, "dup@medecin.mssante.fr")
        assert kept is not None
        kept_postal_code = kept.postal_code
    [duplicate] = summary.duplicate_lines
    assert duplicate.key == "dup@medecin.mssante.fr"
    assert {duplicate.line, duplicate.kept_line} == {2, 6}
    reordered = [second, *mss_lines(2), first]
    again = import_file(database, write_mss(tmp_path / "b.txt", reordered))
    assert (again.changed, again.unchanged, again.duplicates) == (0, 4, 1)
    with database.transaction() as session:
        entry = find_by_address(session, "dup@medecin.mssante.fr")
        assert entry is not None and entry.postal_code == kept_postal_code


def test_k3_identical_repeated_lines_are_one_entry_and_one_duplicate_on_every_import(
    database: Database, tmp_path: Path
) -> None:
    """The same line twice: staged twice on the first import, claimed twice (as a line
    seen before) on the next one; either way one entry, one duplicate, the first line kept."""
    lines = mss_lines(2)
    lines.append(lines[0])
    first = import_file(database, write_mss(tmp_path / "a.txt", lines))
    again = import_file(database, write_mss(tmp_path / "a.txt", lines))
    for summary in (first, again):
        assert summary.duplicates == 1
        assert [(d.line, d.kept_line) for d in summary.duplicate_lines] == [(5, 2)]
    assert (first.added, again.changed, again.unchanged, again.removed) == (3, 0, 3, 0)
    assert count(database, DirectoryEntry) == 3


def test_k3_hand_made_row_hashes_do_not_stop_a_re_import(
    database: Database, tmp_path: Path
) -> None:
    """The stored digests are read in chunks; a row whose ``row_hash`` is no digest of
    ours (typed in by hand) is simply not "seen before", and its line is applied again."""
    lines = mss_lines(3)
    import_file(database, write_mss(tmp_path / "a.txt", lines))
    table = cast(Table, DirectoryEntry.__table__)
    with database.transaction() as session:
        session.execute(
            table.update()
            .where(table.c.address == "doc1@medecin.mssante.fr")
            .values(row_hash="not a digest")
        )
    again = import_file(database, write_mss(tmp_path / "a.txt", lines))
    assert (again.changed, again.unchanged, again.added) == (1, 3, 0)


def test_a3_bal_type_cannot_change(database: Database, tmp_path: Path) -> None:
    import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(2)))
    changed = org_line("doc1@medecin.mssante.fr", "010000024", "CABINET UN")
    lines = mss_lines(2)
    lines[0] = changed
    summary = import_file(database, write_mss(tmp_path / "v2.txt", lines))
    assert summary.rejected == 1
    assert summary.rejections[0].line == 2
    assert "BAL type cannot change from PER to ORG" in summary.rejections[0].reason
    assert summary.removed == 0  # the refused line still claims its address
    with database.transaction() as session:
        entry = find_by_address(session, "doc1@medecin.mssante.fr")
        assert entry is not None and entry.bal_type == "PER"


def test_refused_line_does_not_remove_its_entry(database: Database, tmp_path: Path) -> None:
    lines = mss_lines(3)
    import_file(database, write_mss(tmp_path / "v1.txt", lines))
    lines[0] = per_line(
        "doc1@medecin.mssante.fr", 1, "FAMILLE1", "Prenom1", rpps_value=wrong_key(rpps(1))
    )
    summary = import_file(database, write_mss(tmp_path / "v2.txt", lines))
    assert (summary.rejected, summary.removed, summary.unchanged) == (1, 0, 3)
    assert count(database, DirectoryEntry) == 4


def test_bad_lines_never_abort_the_import(database: Database, tmp_path: Path) -> None:
    good = mss_lines(2)  # lines 2 to 4
    path = tmp_path / "messy.txt"
    write_mss(path, good)
    with path.open("ab") as handle:
        handle.write(b"PER|short|line\n")  # line 5: wrong number of fields
        handle.write(per_line("latin@x.fr", 9, "M\xe9", "X").encode("latin-1") + b"\n")  # 6
        handle.write(per_line("nul@x.fr", 8, "A\x00B", "X").encode() + b"\n")  # 7
        handle.write(b"\n")  # line 8: blank lines are skipped, not counted
        handle.write(b"ORG|" + b"x" * (importer.MAX_LINE_BYTES + 10) + b"\n")  # 9
        handle.write(per_line("last@medecin.mssante.fr", 7, "DERNIER", "Ok").encode() + b"\n")
    summary = import_file(database, path)
    reasons = {rejection.line: rejection.reason for rejection in summary.rejections}
    assert summary.read == 8
    assert summary.added == 4
    assert set(reasons) == {5, 6, 7, 9}
    assert "expected 31 fields" in reasons[5]
    assert "UTF-8" in reasons[6]
    assert "NUL" in reasons[7]
    assert "longer than" in reasons[9]


def test_crlf_bom_and_trailing_pipes_are_accepted(database: Database, tmp_path: Path) -> None:
    lines = [line + "|" for line in mss_lines(2)]
    summary = import_file(database, write_mss(tmp_path / "w.txt", lines, newline="\r\n", bom=True))
    assert (summary.read, summary.added, summary.rejected) == (3, 3, 0)
    with database.transaction() as session:
        entry = find_by_address(session, "accueil@ch-test.mssante.fr")
        assert entry is not None and entry.country == "France"


def test_unknown_format_and_empty_files_are_refused(database: Database, tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("a|b|c\n1|2|3\n")
    with pytest.raises(DirectoryImportError, match="not an Extraction_Correspondance"):
        import_file(database, tmp_path / "other.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DirectoryImportError, match="empty file"):
        import_file(database, tmp_path / "empty.txt")
    with pytest.raises(DirectoryImportError, match="No such file"):
        import_file(database, tmp_path / "missing.txt")


def test_expected_kind_is_enforced(database: Database, ps_sample: Path) -> None:
    with pytest.raises(DirectoryImportError, match="ps_libreacces file, not mss_extraction"):
        import_file(database, ps_sample, expected=SourceKind.MSS_EXTRACTION)


def test_full_import_of_a_file_without_valid_lines_is_refused(
    database: Database, tmp_path: Path
) -> None:
    import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(2)))
    bad = per_line("x@y.fr", 1, "A", "B", rpps_value=wrong_key(rpps(1)))
    with pytest.raises(DirectoryImportError, match="would remove all 3"):
        import_file(database, write_mss(tmp_path / "v2.txt", [bad]))
    assert count(database, DirectoryEntry) == 3
    merged = import_file(database, write_mss(tmp_path / "v3.txt", [bad]), mode=ImportMode.MERGE)
    assert (merged.rejected, merged.removed) == (1, 0)


def test_merge_mode_adds_and_updates_without_removing(database: Database, tmp_path: Path) -> None:
    import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(3)))
    extra = per_line("new@medecin.mssante.fr", 50, "NOUVEAU", "Venu")
    summary = import_file(database, write_mss(tmp_path / "v2.txt", [extra]), mode=ImportMode.MERGE)
    assert (summary.added, summary.removed) == (1, 0)
    assert count(database, DirectoryEntry) == 5


def test_k3_removal_is_per_source_kind(database: Database, ps_sample: Path, tmp_path: Path) -> None:
    import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(3)))
    import_file(database, ps_sample)
    with database.transaction() as session:
        add_entry(
            session,
            NewEntry(address="manuel@local.fr", bal_type="ORG", organisation_name="ACCUEIL"),
        )
    summary = import_file(database, write_mss(tmp_path / "v2.txt", mss_lines(2)))
    assert summary.removed == 1
    assert count(database, Practitioner) == 22
    assert count(database, DirectoryEntry, source="manual") == 1
    assert count(database, DirectoryEntry, source="mss_extraction") == 3


def test_import_takes_over_a_manual_entry_of_the_same_address(
    database: Database, tmp_path: Path
) -> None:
    with database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address="doc1@medecin.mssante.fr",
                bal_type="PER",
                national_id="8" + rpps(1),
                family_name="ANCIEN",
            ),
        )
    summary = import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(2)))
    assert (summary.added, summary.changed) == (2, 1)
    with database.transaction() as session:
        entry = find_by_address(session, "doc1@medecin.mssante.fr")
        assert entry is not None
        assert (entry.source, entry.family_name) == ("mss_extraction", "FAMILLE1")


def test_local_flags_survive_reimports(database: Database, tmp_path: Path) -> None:
    lines = mss_lines(2)
    import_file(database, write_mss(tmp_path / "v1.txt", lines))
    with database.transaction() as session:
        set_red_list(session, "doc1@medecin.mssante.fr")
    lines[0] = lines[0].replace("FAMILLE1", "FAMILLE-UN")
    summary = import_file(database, write_mss(tmp_path / "v2.txt", lines))
    assert summary.changed == 1
    with database.transaction() as session:
        entry = find_by_address(session, "doc1@medecin.mssante.fr")
        assert entry is not None and entry.red_list is True


def test_a4_hosted_domains_are_marked(database: Database, tmp_path: Path) -> None:
    path = write_mss(tmp_path / "v1.txt", mss_lines(2))
    import_file(database, path)
    assert count(database, DirectoryEntry, domain="medecin.mssante.fr") == 2
    with database.transaction() as session:
        assert not any(session.scalars(select(DirectoryEntry.hosted)))
    import_file(database, path, hosted_domains=["Medecin.MSSante.fr"])
    with database.transaction() as session:
        hosted = dict(session.execute(select(DirectoryEntry.address, DirectoryEntry.hosted)).all())
    assert hosted == {
        "doc1@medecin.mssante.fr": True,
        "doc2@medecin.mssante.fr": True,
        "accueil@ch-test.mssante.fr": False,
    }


def test_small_batches_give_the_same_result(database: Database, tmp_path: Path) -> None:
    lines = mss_lines(9)
    summary = import_file(database, write_mss(tmp_path / "v1.txt", lines), batch_size=2)
    assert (summary.read, summary.added) == (10, 10)
    lines[4] = lines[4].replace("FAMILLE5", "AUTRE")
    del lines[7]
    again = import_file(database, write_mss(tmp_path / "v2.txt", lines), batch_size=3)
    assert (again.changed, again.removed, again.unchanged) == (1, 1, 8)


def test_bulk_load_path_gives_the_same_result(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BULK_MIN_ROWS", 3)
    lines = mss_lines(9)
    summary = import_file(database, write_mss(tmp_path / "v1.txt", lines))
    assert (summary.read, summary.added) == (10, 10)
    table = cast(Table, DirectoryEntry.__table__)
    indexes = {index.name for index in table.indexes}
    inspector = inspect(database.directory_engine)  # on SQLite, the directory's own file
    present = {index["name"] for index in inspector.get_indexes("directory_entries")}
    assert indexes <= present  # rebuilt
    again = import_file(database, write_mss(tmp_path / "v1.txt", lines))
    assert (again.unchanged, again.added) == (10, 0)


def test_k3_sqlite_first_load_is_seen_whole_or_not_at_all(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first load on SQLite shows nothing of itself until it is complete: the gateway's
    lookups read the directory as it was (and with its search indexes) between batches."""
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL's first load is a swap, tested with the direct path")
    monkeypatch.setattr(importer, "BULK_MIN_ROWS", 3)
    monkeypatch.setattr(importer, "BULK_BATCH_SIZE", 4)
    seen_between_batches: list[tuple[int, int]] = []
    apply_rows = importer._apply_rows

    def looked_at(*arguments: Any, **options: Any) -> None:
        apply_rows(*arguments, **options)
        with database.reading() as session:  # as the gateway's lookups read
            rows = session.scalar(select(func.count()).select_from(DirectoryEntry))
            indexes = session.execute(
                select(func.count()).select_from(
                    func.pragma_index_list("directory_entries").table_valued("name")
                )
            ).scalar_one()
        seen_between_batches.append((int(rows or 0), int(indexes)))

    monkeypatch.setattr(importer, "_apply_rows", looked_at)
    lines = mss_lines(11)
    summary = import_file(database, write_mss(tmp_path / "v1.txt", lines), batch_size=4)
    assert summary.added == 12
    assert len(seen_between_batches) >= 3  # several batches ran
    table = cast(Table, DirectoryEntry.__table__)
    every_index = len(table.indexes) + 1  # and the unique address
    assert set(seen_between_batches) == {(0, every_index)}
    assert count(database, DirectoryEntry) == 12


def test_parsing_in_a_child_process_gives_the_same_result(
    database: Database, ps_sample: Path, ps_lines: list[str], tmp_path: Path
) -> None:
    summary = import_file(database, ps_sample, parallel=True)
    assert (summary.read, summary.added) == (22, 22)
    broken = tmp_path / "broken.txt"
    broken.write_text("\n".join(ps_lines[:3]).replace("|010001949|", "|010001948|") + "\n")
    merged = import_file(database, broken, parallel=True, mode=ImportMode.MERGE)
    assert merged.rejected == 1 and merged.rejections[0].line == 2
    with pytest.raises(DirectoryImportError, match="not an Extraction_Correspondance"):
        other = tmp_path / "other.txt"
        other.write_text("a|b\n")
        import_file(database, other, parallel=True)


def test_k3_reimport_maps_only_the_lines_that_changed(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = mss_lines(6)
    path = write_mss(tmp_path / "v1.txt", lines)
    import_file(database, path)
    with database.transaction() as session:
        entry = find_by_address(session, "doc1@medecin.mssante.fr")
        assert entry is not None
        salt = importer.layout_salt(read_header(MSS_HEADER))
        assert entry.row_hash == importer.line_digest(lines[0].encode(), salt).hex()
    mapped: list[object] = []
    original = formats.MAPPERS[SourceKind.MSS_EXTRACTION]

    def counting(raw: dict[str, str | None]) -> dict[str, object]:
        mapped.append(raw["address"])
        return original(raw)

    monkeypatch.setitem(formats.MAPPERS, SourceKind.MSS_EXTRACTION, counting)
    lines[3] = lines[3].replace("FAMILLE4", "AUTRE")
    summary = import_file(database, write_mss(tmp_path / "v2.txt", lines))
    assert (summary.changed, summary.unchanged) == (1, 6)
    assert mapped == ["doc4@medecin.mssante.fr"]


def test_a_new_mapping_version_maps_every_line_again(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_mss(tmp_path / "v1.txt", mss_lines(3))
    import_file(database, path)
    monkeypatch.setattr(importer, "MAPPING_VERSION", b"caducee-dir-next")
    summary = import_file(database, path)
    assert (summary.changed, summary.unchanged) == (4, 0)
    again = import_file(database, path)
    assert (again.changed, again.unchanged) == (0, 4)


def test_a_new_header_layout_maps_every_line_again(
    database: Database, ps_lines: list[str], tmp_path: Path
) -> None:
    def reordered(line: str) -> str:
        fields = line[:-1].split("|")  # without the trailing "|"
        return "|".join(reversed(fields)) + "|"

    first = tmp_path / "first.txt"
    first.write_text("\n".join(ps_lines) + "\n", "utf-8")
    import_file(database, first)
    moved = tmp_path / "moved.txt"
    moved.write_text("\n".join(reordered(line) for line in ps_lines) + "\n", "utf-8")
    summary = import_file(database, moved)
    assert (summary.added, summary.removed, summary.changed) == (0, 0, 22)
    again = import_file(database, moved)
    assert (again.changed, again.unchanged) == (0, 22)


def test_k3_sqlite_import_finds_duplicates_and_removals_without_the_write_lock(
    database: Database, tmp_path: Path
) -> None:
    """The directory file's other writers (an administrator's edit) wait for an import only
    briefly: the scans over the whole file (keys claimed twice, rows the file no longer
    lists, counts) are plain reads; only the short writes take the write lock
    (``BEGIN IMMEDIATE`` on the importer's engine, which opens the directory file)."""
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL readers never take a write lock")
    lines = mss_lines(4)
    import_file(database, write_mss(tmp_path / "v1.txt", lines))
    under_lock: list[str] = []
    locked = False

    def trace(statement: str) -> None:
        nonlocal locked
        words = statement.split()
        if words[:2] == ["BEGIN", "IMMEDIATE"]:
            locked = True
        elif words[:1] in (["COMMIT"], ["ROLLBACK"]):
            locked = False
        elif locked:
            under_lock.append(" ".join(words))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    engine = database.directory_engine
    engine.dispose()
    event.listen(engine, "connect", on_connect)
    try:
        repeated = [*lines[1:], lines[1]]  # one line fewer, one line twice
        summary = import_file(database, write_mss(tmp_path / "v2.txt", repeated))
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()
    assert (summary.duplicates, summary.removed) == (1, 1)
    scans = [
        s for s in under_lock if s.startswith("SELECT") and ("HAVING" in s or "NOT (EXISTS" in s)
    ]
    assert scans == []
    assert any(s.startswith("DELETE FROM directory_entries") for s in under_lock)


def _snapshot(database: Database) -> list[tuple[Any, ...]]:
    table = cast(Table, DirectoryEntry.__table__)
    skipped = {"id", "created_at", "updated_at"}
    columns = [column for column in table.columns if column.name not in skipped]
    with database.transaction() as session:
        return [tuple(row) for row in session.execute(select(*columns).order_by(table.c.address))]


def test_k3_first_load_straight_to_the_table_keeps_duplicates_refusals_and_counts(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K3 on PostgreSQL's first load (rows copied into a new table, swapped in): a repeated
    address keeps the line with the smallest digest whatever the order, a refused line
    claims its key without beating a valid one, a hand-made mailbox is carried over or
    taken over by the file's line, and the result, counts and reports are those of the
    staged path."""
    if database.dialect != "postgresql":
        pytest.skip("the direct first load is PostgreSQL's")
    lines = mss_lines(80)
    first = per_line("dup@medecin.mssante.fr", 90, "UN", "Premier", postal_code="01000")
    second = per_line("dup@medecin.mssante.fr", 90, "UN", "Premier", postal_code="02000")
    refused = per_line("doc3@medecin.mssante.fr", 3, "FAUX", "Refus", rpps_value=wrong_key(rpps(3)))
    lines = [first, lines[0], *lines[1:40], refused, lines[0], *lines[40:], second, "x|y"]
    path = write_mss(tmp_path / "a.txt", lines)
    table = cast(Table, DirectoryEntry.__table__)
    loads: list[int] = []
    first_load = importer._first_load

    def counted(*arguments: Any) -> None:
        loads.append(1)
        first_load(*arguments)

    monkeypatch.setattr(importer, "_first_load", counted)
    results = []
    for direct in (True, False):
        monkeypatch.setattr(importer, "DIRECT_MIN_BYTES", 0 if direct else 1 << 40)
        with database.transaction() as session:
            for number, address in ((1, "doc1@medecin.mssante.fr"), (500, "main@cab.fr")):
                entry = NewEntry(
                    address=address,
                    bal_type="PER",
                    national_id="8" + rpps(number),
                    family_name="ANCIEN",
                )
                add_entry(session, entry)
        summary = import_file(database, path)
        results.append((summary, _snapshot(database)))
        with database.transaction() as session:
            session.execute(table.delete())
    (direct_summary, direct_rows), (staged_summary, staged_rows) = results
    assert loads == [1]  # the first run only
    assert direct_rows == staged_rows and len(direct_rows) == 83
    names = ("read", "added", "changed", "rejected", "duplicates", "rejections", "duplicate_lines")
    for name in names:
        assert getattr(direct_summary, name) == getattr(staged_summary, name), name
    assert (direct_summary.added, direct_summary.changed, direct_summary.duplicates) == (81, 1, 2)
    assert direct_summary.rejected == 2
    # The swapped-in table has the names, indexes and id sequence of the migration.
    monkeypatch.setattr(importer, "DIRECT_MIN_BYTES", 0)
    import_file(database, path)
    with database.transaction() as session:
        inspector = inspect(session.connection())
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        assert {str(index.name) for index in table.indexes} <= present
        assert inspector.get_pk_constraint(table.name)["name"] == "pk_directory_entries"
        add_entry(
            session,
            NewEntry(
                address="new@medecin.mssante.fr",
                bal_type="PER",
                national_id="8" + rpps(500),
                family_name="NOUVEAU",
            ),
        )
    again = import_file(database, path)
    assert (again.unchanged, again.added, again.removed) == (82, 0, 0)
    assert count(database, DirectoryEntry) == 83 and loads == [1, 1]


def test_k3_first_load_stamps_every_row_and_keeps_the_column_defaults(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K3 on PostgreSQL's first load: the values common to every row (source, red list,
    creation and update times) are the load table's defaults while it fills; every row
    gets them, and the table swapped in has the column defaults of the migration again."""
    if database.dialect != "postgresql":
        pytest.skip("the direct first load is PostgreSQL's")
    monkeypatch.setattr(importer, "DIRECT_MIN_BYTES", 0)
    table = cast(Table, DirectoryEntry.__table__)

    def defaults() -> dict[str, Any]:
        with database.transaction() as session:
            columns = inspect(session.connection()).get_columns(table.name)
        return {column["name"]: column["default"] for column in columns}

    before = defaults()
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    lines = mss_lines(30)
    summary = import_file(database, write_mss(tmp_path / "a.txt", lines), now=now)
    assert summary.added == len(lines)
    assert defaults() == before
    with database.transaction() as session:
        rows = session.execute(
            select(table.c.source, table.c.red_list, table.c.created_at, table.c.updated_at)
        ).all()
    assert len(rows) == len(lines)
    assert set(rows) == {("mss_extraction", False, now, now)}


def test_k3_first_load_gives_up_on_a_busy_table_changing_nothing(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K3: the first load's swap waits only briefly for the table's readers (mail keeps
    flowing); if they hold it throughout, the import fails and the directory is unchanged,
    search indexes included; once they are gone, the same import succeeds."""
    if database.dialect != "postgresql":
        pytest.skip("the direct first load is PostgreSQL's")
    monkeypatch.setattr(importer, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "SWAP_LOCK_ATTEMPTS", 2)
    path = write_mss(tmp_path / "a.txt", mss_lines(80))
    table = cast(Table, DirectoryEntry.__table__)
    with database.engine.connect() as reader:
        reader.execute(select(func.count()).select_from(table))  # holds its lock until rollback
        with pytest.raises(DirectoryImportError, match="stayed busy"):
            import_file(database, path)
        reader.rollback()
    assert count(database, DirectoryEntry) == 0
    with database.transaction() as session:
        present = {index["name"] for index in inspect(session.connection()).get_indexes(table.name)}
    assert {str(index.name) for index in table.indexes} <= present
    assert import_file(database, path).added == 81


def test_k3_first_load_never_loses_a_mailbox_added_meanwhile(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K3: a mailbox added by hand while a first load runs is not overwritten by the swap:
    the load gives up (nothing imported, the new mailbox kept), and the next import runs."""
    if database.dialect != "postgresql":
        pytest.skip("the direct first load is PostgreSQL's")
    monkeypatch.setattr(importer, "DIRECT_MIN_BYTES", 0)
    index_stage = importer._index_stage

    def meanwhile(*arguments: Any) -> None:
        with database.transaction() as session:  # another connection, committed at once
            entry = NewEntry(address="main@cab.fr", bal_type="PER", national_id="8" + rpps(500))
            add_entry(session, entry)
        index_stage(*arguments)

    monkeypatch.setattr(importer, "_index_stage", meanwhile)
    path = write_mss(tmp_path / "a.txt", mss_lines(80))
    with pytest.raises(DirectoryImportError, match="changed during the first load"):
        import_file(database, path)
    with database.transaction() as session:
        assert find_by_address(session, "main@cab.fr") is not None
    assert count(database, DirectoryEntry) == 1
    monkeypatch.setattr(importer, "_index_stage", index_stage)
    assert import_file(database, path).added == 81
    assert count(database, DirectoryEntry) == 82


def test_k3_bulk_load_takes_over_hand_made_mailboxes(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K3: a bulk first load into a directory holding a few hand-made mailboxes takes over
    the one the file lists (its line wins, counted as changed) and keeps the other."""
    monkeypatch.setattr(importer, "BULK_MIN_ROWS", 3)
    with database.transaction() as session:
        for number, address in ((1, "doc1@medecin.mssante.fr"), (500, "main@cab.fr")):
            entry = NewEntry(
                address=address, bal_type="PER", national_id="8" + rpps(number), family_name="X"
            )
            add_entry(session, entry)
    summary = import_file(database, write_mss(tmp_path / "v1.txt", mss_lines(9)))
    assert (summary.read, summary.added, summary.changed, summary.unchanged) == (10, 9, 1, 0)
    with database.transaction() as session:
        taken = find_by_address(session, "doc1@medecin.mssante.fr")
        kept = find_by_address(session, "main@cab.fr")
        assert taken is not None and (taken.source, taken.family_name) == (
            "mss_extraction",
            "FAMILLE1",
        )
        assert kept is not None and kept.source == "manual"
    assert count(database, DirectoryEntry) == 11
