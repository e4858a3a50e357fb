"""Binary parts made 7-bit at APPEND (RFC 3516 §4.2, §4.3; imaptest ``append-binary``).

A client may APPEND with a ``~{n}`` literal8 a message whose parts carry raw binary
content (``Content-Transfer-Encoding: binary``, NUL octets included). Such content
cannot be sent back in a ``BODY[...]`` answer: an IMAP literal may not hold NUL
(RFC 3501 §4.3, RFC 3516 §4.3), so a later ``FETCH BODY[1]`` would be invalid data.
As Dovecot does, each leaf part whose body holds NUL in an identity encoding
(7bit, 8bit, binary, none) is stored re-encoded in base64 with its
``Content-Transfer-Encoding`` field changed: ``BODY[n]`` is then base64 text and
``BINARY[n]`` (which undoes the encoding) gives back exactly the octets appended.
Messages without NUL are stored as they came, byte for byte.
"""

from __future__ import annotations

import base64

from .imap_structure import Part, parse_message, walk

__all__ = ["seven_bit_parts"]

_IDENTITY = (None, "7bit", "8bit", "binary")
_LINE = 76  # RFC 2045 §6.8: encoded lines of at most 76 characters


def seven_bit_parts(data: bytes) -> bytes:
    """``data`` with every leaf part whose body holds NUL re-encoded in base64."""
    if b"\x00" not in data:
        return data
    root = parse_message(data).root
    leaves = [
        part
        for part in walk(root)
        if not part.children
        and not part.is_multipart
        and (part.encoding or None) in _IDENTITY
        and b"\x00" in data[part.body_start : part.end]
    ]
    out = data
    # From the last part back, so that the offsets of those before stay right.
    for part in sorted(leaves, key=lambda p: p.header_start, reverse=True):
        out = out[: part.header_start] + _as_base64(data, part, root) + out[part.end :]
    return out


def _as_base64(data: bytes, part: Part, root: Part) -> bytes:
    header = data[part.header_start : part.body_start]
    newline = b"\n" if header.endswith(b"\n\n") and not header.endswith(b"\r\n\r\n") else b"\r\n"
    fields = header[: -len(newline)] if header.endswith(newline) else header
    kept: list[bytes] = []
    skipping = False
    for line in fields.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the previous field
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == b"content-transfer-encoding"
        if not skipping:
            kept.append(line)
    kept.append(b"Content-Transfer-Encoding: base64" + newline + newline)
    encoded = base64.b64encode(data[part.body_start : part.end])
    lines = [encoded[i : i + _LINE] for i in range(0, len(encoded), _LINE)]
    body = newline.join(lines)
    if part is root:  # the whole message's body: end it with a line break
        body += newline
    return b"".join(kept) + body
