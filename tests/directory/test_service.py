"""The directory service API used by the rest of the product (A3, A4, C4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caducee.directory.importer import import_file
from caducee.directory.service import (
    DirectoryError,
    NewEntry,
    add_entry,
    find_by_address,
    find_by_national_id,
    lookup,
    remove_entry,
    set_hosted,
    set_pharmacy,
    set_red_list,
)
from caducee.storage.db import Database

from .samples import rpps


def doctor(**changes: object) -> NewEntry:
    fields: dict[str, object] = {
        "address": "Claire.Martin@Hopital-Demo.MSSante.fr",
        "bal_type": "PER",
        "national_id": "8" + rpps(42),
        "family_name": "MARTIN",
        "given_name": "Claire",
        "profession_code": "10",
        "profession_label": "Médecin",
        "postal_code": "75012",
        "address_lines": ("1 rue de la Paix", "75012 PARIS"),
    }
    fields.update(changes)
    return NewEntry(**fields)  # type: ignore[arg-type]


def test_a3_add_and_find_by_address_case_insensitive(database: Database) -> None:
    with database.transaction() as session:
        entry = add_entry(session, doctor(), hosted_domains=["hopital-demo.mssante.fr"])
        assert entry.address == "claire.martin@hopital-demo.mssante.fr"
        assert entry.id_type == "RPPS" and entry.pp_identifier == rpps(42)
        assert entry.department == "75"
        assert entry.hosted is True  # A4: a mailbox of one of our domains
        assert entry.source == "manual"
        assert entry.address_lines == "1 rue de la Paix\n75012 PARIS"
    with database.transaction() as session:
        found = find_by_address(session, " CLAIRE.MARTIN@hopital-demo.mssante.fr ")
        assert found is not None and found.family_name == "MARTIN"
        assert find_by_address(session, "nobody@hopital-demo.mssante.fr") is None
        assert [e.address for e in find_by_national_id(session, "8" + rpps(42))] == [found.address]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"address": "not-an-address"}, "not a mailbox address"),
        ({"bal_type": "XYZ"}, "unknown BAL type"),
        ({"national_id": "8" + rpps(42)[:-1] + "0"}, "check digit"),
        ({"national_id": "1010780054"}, "8\\+RPPS or 0\\+ADELI"),
        ({"national_id": None}, "needs the person's national id"),
        ({"source": "elsewhere"}, "unknown source"),
    ],
)
def test_a3_invalid_entries_are_refused(
    database: Database, changes: dict[str, object], words: str
) -> None:
    with database.transaction() as session, pytest.raises(DirectoryError, match=words):
        add_entry(session, doctor(**changes))


def test_a3_addresses_are_unique(database: Database) -> None:
    with database.transaction() as session:
        add_entry(session, doctor())
    with database.transaction() as session, pytest.raises(DirectoryError, match="already"):
        add_entry(session, doctor(address="claire.martin@HOPITAL-DEMO.mssante.fr"))


def test_c4_pharmacy_flag(database: Database) -> None:
    with database.transaction() as session:
        pharmacy = add_entry(
            session,
            NewEntry(
                address="officine@pharma.mssante.fr",
                bal_type="ORG",
                national_id="1010000024",
                organisation_name="Pharmacie des Arcades",
                source="demo",
            ),
        )
        assert pharmacy.pharmacy is True  # guessed from the name
        assert pharmacy.source == "demo"
        clinic = add_entry(
            session,
            NewEntry(address="accueil@clinique.fr", bal_type="ORG", organisation_name="Clinique"),
        )
        assert clinic.pharmacy is False
        assert set_pharmacy(session, "accueil@clinique.fr").pharmacy is True
        assert set_pharmacy(session, "officine@pharma.mssante.fr", False).pharmacy is False
        add_entry(session, doctor())
        with pytest.raises(DirectoryError, match="not ORG"):
            set_pharmacy(session, "claire.martin@hopital-demo.mssante.fr")
        with pytest.raises(DirectoryError, match="not in the directory"):
            set_pharmacy(session, "nobody@nowhere.fr")


def test_a4_hosted_flag(database: Database) -> None:
    with database.transaction() as session:
        entry = add_entry(session, doctor())
        assert entry.hosted is False
        assert set_hosted(session, entry.address).hosted is True


def test_a3_red_list_by_address_or_national_id(database: Database, ps_sample: Path) -> None:
    import_file(database, ps_sample)
    with database.transaction() as session:
        add_entry(session, doctor(national_id="810106476764"))  # the sample's RPPS doctor
        assert set_red_list(session, "810106476764") == 2  # the mailbox and the activity
        found = lookup(session, "810106476764")
        assert len(found.entries) == 1 and len(found.practitioners) == 1
        assert all(row.red_list for row in found.entries)
        assert all(row.red_list for row in found.practitioners)
        assert set_red_list(session, "claire.martin@hopital-demo.mssante.fr", False) == 1
        entry = find_by_address(session, "claire.martin@hopital-demo.mssante.fr")
        assert entry is not None and entry.red_list is False
        with pytest.raises(DirectoryError, match="not in the directory"):
            set_red_list(session, "899999999999")


def test_remove_entry(database: Database) -> None:
    with database.transaction() as session:
        add_entry(session, doctor())
        assert remove_entry(session, "claire.martin@hopital-demo.mssante.fr") is True
        assert remove_entry(session, "claire.martin@hopital-demo.mssante.fr") is False
        assert not lookup(session, "claire.martin@hopital-demo.mssante.fr")
