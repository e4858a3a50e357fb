"""Values the readers return: documents, their metadata, and the problems met on the way.

Every reader in :mod:`caducee.records.readers` produces a :class:`ReadResult`. The types here
are frozen and carry no behaviour beyond small derived properties, so that callers (filing,
identity checks, MDN errors, the FHIR API) can rely on them without knowing the formats.

Problems never quote document content: their ``message`` is a fixed sentence about the
format and ``where`` is at most a location inside the attachment (an archive entry name, an
HL7 segment number). Entry names come from the sender, so treat ``where`` like the rest of
the message metadata. The ``repr`` of a value hides content, identity traits and names, so
that an accidental log line carries no health data (spec J2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

MiB = 1024 * 1024

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
"""Assigning authorities of an INS (A2): production NIR and NIA, test and demo NIR."""

IDNATPS_OID = "1.2.250.1.71.4.2.1"
"""National identifier of a health professional (``8`` + RPPS, ``0`` + ADELI...)."""
IDNATSTRUCT_OID = "1.2.250.1.71.4.2.2"
"""National identifier of a health structure (``1`` + FINESS, ``3`` + SIRET...)."""


class ProblemCode(StrEnum):
    """What went wrong while reading an attachment; stable names that callers branch on."""

    UNSAFE_PATH = "UNSAFE_PATH"
    TOO_MANY_ENTRIES = "TOO_MANY_ENTRIES"
    TOO_LARGE = "TOO_LARGE"
    COMPRESSION_RATIO = "COMPRESSION_RATIO"
    BAD_ARCHIVE = "BAD_ARCHIVE"
    DUPLICATE_ENTRY = "DUPLICATE_ENTRY"
    MISSING_ENTRY = "MISSING_ENTRY"
    HASH_MISMATCH = "HASH_MISMATCH"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    NOT_WELL_FORMED = "NOT_WELL_FORMED"
    FORBIDDEN_DTD = "FORBIDDEN_DTD"
    MISSING_FIELD = "MISSING_FIELD"
    BAD_VALUE = "BAD_VALUE"
    BAD_BASE64 = "BAD_BASE64"
    METADATA_MISMATCH = "METADATA_MISMATCH"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    NO_DOCUMENT = "NO_DOCUMENT"
    SEVERAL_PATIENTS = "SEVERAL_PATIENTS"
    NO_INS = "NO_INS"
    INS_INCOMPLETE = "INS_INCOMPLETE"
    INS_INVALID = "INS_INVALID"
    AMBIGUOUS_VISIBILITY = "AMBIGUOUS_VISIBILITY"
    """A visibility flag whose value could not be read: the document is hidden (fail safe)."""
    WITHDRAWAL_WITHOUT_ID = "WITHDRAWAL_WITHOUT_ID"
    """A deletion request that names no document (no CDA id, no TXA-12)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One typed finding about an attachment; ``message`` never holds health content."""

    code: ProblemCode
    message: str
    where: str | None = None


class SourceFormat(StrEnum):
    """The format an attachment was read as."""

    XDM = "xdm"
    CDA = "cda"
    HL7V2 = "hl7v2"
    HPRIM_MEDECIN = "hprim-medecin"
    HPRIM_SANTE = "hprim-sante"
    PDF = "pdf"
    JPEG = "jpeg"
    PNG = "png"
    TIFF = "tiff"
    RTF = "rtf"
    TEXT = "text"
    UNKNOWN = "unknown"


class VisibilityFlag(StrEnum):
    """French visibility codes an author may set on a document (TRE_A07, spec E5)."""

    MASQUE_PS = "MASQUE_PS"
    INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
    INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"


VISIBILITY_ALIASES: dict[str, VisibilityFlag] = {
    "MASQUE_PS": VisibilityFlag.MASQUE_PS,
    "MASQUE_AUX_PS": VisibilityFlag.MASQUE_PS,
    "INVISIBLE_PATIENT": VisibilityFlag.INVISIBLE_PATIENT,
    "INVISIBLE_REP_LEGAUX": VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
    "INVISIBLE_REPRESENTANTS_LEGAUX": VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
    "INVISIBLE_REP_LEGAUX_PATIENT": VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
}
"""Every spelling of the visibility codes the MSSanté/DMP profiles have used (E5): the
TRE_A07 codes of the XDS metadata and CDA header, the short ``INVISIBLE_REP_LEGAUX`` of the
MetaDMPMSS table, and the variants met in earlier CI-SIS examples."""


def visibility_flag(code: str | None) -> VisibilityFlag | None:
    """The visibility flag ``code`` names, in any case and spacing, or ``None``."""
    if not code:
        return None
    key = "_".join(code.strip().upper().replace("-", "_").split())
    return VISIBILITY_ALIASES.get(key)


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """The patient a document names: the INS and the identity traits that qualify it (A2).

    ``family_name`` is the name as written when the source does not say it is the birth
    name (HPRIM headers), or the name in use when the CDA gives one.
    """

    ins: str | None = field(default=None, repr=False)
    ins_oid: str | None = None
    birth_family_name: str | None = field(default=None, repr=False)
    given_name: str | None = field(default=None, repr=False)
    birth_date: date | None = field(default=None, repr=False)
    sex: str | None = field(default=None, repr=False)
    birthplace_code: str | None = field(default=None, repr=False)
    family_name: str | None = field(default=None, repr=False)

    def missing_traits(self) -> tuple[str, ...]:
        """Names of the traits a qualified INS needs and this identity lacks (E3, 905)."""
        wanted = {
            "ins": self.ins,
            "ins_oid": self.ins_oid,
            "birth_family_name": self.birth_family_name,
            "given_name": self.given_name,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "birthplace_code": self.birthplace_code,
        }
        return tuple(name for name, value in wanted.items() if value in (None, ""))


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote the document: professional national id and name, and their organisation."""

    national_id: str | None = None
    family: str | None = field(default=None, repr=False)
    given: str | None = field(default=None, repr=False)
    organisation_id: str | None = None
    organisation_name: str | None = field(default=None, repr=False)

    @property
    def rpps(self) -> str | None:
        """The RPPS number, only when the national id is ``8`` followed by 11 digits (§4.1)."""
        nid = self.national_id
        if nid is not None and len(nid) == 12 and nid.startswith("8") and nid.isdigit():
            return nid[1:]
        return None


