"""IHE XDM reader: the documents of an ``IHE_XDM.zip`` and their metadata (spec E1, E2, E6).

An XDM archive holds one folder per submission set (``IHE_XDM/SUBSET01/``…), each with a
``METADATA.XML`` that lists the documents of the folder. Producers in the wild differ in
form, so the reader is lenient about it: any case for names, Windows back-slashes, an extra
top folder, no ``IHE_XDM`` folder at all, missing README/INDEX, several submission sets, and
documents found by ``URI`` slot, by entry id, by hash or as the only candidate left.

The archive itself is untrusted, so the reader is strict about safety, and refuses the whole
archive for: an entry name that could escape a folder (``..``, absolute, drive letter,
symbolic link), duplicate names, more entries than allowed, a declared or actual size beyond
the total budget, a compression ratio beyond the limit. Nothing is extracted to disk; each
entry the reader needs is decompressed in memory, streamed with a cap that does not trust
the sizes written in the zip headers. A document whose bytes do not match the ``hash`` or
``size`` of its metadata is dropped, with a problem.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, fields, replace
from typing import Any

from caducee.records.model import (
    DEFAULT_LIMITS,
    Document,
    DocumentMetadata,
    Problem,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
)
from caducee.records.readers.cda import (
    CDA_MIME_TYPE,
    identity_problems,
    is_clinical_document,
    read_cda_root,
)
from caducee.records.readers.plain import filed_format
from caducee.records.readers.xds_metadata import XdsEntry, read_submission_metadata
from caducee.records.xmlsafe import parse_xml

METADATA_NAME = "metadata.xml"
_CHUNK = 64 * 1024
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SEARCH = 65535 + 22
_DRIVE_LETTER = re.compile(r"[A-Za-z]:")
_NOT_DOCUMENTS = (".xsl", ".xslt", ".css", ".htm", ".html")
_SYMLINK_MODE = 0o120000
_FILE_TYPE_MASK = 0o170000


class _Refused(Exception):
    """Internal: the archive as a whole is refused for this problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.code)
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# Entry names


def safe_entry_name(raw: str) -> str | None:
    """The entry name with ``/`` separators, or ``None`` if it could leave its folder."""
    name = raw.replace("\\", "/")
    if any(ord(char) < 0x20 for char in name) or name.startswith("/"):
        return None
    if _DRIVE_LETTER.match(name):
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." or ":" in part for part in parts):
        return None
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & _FILE_TYPE_MASK == _SYMLINK_MODE


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


def _base_name(path: str) -> str:
    return path.rpartition("/")[2]


def _stem(path: str) -> str:
    return _base_name(path).rpartition(".")[0] or _base_name(path)


# ---------------------------------------------------------------------------------------------
# The archive, checked and indexed


def _declared_entry_count(data: bytes) -> int | None:
    """The entry count of the end-of-central-directory record, read before ``zipfile``."""
    tail_start = max(0, len(data) - _EOCD_SEARCH)
    position = data.rfind(_EOCD_SIGNATURE, tail_start)
    if position < 0 or position + 22 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, position + 10)
    return None if count == 0xFFFF else int(count)


@dataclass
class _Archive:
    """The opened zip, its safe file names, and the decompression budget left."""

    zip_file: zipfile.ZipFile
    files: dict[str, zipfile.ZipInfo]
    by_folded_name: dict[str, str]
    archive_size: int
    limits: ReaderLimits
    bytes_read: int = 0

    def lookup(self, path: str) -> str | None:
        return self.by_folded_name.get(path.casefold())

    def read(self, path: str) -> bytes:
        """Decompress one entry, streamed with caps; raise ``_Refused`` beyond them."""
        info = self.files[path]
        if info.flag_bits & 0x1:
            raise _Refused(Problem(ProblemCode.BAD_ARCHIVE, "encrypted archive entry", path))
        budget = self.limits.max_total_bytes - self.bytes_read
        compressed = max(1, min(info.compress_size, self.archive_size))
        ratio_cap = max(self.limits.ratio_grace_bytes, compressed * self.limits.max_ratio)
        content = stream_entry(self.zip_file, info, budget=budget, ratio_cap=ratio_cap)
        if isinstance(content, Problem):
            raise _Refused(replace(content, where=path))
        self.bytes_read += len(content)
        return content


