"""The two national extraction formats: header recognition and mapping of one row.

The Annuaire Santé publishes ``|``-separated text files whose column names vary
slightly between versions (accents, case, ``d'``, ``coord. Structure``), and
whose ``PS_LibreAcces`` flavour ends every line with a trailing ``|``. This
module reads a header by *name*, after folding each name to a canonical key,
decides which extraction it is, and turns one line into the columns of a
directory row, or a :class:`RowError` that says why the line is refused. It is
pure (no I/O), so every rule is testable on a single line.

Row mapping choices:

- ``Extraction_Correspondance_MSSante`` (one row per mailbox, key = the address,
  lower-cased): PER/CAB rows carry the practitioner's id, checked against the
  type (``8`` = RPPS, ``0`` = ADELI, Luhn) and against the national id, which
  must be the prefix plus the id (other id types are kept as published). ORG
  and APP mailboxes take the structure id as national id: FINESS (type ``1``)
  and SIRET (type ``3``) ids are checked for shape, other types are kept as
  published. The department comes from the file when it is a department code,
  else from the postal code (``20xxx`` → ``2A``/``2B``); ORG mailboxes whose
  name says "pharmacie" (not a hospital's) are guessed to be pharmacies (C4).
- ``PS_LibreAcces_Personne_activite`` (one row per activity of a person, no
  mailbox): key = national id + a digest of what distinguishes one activity
  from another (profession, savoir-faire, mode of practice, structure), so that
  a change of address or name is a *change* of the same activity, not a removal
  plus an addition.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter

from caducee.directory.identifiers import IdentifierError, IdKind, national_id_for
from caducee.directory.normalise import fold


class SourceKind(StrEnum):
    """Where a directory row comes from; imports only ever remove rows of their own kind."""

    MSS_EXTRACTION = "mss_extraction"
    PS_LIBREACCES = "ps_libreacces"
    MANUAL = "manual"
    DEMO = "demo"


class FormatError(ValueError):
    """The file is not one of the known extractions (bad header, unknown columns)."""


class RowError(ValueError):
    """One line cannot be imported; the message is the reason shown to the operator."""


BAL_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})

_STOP_WORDS = frozenset({"d", "de", "du", "des", "l", "la", "le", "les"})


def header_key(name: str) -> str:
    """Fold a column name to its canonical key (accents, case, ``d'``, punctuation)."""
    return " ".join(word for word in fold(name).split() if word not in _STOP_WORDS)


# --- Extraction_Correspondance_MSSante -------------------------------------

MSS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bal_type", "Type de BAL"),
    ("address", "Adresse BAL"),
    ("pp_id_type", "Type Identifiant PP"),
    ("pp_id", "Identifiant PP"),
    ("pp_national_id", "Identification nationale PP"),
    ("structure_id_type", "Type identifiant structure"),
    ("structure_id", "Identification Structure"),
    ("service", "Service de rattachement"),
    ("civility", "Civilité d'exercice"),
    ("family_name", "Nom d'exercice"),
    ("given_name", "Prénom d'exercice"),
    ("category_code", "Catégorie profession"),
    ("category_label", "Libellé de catégorie profession"),
    ("profession_code", "Code Profession"),
    ("profession_label", "Libellé Profession"),
    ("speciality_code", "Code savoir-faire"),
    ("speciality_label", "Libellé savoir-faire"),
    ("dematerialisation", "Dématérialisation"),
    ("organisation_name", "Raison Sociale structure BAL"),
    ("trade_name", "Enseigne commerciale structure BAL"),
    ("l2", "L2COMPLEMENTLOCALISATION"),
    ("l3", "L3COMPLEMENTDISTRIBUTION"),
    ("l4_number", "L4NUMEROVOIE"),
    ("l4_repetition", "L4COMPLEMENTNUMEROVOIE"),
    ("l4_street_type", "NL4TYPEVOIE"),
    ("l4_street", "L4LIBELLEVOIE"),
    ("l5", "L5LIEUDITMENTION"),
    ("l6", "L6LIGNEACHEMINEMENT"),
    ("postal_code", "Code postal"),
    ("department", "Département"),
    ("country", "Pays"),
)
MSS_HEADER = "|".join(name for _field, name in MSS_COLUMNS)
_MSS_REQUIRED: tuple[str, ...] = ("bal_type", "address")

