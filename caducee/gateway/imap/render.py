"""IMAP wire forms of message data: strings, ENVELOPE, BODYSTRUCTURE and section contents.

This replaces pymap's ``BaseLoadedMessage`` for everything FETCH returns. The
answers come from :mod:`caducee.mailboxes.imap_structure` (byte offsets and raw
header fields) and follow RFC 3501 §6.4.5 and §7.4.2 and RFC 3516 where pymap
0.36.7 does not:

* ``BODY[n]`` of an attached ``message/rfc822`` is the whole attached message,
  ``BODY[n.m]`` its ``m``-th part, ``BODY[n.HEADER]``/``BODY[n.TEXT]`` its header
  and text, ``BODY[n.MIME]`` the MIME header of part ``n``;
* BODYSTRUCTURE sizes and line counts are those of each part's body, in its
  transfer encoding, and a text part always has a charset (``us-ascii`` by default);
* ENVELOPE fields are sent as they are in the message (encoded words are the
  client's to decode), 8-bit values as literals;
* a section that does not exist is ``NIL``; ``BINARY`` of a part whose
  transfer encoding is unknown is refused with ``[UNKNOWN-CTE]`` (RFC 3516 §4.3).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from caducee.mailboxes.imap_structure import NIL as NIL
from caducee.mailboxes.imap_structure import (
    MessageStructure,
    Part,
    decode_body,
    encapsulated,
    find_part,
    split_header,
    wire_envelope,
    wire_nstring,
    wire_string,
)

string = wire_string
nstring = wire_nstring
envelope = wire_envelope
"""RFC 3501 ENVELOPE (rendered in :mod:`caducee.mailboxes.imap_structure`, where delivery
also seals it apart for listings, issue 15)."""


def _params(params: Sequence[tuple[str, str]]) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(string(name) + b" " + string(value) for name, value in params) + b")"


def _disposition(part: Part) -> bytes:
    if part.disposition is None:
        return NIL
    return b"(" + string(part.disposition) + b" " + _params(part.disposition_params) + b")"


def _language(part: Part) -> bytes:
    if not part.language:
        return NIL
    if len(part.language) == 1:
        return string(part.language[0])
    return b"(" + b" ".join(string(item) for item in part.language) + b")"


def bodystructure(part: Part, *, extended: bool = True) -> bytes:
    """RFC 3501 BODYSTRUCTURE (``extended``) or BODY of a part and its children."""
    if part.is_multipart:
        inner = b"".join(bodystructure(child, extended=extended) for child in part.children)
        items = [inner + b" " + string(part.subtype)]
        if extended:
            items += [
                _params(part.params),
                _disposition(part),
                _language(part),
                nstring(part.location),
            ]
        return b"(" + b" ".join(items) + b")"
    items = [
        string(part.maintype),
        string(part.subtype),
        _params(part.params),
        nstring(part.content_id),
        nstring(part.description),
        string(part.encoding or "7bit"),
        b"%d" % part.size,
    ]
    inner_message = part.children[0] if part.is_message and part.children else None
    if inner_message is not None and inner_message.envelope is not None:
        items += [
            envelope(inner_message.envelope),
            bodystructure(inner_message, extended=extended),
            b"%d" % part.lines,
        ]
    elif part.maintype == "text":
        items.append(b"%d" % part.lines)
    if extended:
        items += [nstring(part.md5), _disposition(part), _language(part), nstring(part.location)]
    return b"(" + b" ".join(items) + b")"


def filter_headers(block: bytes, names: Collection[bytes], *, inverse: bool) -> bytes:
    """The fields of a header block named (or, ``inverse``, not named) in ``names``, then CRLF."""
    wanted = {name.upper() for name in names}
    out: list[bytes] = []
    keep = False
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().upper()
        keep = (name in wanted) != inverse
        if keep:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


class SectionError(Exception):
    """The section cannot be answered (unknown transfer encoding for BINARY)."""


def section_needs_content(
    parts: Sequence[int] | None, specifier: bytes | None, *, binary: bool = False
) -> bool:
    """Whether a section needs the message bytes, or only the cached top-level header."""
    return (
        binary
        or bool(parts)
        or specifier not in (b"HEADER", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT")
    )


def body_start(raw: bytes) -> int:
    """Where the body of a whole message starts (after the blank line)."""
    return split_header(raw, 0, len(raw))


def section(
    structure: MessageStructure | None,
    raw: bytes | None,
    parts: Sequence[int] | None,
    specifier: bytes | None,
    headers: Iterable[bytes] | None = None,
    *,
    binary: bool = False,
) -> bytes | None:
    """The octets of ``BODY[parts.specifier]`` (or ``BINARY[parts]``); None means NIL.

    ``raw`` may be None when :func:`section_needs_content` is false; ``structure``
    may be None for the whole message and its TEXT.
    """
    parts = list(parts or ())
    if not parts and specifier is None:
        return raw
    if not parts and specifier == b"TEXT" and raw is not None:
        return raw[body_start(raw) :]
    if structure is None:
        return None
    root = structure.root
    if not parts and specifier in (b"HEADER", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT"):
        block = structure.header
        if specifier == b"HEADER":
            return block
        return filter_headers(block, list(headers or ()), inverse=specifier.endswith(b".NOT"))
    if raw is None:
        return None
    part = find_part(root, parts)
    if part is None:
        return None
    if specifier is None:
        if binary and not part.is_multipart and not part.is_message:
            try:
                return decode_body(raw, part)
            except ValueError as error:
                raise SectionError(str(error)) from None
        return raw[part.body_start : part.end]
    if specifier == b"MIME":
        return raw[part.header_start : part.body_start]
    if part.is_message and part.children:
        # The part is a message/rfc822 entity (an attachment, or the body of a message
        # whose own type is message/rfc822, also nested): HEADER and TEXT are those of
        # the message it encapsulates (RFC 3501 §6.4.5; imaptest
        # fetch-body-message-rfc822*).
        message: Part | None = part.children[0]
    else:
        message = encapsulated(part) if part is not root else None
    if message is None:
        return None
    if specifier == b"TEXT":
        return raw[message.body_start : message.end]
    block = raw[message.header_start : message.body_start]
    if specifier == b"HEADER":
        return block
    return filter_headers(block, list(headers or ()), inverse=specifier.endswith(b".NOT"))
