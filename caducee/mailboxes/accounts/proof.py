"""The proof of opposition (I1): a one-page PDF written by hand (no PDF library needed).

PDF 1.4, one page, the standard Helvetica font in WinAnsiEncoding (French accents through
Latin-1), byte offsets in the cross-reference table computed while writing: any PDF reader
opens it. It carries the identity of the space and the instant and reference of the
opposition, never health content.
"""

from __future__ import annotations

from collections.abc import Sequence


def _escape(text: str) -> bytes:
    data = text.encode("cp1252", errors="replace")
    return data.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_pdf(title: str, lines: Sequence[str]) -> bytes:
    """A valid one-page A4 PDF showing ``title`` and ``lines``."""
    stream = bytearray(b"BT /F1 16 Tf 56 780 Td (" + _escape(title) + b") Tj ET\n")
    y = 740
    for line in lines:
        stream += b"BT /F1 11 Tf 56 %d Td (" % y + _escape(line) + b") Tj ET\n"
        y -= 18
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + bytes(stream) + b"endstream",
        b"<< /Title (" + _escape(title) + b") /Producer (Caducee) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