# --- PS_LibreAcces_Personne_activite ---------------------------------------

PS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pp_id_type", "Type d'identifiant PP"),
    ("pp_id", "Identifiant PP"),
    ("pp_national_id", "Identification nationale PP"),
    ("civility_exercise_code", "Code civilité d'exercice"),
    ("civility_exercise", "Libellé civilité d'exercice"),
    ("civility_code", "Code civilité"),
    ("civility", "Libellé civilité"),
    ("family_name", "Nom d'exercice"),
    ("given_name", "Prénom d'exercice"),
    ("profession_code", "Code profession"),
    ("profession_label", "Libellé profession"),
    ("category_code", "Code catégorie professionnelle"),
    ("category_label", "Libellé catégorie professionnelle"),
    ("speciality_type_code", "Code type savoir-faire"),
    ("speciality_type_label", "Libellé type savoir-faire"),
    ("speciality_code", "Code savoir-faire"),
    ("speciality_label", "Libellé savoir-faire"),
    ("practice_mode_code", "Code mode exercice"),
    ("practice_mode_label", "Libellé mode exercice"),
    ("siret", "Numéro SIRET site"),
    ("siren", "Numéro SIREN site"),
    ("finess_site", "Numéro FINESS site"),
    ("finess_legal", "Numéro FINESS établissement juridique"),
    ("structure_technical_id", "Identifiant technique de la structure"),
    ("organisation_name", "Raison sociale site"),
    ("trade_name", "Enseigne commerciale site"),
    ("recipient_complement", "Complément destinataire (coord. structure)"),
    ("geographic_complement", "Complément point géographique (coord. structure)"),
    ("street_number", "Numéro Voie (coord. structure)"),
    ("street_repetition", "Indice répétition voie (coord. structure)"),
    ("street_type_code", "Code type de voie (coord. structure)"),
    ("street_type", "Libellé type de voie (coord. structure)"),
    ("street", "Libellé Voie (coord. structure)"),
    ("distribution", "Mention distribution (coord. structure)"),
    ("cedex_office", "Bureau cedex (coord. structure)"),
    ("postal_code", "Code postal (coord. structure)"),
    ("commune_code", "Code commune (coord. structure)"),
    ("city", "Libellé commune (coord. structure)"),
    ("country_code", "Code pays (coord. structure)"),
    ("country", "Libellé pays (coord. structure)"),
    ("phone", "Téléphone (coord. structure)"),
    ("phone2", "Téléphone 2 (coord. structure)"),
    ("fax", "Télécopie (coord. structure)"),
    ("email", "Adresse e-mail (coord. structure)"),
    ("department", "Code Département (structure)"),
    ("department_label", "Libellé Département (structure)"),
    ("old_structure_id", "Ancien identifiant de la structure"),
    ("registration_authority", "Autorité d'enregistrement"),
    ("sector_code", "Code secteur d'activité"),
    ("sector_label", "Libellé secteur d'activité"),
    ("pharmacist_section_code", "Code section tableau pharmaciens"),
    ("pharmacist_section_label", "Libellé section tableau pharmaciens"),
    ("function_code", "Code fonction"),
    ("function_label", "Libellé fonction"),
    ("activity_kind_code", "Code genre d'activité"),
    ("activity_kind_label", "Libellé genre d'activité"),
)
_PS_REQUIRED: tuple[str, ...] = (
    "pp_id_type",
    "pp_id",
    "pp_national_id",
    "family_name",
    "profession_code",
)

_MSS_BY_KEY = {header_key(name): column for column, name in MSS_COLUMNS}
_PS_BY_KEY = {header_key(name): column for column, name in PS_COLUMNS}
# A few spellings seen in other versions of the files.
_PS_BY_KEY.update(
    {
        header_key("Libellé civilité exercice"): "civility_exercise",
        header_key("Code civilité exercice"): "civility_exercise_code",
        header_key("Type identifiant PP"): "pp_id_type",
    }
)


