"""Reader for unstructured attachments: PDF, JPEG, PNG, TIFF, RTF and plain text (spec E1).

These documents carry no metadata the gateway can trust, so the reader only decides what
they are, from their first bytes rather than from the name or type the sender declared
(a ``.pdf`` that is really a PNG is filed as a PNG). Plain text has no magic number: it is
accepted when the sender declared it as text and the bytes are text. Anything else is
reported as ``UNSUPPORTED_FORMAT``, so that it stays on the message, marked not filed.
"""

from __future__ import annotations

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

_PDF_MAGIC = b"%PDF-"
_PDF_MAGIC_WINDOW = 1024
_MAGIC_NUMBERS: tuple[tuple[bytes, SourceFormat, str], ...] = (
    (b"\xff\xd8\xff", SourceFormat.JPEG, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", SourceFormat.PNG, "image/png"),
    (b"II*\x00", SourceFormat.TIFF, "image/tiff"),
    (b"MM\x00*", SourceFormat.TIFF, "image/tiff"),
    (b"{\\rtf", SourceFormat.RTF, "application/rtf"),
)
_TEXT_EXTENSIONS = (".txt", ".text")
_TEXT_CONTROL_ALLOWED = frozenset("\t\n\r\f")


def sniff_binary(data: bytes) -> tuple[SourceFormat, str] | None:
    """Format and MIME type of a PDF, image or RTF file, from its magic number."""
    if _PDF_MAGIC in data[:_PDF_MAGIC_WINDOW]:
        return SourceFormat.PDF, "application/pdf"
    for magic, source_format, mime_type in _MAGIC_NUMBERS:
        if data.startswith(magic):
            return source_format, mime_type
    return None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
        if "\ufffd" in text:
            return False
    return not any(ord(char) < 0x20 and char not in _TEXT_CONTROL_ALLOWED for char in text)


def is_text(data: bytes) -> bool:
    """UTF-8 (or cp1252) text without control characters but tabs, line ends and form feeds."""
    return _is_text(data)


def filed_format(
    data: bytes, file_name: str, content_type: str | None
) -> tuple[SourceFormat, str] | None:
    """E1: the format and true MIME type of an unstructured document the record takes, if any.

    PDF, JPEG, PNG, TIFF and RTF by their magic number; plain text when declared so and it is
    text. Anything else (an archive, HTML, SVG, an unknown binary) is not filed.
    """
    sniffed = sniff_binary(data)
    if sniffed is None and declared_as_text(file_name, content_type) and _is_text(data):
        sniffed = SourceFormat.TEXT, "text/plain"
    return sniffed


def declared_as_text(file_name: str, content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "text/plain" or file_name.lower().endswith(_TEXT_EXTENSIONS)


def read_plain(
    data: bytes,
    *,
    file_name: str = "attachment",
    content_type: str | None = None,
    limits: ReaderLimits = DEFAULT_LIMITS,
) -> ReadResult:
    """Recognise an unstructured document and return it with its true MIME type."""
    if len(data) > limits.max_input_bytes:
        problem = Problem(ProblemCode.TOO_LARGE, "attachment exceeds the size limit", file_name)
        return ReadResult.refused(SourceFormat.UNKNOWN, problem)
    if not data:
        problem = Problem(ProblemCode.UNSUPPORTED_FORMAT, "attachment is empty", file_name)
        return ReadResult.refused(SourceFormat.UNKNOWN, problem)
    sniffed = filed_format(data, file_name, content_type)
    if sniffed is None:
        problem = Problem(ProblemCode.UNSUPPORTED_FORMAT, "attachment format not filed", file_name)
        return ReadResult.refused(SourceFormat.UNKNOWN, problem)
    source_format, mime_type = sniffed
    document = Document(
        content=data,
        file_name=file_name,
        mime_type=mime_type,
        metadata=DocumentMetadata(mime_type=mime_type),
    )
    return ReadResult(documents=(document,), problems=(), format=source_format)