def stream_entry(
    zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, *, budget: int, ratio_cap: int
) -> bytes | Problem:
    """Decompress an entry chunk by chunk, stopping as soon as a cap is passed."""
    buffer = bytearray()
    try:
        with zip_file.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                buffer += chunk
                if len(buffer) > budget:
                    return Problem(ProblemCode.TOO_LARGE, "archive content exceeds the limit")
                if len(buffer) > ratio_cap:
                    return Problem(ProblemCode.COMPRESSION_RATIO, "entry compresses too well")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
        return Problem(ProblemCode.BAD_ARCHIVE, "archive entry is corrupt")
    except (NotImplementedError, RuntimeError):
        return Problem(ProblemCode.BAD_ARCHIVE, "archive entry uses an unsupported method")
    return bytes(buffer)


def _check_declared_sizes(infos: list[zipfile.ZipInfo], size: int, limits: ReaderLimits) -> None:
    total = 0
    for info in infos:
        total += info.file_size
        compressed = max(1, min(info.compress_size, size))
        if info.file_size > limits.ratio_grace_bytes and info.file_size > (
            compressed * limits.max_ratio
        ):
            problem = Problem(ProblemCode.COMPRESSION_RATIO, "entry compresses too well")
            raise _Refused(replace(problem, where=safe_entry_name(info.filename)))
    if total > limits.max_total_bytes:
        raise _Refused(Problem(ProblemCode.TOO_LARGE, "archive content exceeds the limit"))


def _open_archive(data: bytes, limits: ReaderLimits) -> _Archive:
    declared = _declared_entry_count(data)
    if declared is not None and declared > limits.max_entries:
        raise _Refused(Problem(ProblemCode.TOO_MANY_ENTRIES, "archive has too many entries"))
    try:
        zip_file = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        message = "archive is not a readable zip"
        raise _Refused(Problem(ProblemCode.BAD_ARCHIVE, message)) from error
    infos = zip_file.infolist()
    if len(infos) > limits.max_entries:
        raise _Refused(Problem(ProblemCode.TOO_MANY_ENTRIES, "archive has too many entries"))
    files: dict[str, zipfile.ZipInfo] = {}
    by_folded_name: dict[str, str] = {}
    for info in infos:
        name = safe_entry_name(info.filename)
        if name is None or _is_symlink(info):
            where = name or info.filename[:200]
            raise _Refused(Problem(ProblemCode.UNSAFE_PATH, "unsafe entry name", where))
        if info.filename.endswith(("/", "\\")):
            continue
        folded = name.casefold()
        if folded in by_folded_name:
            raise _Refused(Problem(ProblemCode.DUPLICATE_ENTRY, "duplicate entry name", name))
        files[name] = info
        by_folded_name[folded] = name
    _check_declared_sizes(list(files.values()), len(data), limits)
    return _Archive(zip_file, files, by_folded_name, len(data), limits)


# ---------------------------------------------------------------------------------------------
# Documents of one submission set


def _resolve_uri(archive: _Archive, folder: str, uri: str) -> str | None:
    relative = safe_entry_name(uri)
    if relative is None:
        return None
    inside = f"{folder}/{relative}" if folder else relative
    return archive.lookup(inside) or archive.lookup(relative)


def _candidates(archive: _Archive, folder: str, claimed: set[str]) -> list[str]:
    return [
        path
        for path in archive.files
        if _folder(path) == folder
        and _base_name(path).casefold() != METADATA_NAME
        and not _base_name(path).casefold().endswith(_NOT_DOCUMENTS)
        and path not in claimed
    ]