@dataclass(frozen=True)
class Layout:
    """What a header says: which extraction, and where each known column is."""

    kind: SourceKind
    positions: Mapping[str, int]
    width: int
    unknown_columns: tuple[str, ...]
    # The known fields' names and a C-level picker of their values, for split_row.
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    pick: Callable[[list[str | None]], tuple[str | None, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.positions))
        object.__setattr__(self, "pick", itemgetter(*self.positions.values()))


def read_header(line: str) -> Layout:
    """Recognise an extraction from its header line, or raise :class:`FormatError`."""
    names = line.rstrip("\r\n").split("|")
    if names and not names[-1].strip():
        names = names[:-1]  # the trailing "|" of PS_LibreAcces
    keys = [header_key(name) for name in names]
    if "adresse bal" in keys and "type bal" in keys:
        kind, table, required = SourceKind.MSS_EXTRACTION, _MSS_BY_KEY, _MSS_REQUIRED
    elif "identification nationale pp" in keys and "code profession" in keys:
        kind, table, required = SourceKind.PS_LIBREACCES, _PS_BY_KEY, _PS_REQUIRED
    else:
        raise FormatError(
            "not an Extraction_Correspondance_MSSante or PS_LibreAcces_Personne_activite "
            "header (no 'Adresse BAL' nor 'Identification nationale PP' column)"
        )
    positions: dict[str, int] = {}
    unknown: list[str] = []
    for index, key in enumerate(keys):
        column = table.get(key)
        if column is None:
            unknown.append(names[index].strip())
        elif column in positions:
            raise FormatError(f"column {names[index].strip()!r} appears twice")
        else:
            positions[column] = index
    missing = [column for column in required if column not in positions]
    if missing:
        raise FormatError(f"{kind} header lacks the columns: {', '.join(missing)}")
    return Layout(kind=kind, positions=positions, width=len(names), unknown_columns=tuple(unknown))


def split_row(line: str, layout: Layout) -> dict[str, str | None]:
    """Split one data line into the known fields (stripped; empty → None)."""
    fields = line.rstrip("\r\n").split("|")
    if len(fields) == layout.width + 1 and not fields[-1].strip():
        fields.pop()  # trailing "|"
    if len(fields) != layout.width:
        raise RowError(f"expected {layout.width} fields, found {len(fields)}")
    values = [value.strip() or None for value in fields]
    return dict(zip(layout.names, layout.pick(values), strict=True))


# --- shared helpers ----------------------------------------------------------

_ADDRESS = re.compile(r"[^@\s|]+@[^@\s|]+\.[^@\s|.]+")
_DEPARTMENT = re.compile(r"[0-9]{2,3}|2[AB]")
_POSTAL_CODE = re.compile(r"[0-9]{5}")
_PP_ID_TYPES = {"8": IdKind.RPPS, "0": IdKind.ADELI}
_STRUCTURE_ID_TYPES = {"1": IdKind.FINESS, "3": IdKind.SIRET}
_BARE_LENGTH = {IdKind.FINESS: 9, IdKind.SIRET: 14, IdKind.RPPS: 11, IdKind.ADELI: 9}


def department_of(department: str | None, postal_code: str | None) -> str | None:
    """The department code: as published when it looks like one, else from the postal code."""
    if department:
        value = department.upper()
        if _DEPARTMENT.fullmatch(value):
            return value
    if postal_code and _POSTAL_CODE.fullmatch(postal_code):
        if postal_code.startswith(("97", "98")):
            return postal_code[:3]
        if postal_code.startswith("20"):
            return "2A" if postal_code < "20200" else "2B"
        return postal_code[:2]
    return None


def _line(*parts: str | None) -> str | None:
    text = " ".join(part for part in parts if part)
    return text or None


def _lines(*lines: str | None) -> str | None:
    text = "\n".join(line for line in lines if line)
    return text or None


def city_from_routing(routing: str | None, postal_code: str | None) -> str | None:
    """The city of a routing line (``L6``: "69003 LYON"): the line without its postal code."""
    if not routing:
        return None
    if postal_code and routing.startswith(postal_code):
        return routing[len(postal_code) :].strip() or None
    return routing


PHARMACY_WORDS = ("pharmacie", "officine")
NOT_PHARMACY_WORDS = ("usage interieur", "pui")


