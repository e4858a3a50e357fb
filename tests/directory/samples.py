"""Builders of small extraction files for the directory tests (synthetic, no real person)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from caducee.directory.formats import MSS_COLUMNS, MSS_HEADER
from caducee.directory.identifiers import luhn_check_digit

MSS_FIELDS = [name for name, _header in MSS_COLUMNS]
SAMPLE_NAME = "PS_LibreAcces_Personne_activite_small.txt"


def with_key(payload: str) -> str:
    """``payload`` followed by its Luhn check digit."""
    return payload + luhn_check_digit(payload)


def rpps(number: int) -> str:
    """A valid 11-digit RPPS number, distinct for each ``number``."""
    return with_key(f"1{number:09d}")


def adeli(number: int) -> str:
    """A valid 9-digit ADELI number."""
    return with_key(f"75{number:06d}")


def wrong_key(value: str) -> str:
    """The same number with a wrong last digit."""
    return value[:-1] + str((int(value[-1]) + 1) % 10)


def mss_line(**fields: str) -> str:
    """One line of Extraction_Correspondance_MSSante; unnamed fields are empty."""
    unknown = set(fields) - set(MSS_FIELDS)
    assert not unknown, unknown
    return "|".join(fields.get(name, "") for name in MSS_FIELDS)


def per_line(
    address: str,
    number: int,
    family: str,
    given: str,
    *,
    profession: tuple[str, str] = ("10", "Médecin"),
    speciality: tuple[str, str] = ("", ""),
    postal_code: str = "75012",
    city: str = "PARIS",
    rpps_value: str | None = None,
    organisation: str = "",
) -> str:
    """A PER mailbox of a practitioner identified by RPPS."""
    identifier = rpps_value or rpps(number)
    return mss_line(
        bal_type="PER",
        address=address,
        pp_id_type="8",
        pp_id=identifier,
        pp_national_id="8" + identifier,
        civility="DR",
        family_name=family,
        given_name=given,
        category_code="C",
        category_label="Civil",
        profession_code=profession[0],
        profession_label=profession[1],
        speciality_code=speciality[0],
        speciality_label=speciality[1],
        organisation_name=organisation,
        l4_number="12",
        l4_street_type="R",
        l4_street="DES LILAS",
        l6=f"{postal_code} {city}",
        postal_code=postal_code,
        country="France",
    )


def org_line(
    address: str,
    finess: str,
    name: str,
    *,
    service: str = "",
    postal_code: str = "69003",
    city: str = "LYON",
) -> str:
    """An ORG mailbox of a structure identified by FINESS."""
    return mss_line(
        bal_type="ORG",
        address=address,
        structure_id_type="1",
        structure_id="1" + finess,
        service=service,
        organisation_name=name,
        l6=f"{postal_code} {city}",
        postal_code=postal_code,
        country="France",
    )


def write_mss(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    """Write a header and ``lines`` as an Extraction_Correspondance_MSSante file."""
    text = newline.join([MSS_HEADER, *lines]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    """A zip archive holding ``members`` (name → content)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path
