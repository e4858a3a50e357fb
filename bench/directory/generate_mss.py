"""Generate a synthetic ``Extraction_Correspondance_MSSante`` file of N rows.

The file has the real layout (UTF-8, ``|``, the 31 published column names, one
header line) and realistic content for an import benchmark: about 85 % PER
mailboxes of practitioners with valid RPPS or ADELI numbers (Luhn), 15 % ORG
mailboxes of structures with FINESS or SIRET ids, accented names built from
syllables (no real person), a spread of professions, savoir-faire, postal codes
and departments, and a small share of repeated addresses as in the real file.
Output is deterministic for a given ``--seed``.

Usage: ``python bench/directory/generate_mss.py 1000000 /tmp/mss.txt [--zip] [--seed 7]``
"""

from __future__ import annotations

import argparse
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

from caducee.directory.formats import MSS_HEADER
from caducee.directory.identifiers import luhn_check_digit
from caducee.directory.normalise import fold

SYLLABLES = (
    "ba",
    "be",
    "bi",
    "bo",
    "bu",
    "da",
    "de",
    "di",
    "do",
    "du",
    "fa",
    "fe",
    "fi",
    "fo",
    "ga",
    "ge",
    "gi",
    "go",
    "la",
    "le",
    "li",
    "lo",
    "lu",
    "ma",
    "me",
    "mi",
    "mo",
    "mu",
    "na",
    "ne",
    "ni",
    "no",
    "pa",
    "pe",
    "pi",
    "po",
    "ra",
    "re",
    "ri",
    "ro",
    "ru",
    "sa",
    "se",
    "si",
    "so",
    "ta",
    "te",
    "ti",
    "to",
    "va",
    "ve",
    "vi",
    "vo",
    "cha",
    "che",
    "chi",
    "cho",
    "lan",
    "len",
    "lin",
    "lon",
    "man",
    "men",
    "mon",
    "ber",
    "ger",
    "mar",
    "bel",
    "dal",
    "fon",
    "gar",
    "lau",
    "mer",
    "nou",
    "pon",
    "rou",
    "tal",
    "val",
    "vil",
    "cour",
    "mont",
)
ACCENTED = {"e": "é", "a": "à", "o": "ô", "i": "ï", "u": "û"}
PROFESSIONS = (
    ("10", "Médecin", 0.45),
    ("21", "Pharmacien", 0.08),
    ("40", "Chirurgien-Dentiste", 0.07),
    ("50", "Sage-Femme", 0.04),
    ("60", "Infirmier", 0.16),
    ("70", "Masseur-Kinésithérapeute", 0.10),
    ("91", "Orthophoniste", 0.03),
    ("93", "Psychologue", 0.03),
    ("26", "Audioprothésiste", 0.02),
    ("28", "Opticien-Lunetier", 0.02),
)
SPECIALITIES = (
    ("SM26", "Qualifié en Médecine Générale"),
    ("SM54", "Médecine générale"),
    ("SM20", "Gynécologie-obstétrique"),
    ("SM04", "Cardiologie et maladies vasculaires"),
    ("SM15", "Dermatologie et vénéréologie"),
    ("SM42", "Pédiatrie"),
    ("SM43", "Psychiatrie"),
    ("SM53", "Radio-diagnostic"),
    ("SM38", "Ophtalmologie"),
)
STREET_TYPES = ("R", "AV", "BD", "CHE", "PL", "RTE", "ALL", "IMP")
CITY_WORDS = ("SAINT", "BOURG", "VILLE", "MONT", "PONT", "VAL", "LES", "SUR", "LE", "LA")
DOMAINS = tuple(
    f"{name}.mssante.fr"
    for name in (
        "medecin",
        "pharmacien",
        "ch-sud",
        "labo",
        "clinique",
        "infirmier",
        "ap-hm",
        "chu-nord",
        "kine",
        "sagefemme",
    )
)


def _word(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(SYLLABLES) for _ in range(syllables))
    if rng.random() < 0.15:
        position = rng.randrange(len(word))
        word = word[:position] + ACCENTED.get(word[position], word[position]) + word[position + 1 :]
    return word


def _family(rng: random.Random) -> str:
    name = _word(rng, rng.choice((2, 2, 3, 3, 4))).upper()
    if rng.random() < 0.08:
        name += "-" + _word(rng, 2).upper()
    if rng.random() < 0.03:
        name = "D'" + name
    return name


def _given(rng: random.Random) -> str:
    name = _word(rng, rng.choice((2, 3))).capitalize()
    if rng.random() < 0.1:
        name += "-" + _word(rng, 2).capitalize()
    return name


def _with_luhn(rng: random.Random, digits: int) -> str:
    payload = "".join(str(rng.randrange(10)) for _ in range(digits - 1))
    return payload + luhn_check_digit(payload)