def looks_like_pharmacy(
    bal_type: str, profession_code: str | None, names: Iterable[str | None]
) -> bool:
    """A best guess that an ORG mailbox is a pharmacy (C4): pharmacist profession or name.

    Hospital pharmacies ("pharmacie à usage intérieur") are not the patient's
    pharmacy and are left out. The flag can be set by hand when the guess fails.
    """
    if bal_type != "ORG":
        return False
    if profession_code == "21":
        return True
    for name in names:
        said = pharmacy_hint(name)
        if said is not None:
            return said
    return False


def pharmacy_hint(name: str | None) -> bool | None:
    """What one name says: a pharmacy (True), a hospital pharmacy (False), or nothing (None)."""
    words = f" {fold(name)} "
    if any(f" {word} " in words for word in NOT_PHARMACY_WORDS):
        return False
    if any(f" {word} " in words for word in PHARMACY_WORDS):
        return True
    return None


def row_hash(values: Sequence[str | None]) -> str:
    """A digest of a row's data columns: equal digests mean nothing to update."""
    text = "\x1f".join([value or "" for value in values])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _national_id(
    kind: IdKind, identifier: str | None, published: str | None, what: str
) -> tuple[str | None, str | None]:
    """Check an id against its type and its published national id.

    Returns (national id, id type name). With no bare ``identifier``, the bare id
    is taken from the published national id.
    """
    if identifier is None:
        if published is None:
            return None, None
        has_prefix = len(published) == _BARE_LENGTH[kind] + 1
        identifier = published[1:] if has_prefix else published
    if kind is IdKind.FINESS:
        identifier = identifier.upper()
    try:
        expected = national_id_for(kind, identifier)
    except IdentifierError as error:
        raise RowError(str(error)) from None
    if published is not None and published.upper() != expected:
        raise RowError(f"{what} {published} is not {expected[0]}+{kind} {identifier}")
    return expected, str(kind)


# --- mapping of one row --------------------------------------------------------

# The descriptive columns of a mailbox, in the order row_hash() reads them for a
# hand-made entry (imported rows carry the digest of their line instead).
ENTRY_DATA_COLUMNS: tuple[str, ...] = (
    "bal_type",
    "national_id",
    "id_type",
    "pp_identifier",
    "civility",
    "family_name",
    "given_name",
    "profession_code",
    "profession_label",
    "category_code",
    "category_label",
    "speciality_code",
    "speciality_label",
    "structure_id",
    "organisation_name",
    "trade_name",
    "service",
    "address_lines",
    "postal_code",
    "city",
    "department",
    "country",
    "dematerialisation",
)


