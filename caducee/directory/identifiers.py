"""Identifier checks: RPPS, ADELI, FINESS, SIRET, national ids and the patient INS (A1, A3).

Every identifier that enters the directory or an address is checked here, with
pure functions and no I/O, so that the importers, the SMTP session and the
policies share one answer. Each check says *why* a value is refused, because an
operator reading an import report or a professional reading a bounce needs the
reason, not just "invalid".

Rules, and the choices made where the sources are silent:

- **RPPS**: 11 digits, the last one a Luhn check digit (verified on real numbers).
- **ADELI**: 9 digits, Luhn as well.
- **FINESS**: 9 alphanumerics (Corsican numbers start with ``2A``/``2B``). Real
  numeric FINESS numbers happen to be Luhn-valid, but no official text says the
  last digit is a Luhn key, and no rule exists for the Corsican ones; refusing a
  structure on an unofficial rule would drop real mailboxes. So the Luhn check is
  *not* applied by default; ``finess_valid(value, check_luhn=True)`` offers it
  for callers that want the stricter, empirical test.
- **SIRET**: 14 digits. SIRET numbers are Luhn-valid except those of La Poste,
  which follow another rule; the directory only needs to recognise the shape, so
  the key is not checked.
- **National ids** (A3): ``8``+RPPS and ``0``+ADELI for persons; ``1``+FINESS and
  ``3``+SIRET for structures. The four prefixes are distinct, so a national id
  parses without being told whether it names a person or a structure.
- **INS / NIR** (A1): 13 characters and a 2-digit key, key = 97 − (number mod 97)
  where ``2A`` counts as ``19`` and ``2B`` as ``18`` for the computation only.
  Months are not checked against 01–12: fictitious months 20–42 and 50–99 exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Holder",
    "IdKind",
    "IdentifierError",
    "NationalId",
    "PatientAddress",
    "adeli_valid",
    "check_identifier",
    "finess_valid",
    "ins_key",
    "ins_key_valid",
    "luhn_check_digit",
    "luhn_valid",
    "national_id_for",
    "parse_ins",
    "parse_national_id",
    "parse_patient_address",
    "rpps_valid",
    "siret_valid",
]


class IdentifierError(ValueError):
    """A value is not a valid identifier; ``str(error)`` says why, ``code`` classifies it.

    Codes: ``format`` (wrong length or characters), ``key`` (check digit or key
    wrong), ``prefix`` (unknown national id prefix), ``domain`` (patient address
    on another domain).
    """

    def __init__(self, message: str, code: str = "format") -> None:
        super().__init__(message)
        self.code = code


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (decimal digits only, at least 2) passes the Luhn check."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    return _luhn_sum(digits, with_check_digit=True) % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The Luhn check digit to append to ``payload`` (decimal digits)."""
    if not payload or not payload.isascii() or not payload.isdigit():
        raise ValueError("a Luhn payload is made of decimal digits")
    return str((10 - _luhn_sum(payload, with_check_digit=False) % 10) % 10)


# Luhn's doubled digit, precomputed: 0→0, 1→2, …, 5→1 (10 − 9), …, 9→9.
_DOUBLED = tuple(2 * digit - 9 if digit > 4 else 2 * digit for digit in range(10))


def _luhn_sum(digits: str, *, with_check_digit: bool) -> int:
    # The rightmost digit of the full number (the check digit) is not doubled;
    # without it, the payload's rightmost digit is.
    values = [ord(char) - 48 for char in reversed(digits)]
    kept, doubled = (values[::2], values[1::2]) if with_check_digit else (values[1::2], values[::2])
    return sum(kept) + sum([_DOUBLED[value] for value in doubled])


def _digits(value: str, length: int) -> bool:
    return len(value) == length and value.isascii() and value.isdigit()


def rpps_valid(value: str) -> bool:
    """True for an RPPS number: 11 digits with a Luhn check digit."""
    return _digits(value, 11) and luhn_valid(value)


def adeli_valid(value: str) -> bool:
    """True for an ADELI number: 9 digits with a Luhn check digit."""
    return _digits(value, 9) and luhn_valid(value)


_FINESS = re.compile(r"[0-9A-Za-z]{9}")


def finess_valid(value: str, *, check_luhn: bool = False) -> bool:
    """True for a FINESS number: 9 alphanumerics (see the module docstring on Luhn).

    With ``check_luhn``, an all-digit number must also be Luhn-valid (an empirical
    property of real numbers, not an official rule); Corsican numbers are then
    checked for shape only.
    """
    if not value.isascii() or _FINESS.fullmatch(value) is None:
        return False
    if check_luhn and value.isdigit():
        return luhn_valid(value)
    return True


def siret_valid(value: str) -> bool:
    """True for a SIRET number's shape: 14 digits (the key is not checked, see above)."""
    return _digits(value, 14)


class IdKind(StrEnum):
    """The registry a national id comes from."""

    RPPS = "RPPS"
    ADELI = "ADELI"
    FINESS = "FINESS"
    SIRET = "SIRET"


class Holder(StrEnum):
    """Whether a national id names a person or a structure."""

    PERSON = "person"
    STRUCTURE = "structure"


# prefix → (kind, holder, length of the identifier after the prefix)
_PREFIXES: dict[str, tuple[IdKind, Holder, int]] = {
    "8": (IdKind.RPPS, Holder.PERSON, 11),
    "0": (IdKind.ADELI, Holder.PERSON, 9),
    "1": (IdKind.FINESS, Holder.STRUCTURE, 9),
    "3": (IdKind.SIRET, Holder.STRUCTURE, 14),
}
_KIND_PREFIX = {kind: prefix for prefix, (kind, _holder, _length) in _PREFIXES.items()}


