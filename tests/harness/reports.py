"""Mailed reports built around the real samples, and a patient's record driven in-process.

Mail is delivered through ``caducee.mailboxes.delivery`` and the filing job is run on the
claimed job (:class:`Record`). The real files under ``tests/samples`` are used as they
are, except where a test needs a variant (another INS, no INS, a version 1 of a
replacement): the change is then a plain text substitution on the sample, named in the
builder. ``IHE_XDM.zip`` archives are built
here with a ``METADATA.XML`` that follows document-formats.md §3.3.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from sqlalchemy import select

from caducee.config.settings import GatewaySettings, RecordsSettings, Settings
from caducee.jobs.filing import make_filing_handler
from caducee.mailboxes.delivery import (
    FILE_DOCUMENTS_JOB,
    Envelope,
    MailDelivery,
    Recipient,
    RecipientRole,
)
from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.records.models import RecordAttachment, RecordDocument
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, JobRow
from tests.harness.identities import DEMO_INS, OTHER_INS, TEST_OID, add_patient, valid_ins
from tests.harness.paths import SAMPLES

CDA_DIR = SAMPLES / "ansforge-TestContenuCDA-3-0" / "ExemplesCDA"
N1_SAMPLE = CDA_DIR / "DOC_NON_STRUCTURE_CDA-R2-N1.xml"
IMG_SAMPLE = CDA_DIR / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"
ORU_SAMPLE = SAMPLES / "ansforge-hl7V2-exemples/ORU_Transmission_initiale/"
ORU_SAMPLE = ORU_SAMPLE / "message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
MDM_SAMPLE = SAMPLES / "ansforge-hl7V2-exemples/MDM_Transmission_initiale"
MDM_SAMPLE = MDM_SAMPLE / "message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7"
HPRIM_SAMPLE = SAMPLES / "yokoinc-hprimtool/test-fixtures/header-solabio.hpm"
DIRECT_XDM_SAMPLES = (
    SAMPLES / "DirectProject-nhin-d/samplexdm-xd-common.zip",
    SAMPLES / "DirectProject-nhin-d/samplexdm-xdmail.zip",
)

SENDER = "labo@labo.mssante.fr"
PATIENT_ADDRESS = f"{DEMO_INS}@patient.mssante.fr"
N1_UID = "1.3.6.1.4.1.19376.1.2.20.12345.1.1"
N1_AUTHOR = "801234534765"
IMG_V2_UID = "1.2.250.1.213.1.1.1.45.2024.2.1"
IMG_V1_UID = "90E1C8EC-F951-4B26-A305-A34848818DD6"


MAIL_DATE = datetime(2024, 1, 4, 15, 5, 27, tzinfo=UTC)


def with_ins(cda: bytes, ins: str | None, oid: str = TEST_OID) -> bytes:
    """The sample with another INS (``None``: the INS id removed; 903)."""
    original = f'<id extension="{DEMO_INS}" root="{TEST_OID}"/>'.encode()
    assert original in cda
    if ins is None:
        return cda.replace(original, b"")
    return cda.replace(original, f'<id extension="{ins}" root="{oid}"/>'.encode())


def without_birthplace(cda: bytes) -> bytes:
    """The sample without the birthplace trait (INS incomplete; 905)."""
    changed = re.sub(rb"<birthplace>.*?</birthplace>", b"", cda, count=1, flags=re.S)
    assert changed != cda
    return changed


def img_v1(img_v2: bytes) -> bytes:
    """Version 1 of the imaging report: the id its RPLC names, version 1, no RPLC."""
    v1 = img_v2.replace(
        f'<id root="{IMG_V2_UID}"/>'.encode(), f'<id root="{IMG_V1_UID}"/>'.encode()
    )
    v1 = v1.replace(b'<versionNumber value="2"/>', b'<versionNumber value="1"/>')
    v1 = re.sub(rb"<relatedDocument typeCode=\"RPLC\">.*?</relatedDocument>", b"", v1, flags=re.S)
    assert v1 != img_v2 and b"RPLC" not in v1
    return v1


# ---------------------------------------------------------------------------------------------
# IHE_XDM.zip with METADATA.XML (document-formats.md §3.3)

SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SCHEMES = {
    "de_author": "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
    "class": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "confidentiality": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "format": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "facility": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practice": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "type": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "de_patient": "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",
    "de_unique": "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
    "ss_author": "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d",
    "ss_content": "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500",
    "ss_patient": "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446",
    "ss_source": "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832",
    "ss_unique": "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8",
}
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
AUTHOR_XCN = "801234534765^LABORATOIRE^Jean^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS"
AUTHOR_XON = "Laboratoire test^^^^^&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^1120459876"


@dataclass(frozen=True)
class XdmDocument:
    """One document of a synthetic submission set, with the XDS values of its entry."""

    content: bytes
    unique_id: str
    type_code: str = "11502-2"
    type_display: str = "CR d'examens biologiques"
    ins: str = DEMO_INS
    mime_type: str = "text/xml"
    visibility: Sequence[str] = ()
    name: str = ""


def _slot(name: str, *values: str) -> str:
    inner = "".join(f"<rim:Value>{value}</rim:Value>" for value in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{inner}</rim:ValueList></rim:Slot>'


def _name(text: str) -> str:
    return f"<rim:Name><rim:LocalizedString value={quoteattr(text)}/></rim:Name>"


def _classification(
    scheme: str, target: str, code: str, system: str = "", display: str = "", *slots: str
) -> str:
    coding = _slot("codingScheme", system) if system else ""
    return (
        f'<rim:Classification id="cl-{target}-{scheme[-6:]}-{code}" '
        f'classificationScheme="{SCHEMES[scheme]}" classifiedObject="{target}" '
        f'nodeRepresentation="{code}">{"".join(slots)}{coding}'
        f"{_name(display) if display else ''}</rim:Classification>"
    )


def _external(scheme: str, target: str, value: str, label: str) -> str:
    return (
        f'<rim:ExternalIdentifier id="ei-{target}-{scheme}" registryObject="{target}" '
        f'identificationScheme="{SCHEMES[scheme]}" value="{value}">{_name(label)}'
        "</rim:ExternalIdentifier>"
    )


def metadata_xml(documents: Sequence[XdmDocument]) -> bytes:
    """A SubmitObjectsRequest with one SubmissionSet and one DocumentEntry per document."""
    author_slots = (
        _slot(
            "authorPerson",
            "801234534765^LABORATOIRE^Jean^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS",
        ),
        _slot(
            "authorInstitution",
            "Laboratoire test^^^^^&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^1120459876",
        ),
    )
    patient_cx = f"{documents[0].ins}^^^&amp;{TEST_OID}&amp;ISO^NH"
    parts = [
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
        'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>',
        '<rim:RegistryPackage id="SS01">',
        _slot("submissionTime", "20240104150527"),
        _name("Envoi de compte rendu"),
        _classification("ss_author", "SS01", "", "", "", *author_slots),
        _classification("ss_content", "SS01", "04", "1.2.250.1.213.1.1.4.2.2", "Hospitalisation"),
        _external("ss_unique", "SS01", "1.2.250.1.999.77.1", "XDSSubmissionSet.uniqueId"),
        _external("ss_source", "SS01", "1.2.250.1.999.77", "XDSSubmissionSet.sourceId"),
        _external("ss_patient", "SS01", patient_cx, "XDSSubmissionSet.patientId"),
        "</rim:RegistryPackage>",
        '<rim:Classification id="ss-node" classifiedObject="SS01" '
        f'classificationNode="{SS_NODE}"/>',
    ]
    for number, document in enumerate(documents, start=1):
        entry = f"DE{number:02d}"
        cx = f"{document.ins}^^^&amp;{TEST_OID}&amp;ISO^NH"
        digest = hashlib.sha1(document.content, usedforsecurity=False).hexdigest()
        parts += [
            f'<rim:ExtrinsicObject id="{entry}" mimeType="{document.mime_type}" '
            f'objectType="{STABLE}" status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved">',
            _slot("creationTime", "20210401124745"),
            _slot("hash", digest),
            _slot("size", str(len(document.content))),
            _slot("URI", document.name or f"DOC{number:04d}.XML"),
            _slot("languageCode", "fr-FR"),
            _slot("serviceStartTime", "20210401080000"),
            _slot("serviceStopTime", "20210401120000"),
            _slot("sourcePatientId", cx),
            _slot(
                "sourcePatientInfo",
                "PID-5|PAT-TROIS^DOMINIQUE^^^^^L",
                "PID-7|19790328",
                "PID-8|F",
                "PID-11|^^^^^^BDL^^51215",
            ),
            _slot(
                "legalAuthenticator",
                "801234534765^LABORATOIRE^Jean^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS",
            ),
            _name("Compte rendu"),
            _classification("de_author", entry, "", "", "", *author_slots),
            _classification("class", entry, "10", "1.2.250.1.213.1.1.4.1", "Compte-rendu"),
            _classification(
                "type", entry, document.type_code, "2.16.840.1.113883.6.1", document.type_display
            ),
            _classification(
                "format", entry, "urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "PDF"
            ),
            _classification("confidentiality", entry, "N", "2.16.840.1.113883.5.25", "Normal"),
            *(
                _classification("confidentiality", entry, flag, "1.2.250.1.213.1.1.4.13", flag)
                for flag in document.visibility
            ),
            _classification("facility", entry, "SA07", "1.2.250.1.71.4.2.4", "Cabinet"),
            _classification("practice", entry, "AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambu"),
            _external("de_patient", entry, cx, "XDSDocumentEntry.patientId"),
            _external("de_unique", entry, document.unique_id, "XDSDocumentEntry.uniqueId"),
            "</rim:ExtrinsicObject>",
            f'<rim:Association id="as-{entry}" sourceObject="SS01" targetObject="{entry}" '
            'associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember">',
            _slot("SubmissionSetStatus", "Original"),
            "</rim:Association>",
        ]
    parts.append("</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")
    return "".join(parts).encode("utf-8")


def make_xdm(documents: Sequence[XdmDocument]) -> bytes:
    """``IHE_XDM.zip``: README.TXT, INDEX.HTM, ``IHE_XDM/SUBSET01/`` metadata and documents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.TXT", "Laboratoire test - logiciel de test 1.0\r\n")
        archive.writestr("INDEX.HTM", "<html><body><a href='README.TXT'>README</a></body></html>")
        archive.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata_xml(documents))
        for number, document in enumerate(documents, start=1):
            name = document.name or f"DOC{number:04d}.XML"
            archive.writestr(f"IHE_XDM/SUBSET01/{name}", document.content)
    return buffer.getvalue()


