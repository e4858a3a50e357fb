"""Readers of mailed reports, and the dispatcher that picks one for an attachment.

Each reader is a pure function from bytes to a :class:`~caducee.records.model.ReadResult`.
:func:`read_attachment` chooses the reader from what the bytes are first (magic numbers and
the opening of text formats), and only then from the file name and declared content type,
because senders get names and types wrong. It never raises for bad input.
"""

from __future__ import annotations

from caducee.records.model import (
    DEFAULT_LIMITS,
    Problem,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
)
from caducee.records.readers.cda import read_cda
from caducee.records.readers.hl7v2 import read_hl7v2
from caducee.records.readers.hprim import looks_like_hprim, read_hprim
from caducee.records.readers.plain import read_plain, sniff_binary
from caducee.records.readers.xdm import read_xdm
from caducee.records.readers.xds_metadata import read_submission_metadata

__all__ = [
    "DEFAULT_LIMITS",
    "ReaderLimits",
    "read_attachment",
    "read_cda",
    "read_hl7v2",
    "read_hprim",
    "read_plain",
    "read_submission_metadata",
    "read_xdm",
]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
_HL7_TYPES = frozenset({"application/hl7-v2", "x-application/hl7-v2+er7", "application/edi-hl7"})
_HL7_EXTENSIONS = (".hl7", ".er7")
_HPRIM_EXTENSIONS = (".hpr", ".hpm", ".hprim")
_TEXT_PROLOG = b"\xef\xbb\xbf \t\r\n"
_HL7_OPENINGS = (b"MSH", b"FHS", b"BHS")
_XML_OPENINGS = (b"<", b"\xff\xfe<\x00", b"\xfe\xff\x00<")


def _main_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def read_attachment(
    file_name: str,
    content_type: str | None,
    data: bytes,
    *,
    limits: ReaderLimits = DEFAULT_LIMITS,
) -> ReadResult:
    """Read one attachment with the reader its content calls for."""
    if len(data) > limits.max_input_bytes:
        problem = Problem(ProblemCode.TOO_LARGE, "attachment exceeds the size limit", file_name)
        return ReadResult.refused(SourceFormat.UNKNOWN, problem)
    mime = _main_type(content_type)
    name = file_name.lower()
    if data.startswith(_ZIP_MAGIC):
        return read_xdm(data, file_name=file_name, limits=limits)
    if sniff_binary(data) is not None:
        return read_plain(data, file_name=file_name, content_type=content_type, limits=limits)
    opening = data[:4096].lstrip(_TEXT_PROLOG)
    if opening.startswith(_HL7_OPENINGS):
        return read_hl7v2(data, file_name=file_name, limits=limits)
    if opening.startswith(_XML_OPENINGS):
        return read_cda(data, file_name=file_name, limits=limits)
    if looks_like_hprim(data):
        return read_hprim(data, file_name=file_name, limits=limits)
    if name.endswith(".zip") or mime in _ZIP_TYPES:
        return read_xdm(data, file_name=file_name, limits=limits)
    if name.endswith(_HL7_EXTENSIONS) or mime in _HL7_TYPES:
        return read_hl7v2(data, file_name=file_name, limits=limits)
    if name.endswith(".xml") or mime.endswith("xml"):
        return read_cda(data, file_name=file_name, limits=limits)
    if name.endswith(_HPRIM_EXTENSIONS):
        return read_hprim(data, file_name=file_name, limits=limits)
    return read_plain(data, file_name=file_name, content_type=content_type, limits=limits)
