"""Mailbox names on the wire: a bounded, strict modified UTF-7 codec (RFC 3501 §5.1.3; H1).

pymap 0.36.7's ``pymap.parsing.modutf7`` is unsafe on client input:

* ``modutf7_decode`` loops forever on an ``&`` that no ``-`` closes
  (``SELECT "&Jjo!"``): its inner ``for`` finds no ``-`` and leaves the buffer
  unchanged, so the ``while`` spins at 100 % CPU and, the event loop being
  shared, SMTP, IMAP and HTTP all stop (issue 15);
* any other invalid base64 run raises :class:`UnicodeDecodeError`, which ends
  the session with ``BYE [SERVERBUG]`` instead of ``BAD``;
* ``modutf7_encode`` writes TAB, CR and LF as ``&-`` (Python's UTF-7 codec
  leaves them unencoded), which reads back as ``&``.

This module carries corrected copies of those two functions and
:func:`install` puts them in place of pymap's in the modules that imported them
by name (the mailbox-name parser, the LIST pattern parser and the responses). A
malformed name raises :class:`MailboxNameError`; in client commands it is read as
:data:`UNUSABLE_NAME`, a name no folder can have, so the command is answered the way
Dovecot answers it (and imaptest expects): ``NO`` for SELECT, STATUS, CREATE and the
like (no such folder, or not a valid name), an empty ``OK`` for a LIST pattern; the
session goes on.
This should be reported upstream (pymap, ``parsing/modutf7.py``); drop the
patch when a fixed release is used.

pymap's unquoted mailbox names (``AString``) and LIST patterns also leave out ``}``,
which RFC 3501 §9 allows in an atom (only ``{`` is an atom-special): ``SELECT a}``
was a ``BAD``. :func:`install` widens both patterns (report upstream with the codec).
"""

from __future__ import annotations

import binascii
import re
from types import ModuleType

from pymap.parsing import modutf7 as _pymap_modutf7
from pymap.parsing.command import auth as _pymap_auth
from pymap.parsing.exceptions import InvalidContent
from pymap.parsing.response import specials as _pymap_response_specials
from pymap.parsing.specials import mailbox as _pymap_mailbox
from pymap.parsing.specials.astring import AString

__all__ = [
    "UNUSABLE_NAME",
    "MailboxNameError",
    "decode_client_mailbox_name",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "install",
]

#: Longest name we decode, in bytes: pymap's parser already refuses longer strings.
MAX_NAME_BYTES = 4096

_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")
_DIRECT = re.compile(rb"[\x20-\x25\x27-\x7e]+")


class MailboxNameError(InvalidContent):
    """A client-supplied mailbox name is not valid modified UTF-7 (answered with ``BAD``)."""

    def __init__(self, reason: str) -> None:
        # Never the name itself: it is client content (and may be health content, J1).
        super().__init__(memoryview(b""), b"CANNOT")
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid mailbox name: {self.reason}"


def _decode_shifted(run: bytes) -> str:
    """Decode the modified base64 between ``&`` and ``-`` (never empty here)."""
    if len(run) % 4 == 1:
        raise MailboxNameError("truncated base64 run")
    padded = run.replace(b",", b"/") + b"=" * (-len(run) % 4)
    try:
        raw = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise MailboxNameError("invalid base64 run") from None
    # RFC 4648 §3.5 / RFC 2152: the bits left over after the last octet must be zero.
    if binascii.b2a_base64(raw, newline=False) != padded:
        raise MailboxNameError("non-zero padding bits")
    if len(raw) % 2:
        raise MailboxNameError("odd number of UTF-16 octets")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MailboxNameError("unpaired UTF-16 surrogate") from None
    for char in text:
        point = ord(char)
        if 0x20 <= point <= 0x7E:
            # RFC 3501 §5.1.3: printable US-ASCII MUST represent itself.
            raise MailboxNameError("printable US-ASCII in a base64 run")
        if point < 0x20 or 0x7F <= point <= 0x9F:
            # Net-Unicode (RFC 5198), as RFC 9051 §5.1 asks of names: no control characters
            # (and PostgreSQL refuses NUL in text).
            raise MailboxNameError("control character")
    return text