@dataclass(frozen=True, slots=True)
class NationalId:
    """A checked national id: ``value`` is the prefixed form, ``identifier`` the bare one."""

    value: str
    kind: IdKind
    identifier: str

    @property
    def holder(self) -> Holder:
        """Person (RPPS, ADELI) or structure (FINESS, SIRET)."""
        return _PREFIXES[self.value[0]][1]


def _check_identifier(kind: IdKind, identifier: str) -> None:
    if kind is IdKind.RPPS:
        if not _digits(identifier, 11):
            raise IdentifierError(f"RPPS {identifier!r} is not 11 digits")
        if not luhn_valid(identifier):
            raise IdentifierError(f"RPPS {identifier} has a wrong check digit (Luhn)", "key")
    elif kind is IdKind.ADELI:
        if not _digits(identifier, 9):
            raise IdentifierError(f"ADELI {identifier!r} is not 9 digits")
        if not luhn_valid(identifier):
            raise IdentifierError(f"ADELI {identifier} has a wrong check digit (Luhn)", "key")
    elif kind is IdKind.FINESS:
        if not finess_valid(identifier):
            raise IdentifierError(f"FINESS {identifier!r} is not 9 letters or digits")
    elif not siret_valid(identifier):
        raise IdentifierError(f"SIRET {identifier!r} is not 14 digits")


def check_identifier(kind: IdKind, identifier: str) -> None:
    """Raise :class:`IdentifierError` unless ``identifier`` is a valid bare ``kind`` number."""
    _check_identifier(kind, identifier)


def national_id_for(kind: IdKind, identifier: str) -> str:
    """The national id of a bare identifier: ``national_id_for(RPPS, "10001045367")``.

    Raises :class:`IdentifierError` when the identifier is not valid.
    """
    _check_identifier(kind, identifier)
    return _KIND_PREFIX[kind] + identifier


def parse_national_id(value: str, holder: Holder | None = None) -> NationalId:
    """Check a prefixed national id (A3) and say what it is.

    ``holder`` restricts the accepted prefixes to persons or to structures.
    Raises :class:`IdentifierError` with the reason when it is not valid.
    """
    value = value.strip()
    if not value:
        raise IdentifierError("empty national id")
    entry = _PREFIXES.get(value[0])
    if entry is None or (holder is not None and entry[1] is not holder):
        allowed = (
            "8+RPPS or 0+ADELI"
            if holder is Holder.PERSON
            else (
                "1+FINESS or 3+SIRET"
                if holder is Holder.STRUCTURE
                else "8+RPPS, 0+ADELI, 1+FINESS or 3+SIRET"
            )
        )
        raise IdentifierError(f"national id {value!r} does not start as {allowed}", "prefix")
    kind, _holder, length = entry
    identifier = value[1:]
    if len(identifier) != length:
        raise IdentifierError(
            f"national id {value!r}: a {kind} national id is 1+{length} characters"
        )
    _check_identifier(kind, identifier)
    if kind is IdKind.FINESS:
        identifier = identifier.upper()
    return NationalId(value=value[0] + identifier, kind=kind, identifier=identifier)


# ---------------------------------------------------------------------------
# Patients (A1)

_INS = re.compile(r"[1-478][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}")
_CORSICA = {"2A": "19", "2B": "18"}


def ins_key(nir: str) -> str:
    """The 2-digit key of a 13-character NIR (``2A``/``2B`` allowed as department)."""
    nir = nir.upper()
    if len(nir) != 13 or _INS.fullmatch(nir + "00") is None:
        raise IdentifierError(f"{nir!r} is not a 13-character NIR")
    digits = nir[:5] + _CORSICA.get(nir[5:7], nir[5:7]) + nir[7:]
    return f"{97 - int(digits) % 97:02d}"


def parse_ins(value: str) -> str:
    """Check an INS matricule (NIR or NIA + key) and return it upper-cased.

    Raises :class:`IdentifierError`: code ``format`` when it is not 15 characters
    of the right shape, ``key`` when the key is wrong.
    """
    ins = value.strip().upper()
    if _INS.fullmatch(ins) is None:
        raise IdentifierError(f"{value!r} is not a 15-character INS matricule")
    if ins_key(ins[:13]) != ins[13:]:
        raise IdentifierError(f"INS {ins} has a wrong key", "key")
    return ins


def ins_key_valid(ins: str) -> bool:
    """True when ``ins`` is a well-formed INS matricule with the right key."""
    try:
        parse_ins(ins)
    except IdentifierError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PatientAddress:
    """A patient's mailbox address ``<INS>@<patient domain>``, checked."""

    ins: str
    domain: str

    def __str__(self) -> str:
        return f"{self.ins}@{self.domain}"


def parse_patient_address(address: str, patient_domain: str | None = None) -> PatientAddress:
    """Check ``address`` as a patient address (A1) and split it.

    The domain is compared case-insensitively with ``patient_domain`` when given.
    A wrong INS key is an error with code ``key`` (a syntax error for SMTP,
    ``550 5.1.3``), not an unknown user.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise IdentifierError(f"{address!r} is not an address")
    domain = domain.lower().rstrip(".")
    if patient_domain is not None and domain != patient_domain.lower().rstrip("."):
        raise IdentifierError(f"{domain} is not the patient domain {patient_domain}", "domain")
    return PatientAddress(ins=parse_ins(local), domain=domain)