def map_mss_row(raw: Mapping[str, str | None]) -> dict[str, object]:
    """Map one ``Extraction_Correspondance_MSSante`` row; raise :class:`RowError` if refused.

    The result holds ``key`` (the lower-cased address) and the directory
    columns, including the derived ``domain``, ``name_key``, ``org_key`` and
    ``pharmacy``. The importer adds the line's digest as ``row_hash``.
    """
    bal_type = (raw.get("bal_type") or "").upper()
    if bal_type not in BAL_TYPES:
        raise RowError(f"unknown BAL type {raw.get('bal_type')!r} (PER, ORG, APP or CAB)")
    address = (raw.get("address") or "").lower()
    if not address:
        raise RowError("no mailbox address")
    if len(address) > 254 or _ADDRESS.fullmatch(address) is None:
        raise RowError(f"mailbox address {raw.get('address')!r} is not an e-mail address")

    pp_id = raw.get("pp_id")
    pp_published = raw.get("pp_national_id")
    structure_type = _STRUCTURE_ID_TYPES.get(raw.get("structure_id_type") or "")
    structure_published = raw.get("structure_id")
    structure_id: str | None = structure_published
    if structure_published is not None and structure_type is not None:
        bare = structure_published
        if len(bare) == _BARE_LENGTH[structure_type] + 1 and bare[0] == raw["structure_id_type"]:
            bare = bare[1:]
        structure_id, _ = _national_id(structure_type, bare, None, "structure id")

    if bal_type in ("PER", "CAB") and (pp_id or pp_published):
        pp_type_code = raw.get("pp_id_type") or ""
        pp_kind = _PP_ID_TYPES.get(pp_type_code)
        if pp_kind is None and pp_type_code:
            national_id, id_type = pp_published or pp_id, None
        else:
            if pp_kind is None:
                raise RowError("practitioner id without its type (8 = RPPS, 0 = ADELI)")
            national_id, id_type = _national_id(pp_kind, pp_id, pp_published, "national id")
    elif bal_type == "PER":
        raise RowError("PER mailbox without a practitioner id (RPPS or ADELI)")
    else:
        national_id = structure_id
        id_type = str(structure_type) if structure_type is not None and structure_id else None

    postal_code = raw.get("postal_code")
    organisation = raw.get("organisation_name")
    trade_name = raw.get("trade_name")
    family_name, given_name = raw.get("family_name"), raw.get("given_name")
    record: dict[str, object] = {
        "bal_type": bal_type,
        "national_id": national_id,
        "id_type": id_type,
        "pp_identifier": pp_id if bal_type in ("PER", "CAB") else None,
        "civility": raw.get("civility"),
        "family_name": family_name,
        "given_name": given_name,
        "profession_code": raw.get("profession_code"),
        "profession_label": raw.get("profession_label"),
        "category_code": raw.get("category_code"),
        "category_label": raw.get("category_label"),
        "speciality_code": raw.get("speciality_code"),
        "speciality_label": raw.get("speciality_label"),
        "structure_id": structure_id,
        "organisation_name": organisation,
        "trade_name": trade_name,
        "service": raw.get("service"),
        "address_lines": _lines(
            raw.get("l2"),
            raw.get("l3"),
            _line(
                raw.get("l4_number"),
                raw.get("l4_repetition"),
                raw.get("l4_street_type"),
                raw.get("l4_street"),
            ),
            raw.get("l5"),
            raw.get("l6"),
        ),
        "postal_code": postal_code,
        "city": city_from_routing(raw.get("l6"), postal_code),
        "department": department_of(raw.get("department"), postal_code),
        "country": raw.get("country"),
        "dematerialisation": raw.get("dematerialisation"),
    }
    record["key"] = address
    record["address"] = address
    record["domain"] = address.rpartition("@")[2]
    record.update(
        search_keys(bal_type, family_name, given_name, organisation, trade_name, raw.get("service"))
    )
    if record["name_key"] is None:  # a mailbox with no name at all sorts by its address
        record["name_key"] = fold(address)[:200]
    record["pharmacy"] = looks_like_pharmacy(
        bal_type, raw.get("profession_code"), (organisation, trade_name)
    )
    return record


def search_keys(
    bal_type: str | None,
    family_name: str | None,
    given_name: str | None,
    organisation: str | None,
    trade_name: str | None,
    service: str | None = None,
) -> dict[str, str | None]:
    """The folded keys a search matches: the person's name, and the organisation's.

    A person sorts by family then given name; an organisation mailbox, which has
    no person, sorts by its organisation (or trade) name and service.
    """
    # fold() splits on spaces, so folding a joined string joins the folded parts.
    person = fold(f"{family_name or ''} {given_name or ''}")
    organisation_key = fold(organisation or trade_name)
    if bal_type in ("ORG", "APP") or not person:
        name_key = fold(f"{organisation or trade_name or ''} {service or ''}") or person
    else:
        name_key = person
    return {"name_key": name_key[:200] or None, "org_key": organisation_key[:200] or None}