def decode_mailbox_name(data: bytes) -> str:
    """Decode a modified UTF-7 mailbox name; :class:`MailboxNameError` if it is not one.

    Linear in the length of ``data``; every step consumes input.
    """
    data = bytes(data)
    if len(data) > MAX_NAME_BYTES:
        raise MailboxNameError("name too long")
    parts: list[str] = []
    position = 0
    end = len(data)
    while position < end:
        direct = _DIRECT.match(data, position)
        if direct is not None:
            parts.append(direct.group(0).decode("ascii"))
            position = direct.end()
            continue
        if data[position] != 0x26:  # "&"
            raise MailboxNameError("octet outside printable US-ASCII")
        shifted = _SHIFTED.match(data, position)
        if shifted is None:
            raise MailboxNameError("'&' not closed by '-'")
        run = shifted.group(1)
        parts.append(_decode_shifted(run) if run else "&")
        position = shifted.end()
    return "".join(parts)


UNUSABLE_NAME = "\x01"
"""What a malformed client name reads as: a control character, so no folder is ever found
under it and CREATE/RENAME refuse it (``check_folder_name``); never echoed, never stored."""


def decode_client_mailbox_name(data: bytes) -> str:
    """A client's mailbox name or LIST pattern: :data:`UNUSABLE_NAME` when malformed."""
    try:
        return decode_mailbox_name(data)
    except MailboxNameError:
        return UNUSABLE_NAME


def _encode_shifted(text: str) -> bytes:
    raw = text.encode("utf-16-be", "surrogatepass")
    return b"&" + binascii.b2a_base64(raw, newline=False).rstrip(b"=").replace(b"/", b",") + b"-"


def encode_mailbox_name(name: str) -> bytes:
    """Encode a mailbox name in modified UTF-7 (every non-printable character is shifted)."""
    out = bytearray()
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out += _encode_shifted("".join(pending))
                pending.clear()
            out += b"&-" if char == "&" else char.encode("ascii")
        else:
            pending.append(char)
    if pending:
        out += _encode_shifted("".join(pending))
    return bytes(out)


_PATCHED: tuple[tuple[ModuleType, str, object], ...] = (
    (_pymap_modutf7, "modutf7_decode", decode_mailbox_name),
    (_pymap_modutf7, "modutf7_encode", encode_mailbox_name),
    (_pymap_mailbox, "modutf7_decode", decode_client_mailbox_name),
    (_pymap_mailbox, "modutf7_encode", encode_mailbox_name),
    (_pymap_auth, "modutf7_decode", decode_client_mailbox_name),
    (_pymap_response_specials, "modutf7_encode", encode_mailbox_name),
)


#: RFC 3501 §9: ASTRING-CHAR (ATOM-CHAR and "]") and list-char (with "%" and "*").
ASTRING_PATTERN = re.compile(rb"[\x21\x23\x24\x26\x27\x2B-\x5B\x5D\x5E-\x7A\x7C-\x7E]+")
LIST_MAILBOX_PATTERN = re.compile(rb"[\x21\x23-\x27\x2A-\x5B\x5D-\x7A\x7C-\x7E]+")


def install() -> None:
    """Replace pymap's codec and name patterns by ours where pymap looks them up (idempotent)."""
    for module, attribute, function in _PATCHED:
        if not hasattr(module, attribute):  # a pymap upgrade moved it: fail loudly
            raise RuntimeError(f"{module.__name__}.{attribute} not found: review names.py")
        setattr(module, attribute, function)
    for cls, attribute, pattern in (
        (AString, "_pattern", ASTRING_PATTERN),
        (_pymap_auth.ListCommand, "_list_mailbox_pattern", LIST_MAILBOX_PATTERN),
    ):
        if not hasattr(cls, attribute):
            raise RuntimeError(f"{cls.__name__}.{attribute} not found: review names.py")
        setattr(cls, attribute, pattern)
