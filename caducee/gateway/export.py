"""Export of a patient space (I3): one zip, written as a stream.

Layout of the archive::

    manifest.json                 what is inside, with SHA-256 of every file (written last)
    mail/<folder>.mbox            every folder, mboxrd (``From `` lines quoted), LF line ends
    documents/<id>-<name>         each document of the record, as filed (original bytes)
    fhir/bundle.json              FHIR R4 Bundle (collection): DocumentReference + Binary

Memory stays bounded whatever the size of the space: the zip members are written through
``ZipFile.open(..., "w")`` (ZIP64 when needed) one message or document at a time, and the
Bundle's JSON is written entry by entry. Only one message or document is in memory at once.
``progress(done, total)`` is called after each item (the CLI prints it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caducee import __version__
from caducee.gateway.http.fhir_api import document_reference
from caducee.jobs.mail import record_owner
from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from caducee.records.models import RecordDocument
from caducee.records.service import Viewer, replaced_versions, visible
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database, utcnow

Progress = Callable[[int, int], None]
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
EXTENSIONS = {
    "application/pdf": ".pdf",
    "text/xml": ".xml",
    "application/xml": ".xml",
    "application/hl7-v2": ".hl7",
    "text/plain": ".txt",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/tiff": ".tiff",
    "text/rtf": ".rtf",
    "application/msword": ".doc",
}


class ExportError(LookupError):
    """No such account."""


@dataclass(frozen=True)
class ExportSummary:
    """What the archive holds."""

    messages: int
    documents: int
    folders: dict[str, int]


class _Hashing:
    """A writable member that also hashes what passes through it."""

    def __init__(self, member: IO[bytes]) -> None:
        self.member = member
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.member.write(data)
        self.digest.update(data)
        self.size += len(data)


def mbox_entry(envelope_from: str, received: Any, raw: bytes) -> bytes:
    """One mboxrd entry: the ``From`` line, the message with LF ends and quoted ``From ``."""
    stamp = received.astimezone(UTC).strftime("%a %b %d %H:%M:%S %Y")
    body = raw.replace(b"\r\n", b"\n")
    body = _FROM_LINE.sub(rb">\1", body)
    if not body.endswith(b"\n"):
        body += b"\n"
    return f"From {envelope_from or 'MAILER-DAEMON'} {stamp}\n".encode() + body + b"\n"


def document_file_name(document: RecordDocument) -> str:
    """``documents/<public id>-<safe original name>``."""
    name = (document.entry_name or "").rsplit("/", 1)[-1]
    name = _SAFE.sub("_", name).strip("._")[:100]
    if not name:
        name = "document" + EXTENSIONS.get(document.mime_type, ".bin")
    return f"documents/{document.public_id}-{name}"


def _ids(session: Session, account_id: int) -> tuple[list[tuple[int, str]], list[int]]:
    folders = [
        (int(row.id), str(row.name))
        for row in session.execute(
            select(Folder.id, Folder.name)
            .where(Folder.account_id == account_id)
            .order_by(Folder.id)
        )
    ]
    documents = list(
        session.scalars(
            select(RecordDocument.id)
            .where(visible(account_id, Viewer.PATIENT))
            .order_by(RecordDocument.document_date, RecordDocument.id)
        )
    )
    return folders, documents


def _content(session: Session, blobs: BlobStore, document: RecordDocument) -> bytes:
    return blobs.read(session, document.content_blob_id) if document.content_blob_id else b""


def _entry_ids(session: Session, folder_id: int) -> Iterator[int]:
    yield from session.scalars(
        select(MailboxEntry.id)
        .where(MailboxEntry.folder_id == folder_id)
        .order_by(MailboxEntry.uid)
    )


def export_space(
    database: Database,
    blobs: BlobStore,
    account_id: int,
    out: IO[bytes],
    *,
    base_url: str,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write the zip of ``account_id`` to ``out`` (a seekable binary file)."""
    with database.reading() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise ExportError(account_id)
        address = account.address
        folders, document_ids = _ids(session, account_id)
        total = len(document_ids) + sum(
            int(
                session.scalar(
                    select(func.count())
                    .select_from(MailboxEntry)
                    .where(MailboxEntry.folder_id == folder_id)
                )
                or 0
            )
            for folder_id, _ in folders
        )
        owner = record_owner(session, account_id)
    done = 0
    files: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    documents: list[dict[str, Any]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for folder_id, folder_name in folders:
            path = f"mail/{_SAFE.sub('_', folder_name)}.mbox"
            count = 0
            with archive.open(path, "w", force_zip64=True) as member:
                writer = _Hashing(member)
                with database.reading() as session:
                    for entry_id in list(_entry_ids(session, folder_id)):
                        entry = session.get(MailboxEntry, entry_id)
                        if entry is None:
                            continue
                        message = session.get(StoredMessage, entry.message_id)
                        if message is None:
                            continue
                        raw = blobs.read(session, message.blob_id)
                        writer.write(mbox_entry(message.envelope_from, message.received_at, raw))
                        session.expunge_all()
                        count += 1
                        done += 1
                        if progress is not None:
                            progress(done, total)
            counts[folder_name] = count
            files.append({"path": path, "sha256": writer.digest.hexdigest(), "size": writer.size})
        for document_id in document_ids:  # the documents as filed, one at a time
            with database.reading() as session:
                document = session.get(RecordDocument, document_id)
                if document is None:
                    continue
                data = _content(session, blobs, document)
                name = document_file_name(document)
                meta = {
                    "id": document.public_id,
                    "path": name,
                    "title": document.title,
                    "mime_type": document.mime_type,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "date": document.document_date.isoformat(),
                    "status": document.status,
                    "type_code": document.type_code,
                }
            with archive.open(name, "w", force_zip64=True) as member:
                member.write(data)
            del data
            documents.append(meta)
            files.append({"path": name, "sha256": meta["sha256"], "size": meta["size"]})
            done += 1
            if progress is not None:
                progress(done, total)
        with archive.open("fhir/bundle.json", "w", force_zip64=True) as bundle_member:
            bundle = _Hashing(bundle_member)
            header = {
                "resourceType": "Bundle",
                "type": "collection",
                "timestamp": utcnow().isoformat(timespec="seconds"),
            }
            bundle.write(json.dumps(header, ensure_ascii=False)[:-1].encode() + b', "entry": [')
            first = True
            for meta in documents:  # then the Bundle, entry by entry
                with database.reading() as session:
                    document = session.scalar(
                        select(RecordDocument).where(RecordDocument.public_id == meta["id"])
                    )
                    if document is None:
                        continue
                    replaced = replaced_versions(session, [document]).get(document.id, ())
                    resource = document_reference(document, owner, base_url, replaced)
                    binary = {
                        "resourceType": "Binary",
                        "id": document.public_id,
                        "contentType": document.mime_type,
                        "data": base64.b64encode(_content(session, blobs, document)).decode(),
                    }
                for item in (
                    {"fullUrl": f"{base_url}DocumentReference/{meta['id']}", "resource": resource},
                    {"fullUrl": f"{base_url}Binary/{meta['id']}", "resource": binary},
                ):
                    bundle.write((b"" if first else b", ") + json.dumps(item).encode())
                    first = False
                del binary
            bundle.write(b"]}")
        files.append(
            {"path": "fhir/bundle.json", "sha256": bundle.digest.hexdigest(), "size": bundle.size}
        )
        manifest = {
            "format": "caducee-export/1",
            "generator": f"Caducée {__version__}",
            "generated_at": utcnow().isoformat(timespec="seconds"),
            "address": address,
            "patient": None if owner is None else {"ins": owner.ins, "ins_oid": owner.ins_oid},
            "folders": [
                {
                    "name": name,
                    "path": f"mail/{_SAFE.sub('_', name)}.mbox",
                    "messages": counts[name],
                }
                for _, name in folders
            ],
            "documents": documents,
            "fhir_bundle": "fhir/bundle.json",
            "files": files,
        }
        archive.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
    return ExportSummary(sum(counts.values()), len(documents), counts)


def export_to_file(
    database: Database,
    blobs: BlobStore,
    account_id: int,
    path: Path,
    *,
    base_url: str,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write the zip to ``path`` (mode 0600), through a temporary name."""
    temporary = path.with_name(path.name + ".part")
    temporary.touch(mode=0o600)
    try:
        with temporary.open("wb") as handle:
            summary = export_space(
                database, blobs, account_id, handle, base_url=base_url, progress=progress
            )
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return summary