def _locate(
    archive: _Archive, folder: str, entry: XdsEntry, claimed: set[str]
) -> str | Problem | None:
    """The archive path of an entry's file: by URI, entry id, hash, or sole candidate."""
    if entry.uri:
        if safe_entry_name(entry.uri) is None:
            return Problem(ProblemCode.UNSAFE_PATH, "unsafe URI in metadata", folder or None)
        return _resolve_uri(archive, folder, entry.uri)
    candidates = _candidates(archive, folder, claimed)
    if entry.entry_id:
        by_id = [path for path in candidates if _stem(path).casefold() == entry.entry_id.casefold()]
        if len(by_id) == 1:
            return by_id[0]
    declared_hash = entry.metadata.hash_sha1
    if declared_hash and len(candidates) > 1:
        for path in candidates:
            if hashlib.sha1(archive.read(path), usedforsecurity=False).hexdigest() == declared_hash:
                return path
    return candidates[0] if len(candidates) == 1 else None


def _integrity_problem(content: bytes, metadata: DocumentMetadata, path: str) -> Problem | None:
    if metadata.size is not None and metadata.size != len(content):
        return Problem(ProblemCode.SIZE_MISMATCH, "document size differs from metadata", path)
    if metadata.hash_sha1 is not None:
        actual = hashlib.sha1(content, usedforsecurity=False).hexdigest()
        if actual != metadata.hash_sha1:
            return Problem(ProblemCode.HASH_MISMATCH, "document hash differs from metadata", path)
    return None


def merge_metadata(header: DocumentMetadata, xds: DocumentMetadata) -> DocumentMetadata:
    """The CDA header's values, completed by the XDS ones; integrity values from XDS."""
    merged: dict[str, Any] = {}
    for field in fields(DocumentMetadata):
        own, theirs = getattr(header, field.name), getattr(xds, field.name)
        merged[field.name] = own if own not in (None, ()) else theirs
    merged["visibility"] = tuple(dict.fromkeys(header.visibility + xds.visibility))
    merged["hash_sha1"] = xds.hash_sha1
    merged["size"] = xds.size
    merged["xds_entry_id"] = xds.xds_entry_id
    return replace(header, **merged)


def _mismatches(header: DocumentMetadata, xds: DocumentMetadata, path: str) -> list[Problem]:
    found = []
    if header.document_id and xds.document_id and header.document_id != xds.document_id:
        found.append("uniqueId differs from the CDA id")
    if header.type_code and xds.type_code and header.type_code != xds.type_code:
        found.append("typeCode differs from the CDA code")
    cda_ins = header.patient.ins if header.patient else None
    xds_ins = xds.patient.ins if xds.patient else None
    if cda_ins and xds_ins and cda_ins != xds_ins:
        found.append("patient INS differs from the CDA INS")
    return [Problem(ProblemCode.METADATA_MISMATCH, "XDS " + text, path) for text in found]


def _looks_like_xml(path: str, mime_type: str | None, content: bytes) -> bool:
    return (
        path.casefold().endswith(".xml")
        or (mime_type or "").endswith("xml")
        or content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
    )


def _document(
    path: str, content: bytes, entry: XdsEntry, limits: ReaderLimits
) -> tuple[Document | None, list[Problem]]:
    xds = entry.metadata
    if _looks_like_xml(path, xds.mime_type, content):
        root = parse_xml(content, max_bytes=limits.max_xml_bytes, where=path)
        if isinstance(root, Problem):
            return None, [root]
        if is_clinical_document(root):
            cda = read_cda_root(root, content, file_name=path)
            problems = list(cda.problems)
            document = cda.documents[0]
            problems += _mismatches(document.metadata, xds, path)
            metadata = merge_metadata(document.metadata, xds)
            mime_type = xds.mime_type or CDA_MIME_TYPE
            return replace(document, metadata=metadata, mime_type=mime_type), problems
    # E1 inside the archive too: only the formats the record takes, by what the bytes are
    # (a nested archive, HTML or SVG declared as anything is neither filed nor served).
    sniffed = filed_format(content, path, xds.mime_type)
    if sniffed is None:
        message = "archive entry format not filed"
        return None, [Problem(ProblemCode.UNSUPPORTED_FORMAT, message, path)]
    mime_type = sniffed[1]
    document = Document(content=content, file_name=path, mime_type=mime_type, metadata=xds)
    return document, identity_problems(xds.patient, path)