def map_ps_row(raw: Mapping[str, str | None]) -> dict[str, object]:
    """Map one ``PS_LibreAcces_Personne_activite`` row; raise :class:`RowError` if refused."""
    pp_type_code = raw.get("pp_id_type") or ""
    pp_kind = _PP_ID_TYPES.get(pp_type_code)
    if pp_kind is None:
        raise RowError(f"unknown practitioner id type {pp_type_code!r} (8 = RPPS, 0 = ADELI)")
    pp_id = raw.get("pp_id")
    if pp_id is None:
        raise RowError("no practitioner id")
    national_id, id_type = _national_id(pp_kind, pp_id, raw.get("pp_national_id"), "national id")
    assert national_id is not None
    family_name = raw.get("family_name")
    if family_name is None:
        raise RowError("no family name")
    postal_code = raw.get("postal_code")
    city = raw.get("city") or city_from_routing(raw.get("cedex_office"), postal_code)
    organisation = raw.get("organisation_name")
    trade_name = raw.get("trade_name")
    given_name = raw.get("given_name")
    record: dict[str, object] = {
        "national_id": national_id,
        "id_type": id_type,
        "pp_identifier": pp_id,
        "civility": raw.get("civility_exercise") or raw.get("civility"),
        "family_name": family_name,
        "given_name": given_name,
        "profession_code": raw.get("profession_code"),
        "profession_label": raw.get("profession_label"),
        "category_code": raw.get("category_code"),
        "category_label": raw.get("category_label"),
        "speciality_code": raw.get("speciality_code"),
        "speciality_label": raw.get("speciality_label"),
        "practice_mode": raw.get("practice_mode_label") or raw.get("practice_mode_code"),
        "structure_id": raw.get("structure_technical_id"),
        "siret": raw.get("siret"),
        "finess": raw.get("finess_site"),
        "organisation_name": organisation,
        "trade_name": trade_name,
        "address_lines": _lines(
            raw.get("recipient_complement"),
            raw.get("geographic_complement"),
            _line(
                raw.get("street_number"),
                raw.get("street_repetition"),
                raw.get("street_type"),
                raw.get("street"),
            ),
            raw.get("distribution"),
            raw.get("cedex_office") or _line(postal_code, raw.get("city")),
        ),
        "postal_code": postal_code,
        "city": city,
        "department": department_of(raw.get("department"), postal_code),
        "country": raw.get("country"),
        "sector_label": raw.get("sector_label"),
    }
    record["key"] = record["activity_key"] = activity_key(national_id, raw)
    record.update(search_keys("PER", family_name, given_name, organisation, trade_name))
    return record


def activity_key(national_id: str, raw: Mapping[str, str | None]) -> str:
    """The key of one activity: national id + digest of what distinguishes activities."""
    digest = row_hash(
        [
            raw.get("profession_code"),
            raw.get("speciality_type_code"),
            raw.get("speciality_code"),
            raw.get("practice_mode_code"),
            raw.get("structure_technical_id"),
            raw.get("function_code"),
            raw.get("activity_kind_code"),
        ]
    )[:16]
    return f"{national_id}:{digest}"


# The fields a row's key is made of, per kind of file.
KEY_FIELDS: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.MSS_EXTRACTION: ("address",),
    SourceKind.PS_LIBREACCES: (
        "pp_national_id",
        "profession_code",
        "speciality_type_code",
        "speciality_code",
        "practice_mode_code",
        "structure_technical_id",
        "function_code",
        "activity_kind_code",
    ),
}


def line_key(line: str, layout: Layout) -> str | None:
    """The key of a line, reading only the fields it is made of (None if not readable).

    The fast path of a re-import, for lines already stored: it does not check
    the line, which was checked when it was first imported.
    """
    fields = line.split("|")
    if len(fields) not in (layout.width, layout.width + 1):
        return None
    raw = {
        name: fields[index].strip() or None
        for name in KEY_FIELDS[layout.kind]
        if (index := layout.positions.get(name)) is not None
    }
    return row_key(layout.kind, raw)


def layout_signature(layout: Layout) -> bytes:
    """Bytes that change whenever the same line would be read differently (the header)."""
    columns = ",".join(f"{name}={index}" for name, index in sorted(layout.positions.items()))
    return f"{layout.kind}|{layout.width}|{columns}".encode()


def row_key(kind: SourceKind, raw: Mapping[str, str | None]) -> str | None:
    """The key a row claims even when it is refused (so that its entry is not removed)."""
    if kind is SourceKind.MSS_EXTRACTION:
        address = (raw.get("address") or "").lower()
        return address or None
    published = raw.get("pp_national_id")
    return activity_key(published.upper(), raw) if published else None


MAPPERS = {SourceKind.MSS_EXTRACTION: map_mss_row, SourceKind.PS_LIBREACCES: map_ps_row}
