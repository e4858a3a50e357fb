"""Identifier checks (A1, A3): tables of real and broken values, and a few properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caducee.directory.identifiers import (
    Holder,
    IdentifierError,
    IdKind,
    adeli_valid,
    finess_valid,
    ins_key,
    ins_key_valid,
    luhn_check_digit,
    luhn_valid,
    national_id_for,
    parse_ins,
    parse_national_id,
    parse_patient_address,
    rpps_valid,
    siret_valid,
)

# Real identifiers published in the Annuaire Santé extractions and the ANS examples.
REAL_RPPS = ["10001045367", "10106476764"]
REAL_ADELI = ["012600631", "759124159", "010001949", "019402379"]
REAL_FINESS = ["010780054", "010000024", "010002129"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("79927398713", True),  # the textbook Luhn example
        ("79927398710", False),
        ("0", False),  # too short to carry a key
        ("", False),
        ("12a4", False),
        ("١٢٣٤", False),  # non-ASCII digits are not digits here
    ],
)
def test_luhn_valid(value: str, valid: bool) -> None:
    assert luhn_valid(value) is valid


@given(st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_luhn_check_digit_makes_a_valid_number(payload: str) -> None:
    number = payload + luhn_check_digit(payload)
    assert luhn_valid(number)
    changed = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not luhn_valid(changed)


@pytest.mark.parametrize("value", REAL_RPPS)
def test_a3_rpps_luhn_key_real_numbers(value: str) -> None:
    assert rpps_valid(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10001045368", "wrong check digit"),
        ("10106476765", "wrong check digit"),
        ("1000104536", "10 digits"),
        ("100010453670", "12 digits"),
        ("1000104536A", "a letter"),
        (" 10001045367", "a space"),
    ],
)
def test_a3_rpps_luhn_key(value: str, reason: str) -> None:
    assert not rpps_valid(value), reason


@pytest.mark.parametrize("value", REAL_ADELI)
def test_a3_adeli_luhn_key_real_numbers(value: str) -> None:
    assert adeli_valid(value)


@pytest.mark.parametrize("value", ["012600632", "01260063", "0126006311", "01260063X"])
def test_a3_adeli_luhn_key(value: str) -> None:
    assert not adeli_valid(value)


@pytest.mark.parametrize("value", [*REAL_FINESS, "2A0000123", "2B0012345", "75000001A"])
def test_a3_finess_is_nine_alphanumerics(value: str) -> None:
    assert finess_valid(value)


@pytest.mark.parametrize("value", ["01078005", "0107800541", "01078-054", "0107800é4", ""])
def test_a3_finess_shape_refused(value: str) -> None:
    assert not finess_valid(value)


def test_a3_finess_luhn_is_opt_in() -> None:
    # Real numeric FINESS numbers are Luhn-valid, but that is not an official rule.
    assert all(finess_valid(value, check_luhn=True) for value in REAL_FINESS)
    assert finess_valid("010780055")
    assert not finess_valid("010780055", check_luhn=True)
    assert finess_valid("2A0000123", check_luhn=True)  # no rule for Corsica: shape only


def test_siret_shape() -> None:
    assert siret_valid("49940088500020")
    assert not siret_valid("4994008850002")


@pytest.mark.parametrize(
    ("value", "kind", "holder", "identifier"),
    [
        ("810001045367", IdKind.RPPS, Holder.PERSON, "10001045367"),
        ("0012600631", IdKind.ADELI, Holder.PERSON, "012600631"),
        ("1010780054", IdKind.FINESS, Holder.STRUCTURE, "010780054"),
        ("12a0000123", IdKind.FINESS, Holder.STRUCTURE, "2A0000123"),
        ("349940088500020", IdKind.SIRET, Holder.STRUCTURE, "49940088500020"),
    ],
)
def test_a3_national_id_prefixes(value: str, kind: IdKind, holder: Holder, identifier: str) -> None:
    parsed = parse_national_id(value)
    assert (parsed.kind, parsed.holder, parsed.identifier) == (kind, holder, identifier)
    assert parsed.value == value[0] + identifier
    assert national_id_for(kind, identifier) == parsed.value


@pytest.mark.parametrize(
    ("value", "code", "words"),
    [
        ("810001045368", "key", "check digit"),
        ("0012600632", "key", "ADELI"),
        ("81000104536", "format", "1+11"),
        ("910001045367", "prefix", "does not start"),
        ("", "format", "empty"),
    ],
)
def test_a3_national_id_refused_with_reason(value: str, code: str, words: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_national_id(value)
    assert caught.value.code == code
    assert words in str(caught.value)


def test_a3_national_id_holder_restriction() -> None:
    assert parse_national_id("810001045367", Holder.PERSON).kind is IdKind.RPPS
    with pytest.raises(IdentifierError, match="8\\+RPPS or 0\\+ADELI"):
        parse_national_id("1010780054", Holder.PERSON)
    with pytest.raises(IdentifierError, match="1\\+FINESS or 3\\+SIRET"):
        parse_national_id("810001045367", Holder.STRUCTURE)


@pytest.mark.parametrize(
    "ins",
    [
        "279035121518989",  # ANS test patient (A1 example)
        "146026322000196",  # CI-SIS HL7 v2 example
    ],
)
def test_a1_ins_key_real_examples(ins: str) -> None:
    assert ins_key_valid(ins)
    assert ins_key(ins[:13]) == ins[13:]


@pytest.mark.parametrize(
    "ins",
    ["279035121518988", "27903512151898", "2790351215189890", "579035121518989", "27903512151898X"],
)
def test_a1_ins_key_refused(ins: str) -> None:
    assert not ins_key_valid(ins)


def _corsican_key(nir: str) -> str:
    # Independent computation: 2A counts as 19 and 2B as 18, i.e. the number
    # minus 1,000,000 or 2,000,000 once "2A"/"2B" is read as "20".
    number = int(nir[:5] + "20" + nir[7:]) - (1_000_000 if nir[5:7] == "2A" else 2_000_000)
    return f"{97 - number % 97:02d}"


@pytest.mark.parametrize("nir", ["185052A123456", "292012B045012", "179622A004321"])
def test_a1_ins_key_corsica(nir: str) -> None:
    key = _corsican_key(nir)
    assert ins_key(nir) == key
    assert ins_key_valid(nir + key)
    assert ins_key_valid(nir.lower() + key)  # "2a" is read as "2A"
    assert parse_ins(nir.lower() + key) == nir + key
    # The key computed as if "2A"/"2B" were the digits "20" is wrong.
    as_twenty = f"{97 - int(nir[:5] + '20' + nir[7:]) % 97:02d}"
    assert as_twenty != key
    assert not ins_key_valid(nir + as_twenty)


@pytest.mark.parametrize("month", ["20", "42", "50", "62", "99"])
def test_a1_fictitious_months_are_allowed(month: str) -> None:
    nir = f"180{month}75123456"[:13]
    assert ins_key_valid(nir + ins_key(nir))


def test_a1_patient_address() -> None:
    address = parse_patient_address("279035121518989@Patient.MSSante.fr", "patient.mssante.fr")
    assert (address.ins, address.domain) == ("279035121518989", "patient.mssante.fr")
    assert str(address) == "279035121518989@patient.mssante.fr"


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("279035121518988@patient.mssante.fr", "key"),
        ("27903512151898@patient.mssante.fr", "format"),
        ("dupont@patient.mssante.fr", "format"),
        ("279035121518989@medecin.mssante.fr", "domain"),
        ("279035121518989", "format"),
        ("@patient.mssante.fr", "format"),
    ],
)
def test_a1_patient_address_refused(address: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_patient_address(address, "patient.mssante.fr")
    assert caught.value.code == code