def _read_subset(archive: _Archive, metadata_path: str) -> tuple[list[Document], list[Problem]]:
    folder = _folder(metadata_path)
    limits = archive.limits
    submission = read_submission_metadata(
        archive.read(metadata_path), where=metadata_path, limits=limits
    )
    documents: list[Document] = []
    problems = list(submission.problems)
    claimed: set[str] = set()
    for entry in submission.entries[: limits.max_documents]:
        located = _locate(archive, folder, entry, claimed)
        if isinstance(located, Problem):
            problems.append(located)
            continue
        if located is None:
            where = folder or metadata_path
            problems.append(Problem(ProblemCode.MISSING_ENTRY, "document file not found", where))
            continue
        claimed.add(located)
        content = archive.read(located)
        integrity = _integrity_problem(content, entry.metadata, located)
        if integrity is not None:
            problems.append(integrity)
            continue
        document, found = _document(located, content, entry, limits)
        problems += found
        if document is not None:
            documents.append(document)
    if len(submission.entries) > limits.max_documents:
        message = "more documents than the limit; the rest were not read"
        problems.append(Problem(ProblemCode.TOO_MANY_ENTRIES, message, metadata_path))
    return documents, problems


def _metadata_paths(archive: _Archive) -> list[str]:
    return sorted(path for path in archive.files if _base_name(path).casefold() == METADATA_NAME)


def read_xdm(
    data: bytes, *, file_name: str = "IHE_XDM.zip", limits: ReaderLimits = DEFAULT_LIMITS
) -> ReadResult:
    """Read every submission set of an IHE XDM zip archive."""
    if len(data) > limits.max_input_bytes:
        problem = Problem(ProblemCode.TOO_LARGE, "attachment exceeds the size limit", file_name)
        return ReadResult.refused(SourceFormat.XDM, problem)
    try:
        archive = _open_archive(data, limits)
        metadata_paths = _metadata_paths(archive)
        if not metadata_paths:
            return ReadResult.refused(SourceFormat.XDM, _no_metadata(archive, file_name))
        documents: list[Document] = []
        problems: list[Problem] = []
        for metadata_path in metadata_paths:
            found, met = _read_subset(archive, metadata_path)
            documents += found
            problems += met
    except _Refused as refused:
        return ReadResult.refused(SourceFormat.XDM, refused.problem)
    problems += _several_patients(documents, file_name)
    return ReadResult(documents=tuple(documents), problems=tuple(problems), format=SourceFormat.XDM)


def _several_patients(documents: list[Document], file_name: str) -> list[Problem]:
    """One patient per message (ECO.2.1.1): flag archives whose documents name several."""
    named = {
        (d.metadata.patient.ins_oid, d.metadata.patient.ins)
        for d in documents
        if d.metadata.patient is not None and d.metadata.patient.ins
    }
    if len(named) > 1:
        message = "archive documents name several patients"
        return [Problem(ProblemCode.SEVERAL_PATIENTS, message, file_name)]
    return []


def _no_metadata(archive: _Archive, file_name: str) -> Problem:
    if any("ihe_xdm" in path.casefold().split("/") for path in archive.files):
        return Problem(ProblemCode.MISSING_ENTRY, "XDM archive without METADATA.XML", file_name)
    return Problem(ProblemCode.UNSUPPORTED_FORMAT, "zip archive is not IHE XDM", file_name)