def _postal(rng: random.Random) -> tuple[str, str]:
    department = rng.randrange(1, 96)
    if department == 20:
        return rng.choice((("20000", "2A"), ("20200", "2B")))
    code = f"{department:02d}{rng.randrange(0, 1000):03d}"
    return code, f"{department:02d}"


def _pick_profession(rng: random.Random) -> tuple[str, str]:
    roll = rng.random()
    for code, label, share in PROFESSIONS:
        roll -= share
        if roll <= 0:
            return code, label
    return PROFESSIONS[0][0], PROFESSIONS[0][1]


def rows(count: int, seed: int) -> Iterator[str]:
    """The data lines (without line ends) of a synthetic extraction."""
    rng = random.Random(seed)
    previous: list[str] = []
    for index in range(count):
        if previous and rng.random() < 0.0003:
            yield rng.choice(previous)  # a repeated address, as in the real file
            continue
        postal_code, department = _postal(rng)
        city = (
            " ".join(rng.choice(CITY_WORDS) for _ in range(rng.choice((1, 2))))
            + " "
            + _word(rng, 2).upper()
        )
        number, repetition = str(rng.randrange(1, 300)), rng.choice(("", "", "B"))
        street = f"{number}|{repetition}|{rng.choice(STREET_TYPES)}|{_word(rng, 3).upper()}"
        domain = rng.choice(DOMAINS)
        if rng.random() < 0.85:
            family, given = _family(rng), _given(rng)
            code, label = _pick_profession(rng)
            speciality = rng.choice(SPECIALITIES) if code == "10" else ("", "")
            if rng.random() < 0.7:
                id_type, identifier = "8", _with_luhn(rng, 11)
            else:
                id_type, identifier = "0", _with_luhn(rng, 9)
            local = fold(f"{given}.{family}").replace(" ", "-")
            address = f"{local}.{index}@{domain}"
            structure_type, structure = (
                ("1", "1" + _with_luhn(rng, 9)) if rng.random() < 0.4 else ("", "")
            )
            fields = [
                "PER",
                address,
                id_type,
                identifier,
                id_type + identifier,
                structure_type,
                structure,
                "",
                rng.choice(("DR", "M", "MME", "")),
                family,
                given,
                "C",
                "Civil",
                code,
                label,
                speciality[0],
                speciality[1],
                rng.choice(("O", "N")),
                "CABINET " + family if not structure else "CH " + _word(rng, 2).upper(),
                "",
                "",
                "",
                street,
                "",
                f"{postal_code} {city}",
                postal_code,
                department,
                "France",
            ]
        else:
            organisation = (
                rng.choice(
                    ("CH", "CLINIQUE", "PHARMACIE", "LABORATOIRE", "EHPAD", "CENTRE DE SANTE")
                )
                + " "
                + _word(rng, 3).upper()
            )
            if rng.random() < 0.6:
                structure_type, structure = "1", "1" + _with_luhn(rng, 9)
            else:
                structure_type, structure = "3", "3" + _with_luhn(rng, 14)
            service = rng.choice(("", "Secrétariat", "Cardiologie", "Urgences", "Direction"))
            address = f"{fold(_word(rng, 2))}.{index}@{domain}"
            fields = [
                "ORG",
                address,
                "",
                "",
                "",
                structure_type,
                structure,
                service,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                rng.choice(("O", "N")),
                organisation,
                "",
                "",
                "",
                street,
                "",
                f"{postal_code} {city}",
                postal_code,
                department,
                "France",
            ]
        line = "|".join(fields)
        if len(previous) < 1000:
            previous.append(line)
        elif rng.random() < 0.01:
            previous[rng.randrange(1000)] = line
        yield line


def generate(count: int, output: Path, *, seed: int = 7, as_zip: bool = False) -> Path:
    """Write ``count`` rows (plus the header) to ``output`` (a .txt, or a .zip holding one)."""

    def write(handle: object) -> None:
        assert hasattr(handle, "write")
        handle.write(MSS_HEADER + "\n")
        for line in rows(count, seed):
            handle.write(line + "\n")

    if as_zip:
        with (
            zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            archive.open("Extraction_Correspondance_MSSante.txt", "w") as member,
        ):
            import io

            with io.TextIOWrapper(member, encoding="utf-8", newline="\n") as text:
                write(text)
    else:
        with output.open("w", encoding="utf-8", newline="\n") as handle:
            write(handle)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--zip", action="store_true", help="write a .zip holding the .txt")
    args = parser.parse_args()
    generate(args.count, args.output, seed=args.seed, as_zip=args.zip)


if __name__ == "__main__":
    main()