@dataclass(frozen=True, slots=True)
class DocumentMetadata:
    """What the XDS metadata and the CDA header say about one document (E2).

    Identifiers (``document_id``, ``set_id``, ``replaces``) are written ``root`` or
    ``root^extension``, the XDS uniqueId convention. ``effective_time`` is an aware
    datetime, or a date when the source gives no time of day. ``hash_sha1`` and ``size``
    are the values declared by the XDS metadata (already checked against the bytes).
    """

    document_id: str | None = None
    set_id: str | None = None
    version: int | None = None
    replaces: str | None = None
    type_code: str | None = None
    type_code_system: str | None = None
    type_display: str | None = None
    class_code: str | None = None
    format_code: str | None = None
    title: str | None = field(default=None, repr=False)
    effective_time: datetime | date | None = None
    confidentiality: str | None = None
    language: str | None = None
    mime_type: str | None = None
    patient: PatientIdentity | None = None
    author: Author | None = None
    visibility: tuple[VisibilityFlag, ...] = ()
    hash_sha1: str | None = None
    size: int | None = None
    xds_entry_id: str | None = None
    envelope_patients: tuple[PatientIdentity, ...] = ()
    """Patients named around the document by its envelope (the PID of an HL7 v2 message)
    when they name one with an INS: E3 quarantines the document unless they agree (904)."""


@dataclass(frozen=True, slots=True)
class Document:
    """One document found in an attachment, with the bytes to file.

    ``content`` is the document as received (the CDA XML, the PDF, the HPRIM text).
    ``rendition`` is the human-readable body a CDA level 1 carries (usually a PDF), decoded.
    """

    content: bytes = field(repr=False)
    file_name: str
    mime_type: str
    metadata: DocumentMetadata = field(default_factory=DocumentMetadata)
    rendition: bytes | None = field(default=None, repr=False)
    rendition_mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class WithdrawalRequest:
    """A request to withdraw a document sent earlier (E4): an HL7 v2 deletion (``OBX-11 = D``
    on the OBX carrying the CDA, ``ORC-1 = CA``, ``MDM^T04``), never a document to file.

    ``metadata`` names the document to withdraw (``document_id``, ``set_id``), its patient
    and its author, from the CDA the request carries, else from the message (TXA, PID).
    """

    where: str
    metadata: DocumentMetadata = field(default_factory=DocumentMetadata)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a reader found: documents that passed the safety checks, and the problems met.

    ``withdrawals`` are deletion requests (HL7 v2): they name documents, they are none.
    """

    documents: tuple[Document, ...]
    problems: tuple[Problem, ...]
    format: SourceFormat
    withdrawals: tuple[WithdrawalRequest, ...] = ()

    @classmethod
    def refused(cls, source_format: SourceFormat, *problems: Problem) -> ReadResult:
        """A result with no document, only the reasons why."""
        return cls(documents=(), problems=tuple(problems), format=source_format)


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Bounds on untrusted input (spec E6); readers refuse anything beyond them.

    ``max_ratio`` is the largest decompressed/compressed size ratio of one archive entry;
    it is enforced once an entry has produced more than ``ratio_grace_bytes`` (small,
    very regular files legitimately compress well).
    """

    max_input_bytes: int = 100 * MiB
    max_entries: int = 1000
    max_total_bytes: int = 100 * MiB
    max_ratio: int = 100
    ratio_grace_bytes: int = 1 * MiB
    max_xml_bytes: int = 50 * MiB
    max_documents: int = 200

    def __post_init__(self) -> None:
        for name in (
            "max_input_bytes",
            "max_entries",
            "max_total_bytes",
            "max_ratio",
            "max_xml_bytes",
            "max_documents",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ReaderLimits.{name} must be positive")
        if self.ratio_grace_bytes < 0:
            raise ValueError("ReaderLimits.ratio_grace_bytes must not be negative")


DEFAULT_LIMITS = ReaderLimits()