def n1_xdm(cda: bytes, **values: Any) -> bytes:
    """An ``IHE_XDM.zip`` around (a variant of) the N1 sample."""
    values.setdefault("unique_id", N1_UID)
    return make_xdm([XdmDocument(content=cda, **values)])


# ---------------------------------------------------------------------------------------------
# Mail


@dataclass(frozen=True)
class Part:
    """An attachment of a built message."""

    file_name: str
    data: bytes
    content_type: str = "application/octet-stream"


def build_mail(
    parts: Sequence[Part],
    *,
    subject: str = "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979",
    sender: str = SENDER,
    to: str = PATIENT_ADDRESS,
    receipt: bool = False,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    """An MSSanté-style mail (document-formats.md §1.4) with the given attachments."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(MAIL_DATE)
    message["Message-ID"] = message_id or make_msgid(domain="labo.mssante.fr")
    message["Subject"] = subject
    if receipt:
        message["Disposition-Notification-To"] = sender
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content("Bonjour,\nVeuillez trouver ci-joint le compte rendu.\n")
    for part in parts:
        maintype, _, subtype = part.content_type.partition("/")
        message.add_attachment(
            part.data, maintype=maintype, subtype=subtype, filename=part.file_name
        )
    return message.as_bytes(policy=policy.SMTP)


def xdm_part(data: bytes) -> Part:
    return Part("IHE_XDM.zip", data, "application/zip")


def pdf_part(data: bytes, name: str = "20210401_CR_biologie.pdf") -> Part:
    return Part(name, data, "application/pdf")


# ---------------------------------------------------------------------------------------------
# The world of one test: database, blobs, queue, settings, a patient, delivery and the job


@dataclass
class Record:
    """A patient mailbox on a migrated database, and the machinery to mail and file."""

    database: Database
    blobs: BlobStore
    queue: JobQueue
    settings: Settings
    account_id: int = 0
    address: str = PATIENT_ADDRESS
    password: str = ""
    delivered: list[int] = field(default_factory=list)

    def deliver(
        self, content: bytes, *, recipients: Sequence[tuple[int, str]] | None = None
    ) -> int:
        """Deliver ``content`` to the patient(s) as the SMTP stage would, and commit."""
        message = message_from_bytes(content, policy=policy.default)
        targets = recipients or [(self.account_id, self.address)]
        with self.database.transaction() as session:
            delivered = MailDelivery(self.blobs, self.queue).deliver(
                session,
                Envelope(
                    content=content,
                    direction="inbound",
                    envelope_from=SENDER,
                    header_from=SENDER,
                    message_id=str(message["Message-ID"]),
                    thread_ids=(),
                    reply_to=None,
                    ends_exchange=False,
                    sender_is_professional=True,
                    has_attachments=True,
                    recipients=tuple(
                        Recipient(address, number, RecipientRole.PATIENT)
                        for number, address in targets
                    ),
                ),
            )
        self.delivered.append(delivered.message_id)
        return delivered.message_id

    def file(self, settings: Settings | None = None) -> int:
        """Claim every ``file-documents`` job and run the real handler on it."""
        handler = make_filing_handler(
            self.database, self.blobs, self.queue, settings or self.settings, follow_up=False
        )
        ran = 0
        while jobs := self.queue.claim("test-worker", limit=10, kinds=[FILE_DOCUMENTS_JOB]):
            for job in jobs:
                handler(job)
                ran += 1
        return ran

    def mail(self, parts: Sequence[Part], **options: Any) -> int:
        """Deliver a built message and file it; return the message row id."""
        message_id = self.deliver(build_mail(parts, **options))
        self.file()
        return message_id

    # -- what the record holds ---------------------------------------------------------------

    def documents(self, message_id: int | None = None) -> list[RecordDocument]:
        with self.database.transaction() as session:
            query = select(RecordDocument).order_by(RecordDocument.id)
            if message_id is not None:
                query = query.where(RecordDocument.message_id == message_id)
            return list(session.scalars(query))

    def attachments(self, message_id: int) -> list[RecordAttachment]:
        with self.database.transaction() as session:
            return list(
                session.scalars(
                    select(RecordAttachment)
                    .where(RecordAttachment.message_id == message_id)
                    .order_by(RecordAttachment.position)
                )
            )

    def blob(self, blob_id: str | None) -> bytes:
        assert blob_id is not None
        with self.database.transaction() as session:
            return self.blobs.read(session, blob_id)

    def relayed(self) -> list[tuple[dict[str, Any], EmailMessage]]:
        """The messages queued for relay (receipts), parsed back with ``email``."""
        with self.database.transaction() as session:
            rows = list(
                session.scalars(select(JobRow).where(JobRow.kind == RELAY_JOB).order_by(JobRow.id))
            )
            found = []
            for row in rows:
                raw = self.blobs.read(session, row.payload["blob_id"])
                parsed = message_from_bytes(raw, policy=policy.default)
                assert isinstance(parsed, EmailMessage)
                found.append((row.payload, parsed))
        return found

    def mss_problems(self, message_id: int) -> list[str] | None:
        from caducee.mailboxes.models import StoredMessage

        with self.database.transaction() as session:
            row = session.get(StoredMessage, message_id)
            assert row is not None
            return None if row.mss_problems is None else list(json.loads(row.mss_problems))


def make_settings(tmp_path: Path, **records: Any) -> Settings:
    return Settings(
        home=tmp_path,
        gateway=GatewaySettings(test_mode=True, hostname="mx.caducee.test"),
        records=RecordsSettings(**records),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hl7_record_patient(database: Database) -> tuple[int, str, str]:
    """The ANS HL7 v2 samples give the demo patient another birthplace (63220)."""
    return add_patient(database, birthplace="63220")


__all__ = ["DEMO_INS", "OTHER_INS", "TEST_OID", "add_patient", "valid_ins"]
