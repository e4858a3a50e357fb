"""E4: duplicates by uniqueId and content; a conflict is shown to the operator, never dropped.
E1/E6: the format allow-list applies to the entries of an archive too."""

from __future__ import annotations

import io
import json
import zipfile

from caducee.jobs.quarantine import item_content, quarantine_items
from caducee.records.filing import UID_CONFLICT
from caducee.records.models import DocumentState
from tests.harness.reports import (
    N1_UID,
    Record,
    XdmDocument,
    make_xdm,
    n1_xdm,
    pdf_part,
    xdm_part,
)


def _other_content(cda: bytes) -> bytes:
    """The same CDA (same id) with another content: a corrected report under the same id."""
    changed = cda.replace(b"</ClinicalDocument>", b"<!-- corrige -->\n</ClinicalDocument>")
    assert changed != cda
    return changed


def test_e4_same_uid_and_same_content_is_a_duplicate(record: Record, n1_cda: bytes) -> None:
    first = record.mail([xdm_part(n1_xdm(n1_cda))])
    again = record.mail([xdm_part(n1_xdm(n1_cda))], subject="Encore")
    [original] = record.documents(first)
    [copy] = record.documents(again)
    assert (copy.state, copy.duplicate_of_id) == (DocumentState.DUPLICATE, original.id)
    with record.database.transaction() as session:
        assert [i for i in quarantine_items(session) if i.kind == "conflict"] == []


def test_e4_other_content_under_a_known_uid_is_a_conflict_for_the_operator(
    record: Record, n1_cda: bytes
) -> None:
    first = record.mail([xdm_part(n1_xdm(n1_cda))])
    other = _other_content(n1_cda)
    second = record.mail([xdm_part(n1_xdm(other))], subject="Correction")
    [original] = record.documents(first)
    [conflict] = record.documents(second)
    assert conflict.document_uid == original.document_uid == N1_UID
    assert conflict.state == DocumentState.CONFLICT, "never silently marked duplicate"
    assert conflict.duplicate_of_id == original.id
    assert UID_CONFLICT in json.loads(conflict.problems or "[]")
    assert conflict.filed_at is None and conflict.dedupe_key is None
    assert record.blob(conflict.content_blob_id) == other, "the content is kept"
    assert original.state == DocumentState.FILED, "the filed version stays as it was"

    with record.database.transaction() as session:
        [item] = [i for i in quarantine_items(session) if i.kind == "conflict"]
        assert item.id == f"document:{conflict.public_id}"
        assert item.related == f"document:{original.public_id}"
        assert (item.rule, item.size, item.account) == ("E4.conflict", len(other), record.address)
        assert item_content(session, record.blobs, item.id) == other


def test_e4_same_content_under_another_uid_is_still_a_duplicate(
    record: Record, n1_cda: bytes
) -> None:
    record.mail([xdm_part(n1_xdm(n1_cda))])
    record.mail([xdm_part(n1_xdm(n1_cda, unique_id="1.2.250.1.999.13.6.1"))], subject="Bis")
    states = [d.state for d in record.documents()]
    assert states == [DocumentState.FILED, DocumentState.DUPLICATE]


def _nested_zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (8 * 1024 * 1024))
    return buffer.getvalue()


def test_e1_e6_archive_entries_outside_the_allow_list_are_not_filed(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    html = b"<html><body><script>alert(1)</script>Compte rendu</body></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    entries = [
        XdmDocument(content=n1_cda, unique_id=N1_UID),
        XdmDocument(
            content=n1_pdf,
            unique_id="1.2.250.1.999.13.6.2",
            mime_type="application/pdf",
            name="CR.PDF",
        ),
        XdmDocument(
            content=html, unique_id="1.2.250.1.999.13.6.3", mime_type="text/html", name="CR.HTM"
        ),
        XdmDocument(
            content=svg,
            unique_id="1.2.250.1.999.13.6.4",
            mime_type="image/svg+xml",
            name="IMG.SVG",
        ),
        XdmDocument(
            content=_nested_zip_bomb(),
            unique_id="1.2.250.1.999.13.6.5",
            mime_type="application/zip",
            name="INNER.ZIP",
        ),
        XdmDocument(
            content=html,
            unique_id="1.2.250.1.999.13.6.6",
            mime_type="application/pdf",
            name="FAUX.PDF",
        ),
    ]
    message_id = record.mail([xdm_part(make_xdm(entries))])
    documents = record.documents(message_id)
    assert sorted(d.mime_type for d in documents) == ["application/pdf", "text/xml"]
    assert {d.state for d in documents} == {DocumentState.FILED}
    [attachment] = record.attachments(message_id)
    assert attachment.outcome == "read" and attachment.document_count == 2
    assert "UNSUPPORTED_FORMAT" in json.loads(attachment.problems or "[]")


def test_e1_archive_of_only_refused_formats_is_not_filed(record: Record) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    xdm = make_xdm(
        [XdmDocument(content=svg, unique_id="1.2.250.1.999.13.6.7", mime_type="image/svg+xml")]
    )
    message_id = record.mail([xdm_part(xdm), pdf_part(b"%PDF-1.4\n%%EOF\n")])
    assert [d.mime_type for d in record.documents(message_id)] == ["application/pdf"]
    zipped, _ = record.attachments(message_id)
    assert (zipped.outcome, zipped.reason) == ("not-filed", "UNSUPPORTED_FORMAT")
