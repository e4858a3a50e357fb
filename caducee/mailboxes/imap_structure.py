"""The MIME structure of a stored message, as IMAP sees it (RFC 3501 §6.4.5, §7.4.2).

IMAP clients do not download whole messages: they ask for the ENVELOPE, the
BODYSTRUCTURE, one header field, part ``1.2``, the MIME header of part ``3``,
part ``2.1`` inside an attached ``message/rfc822``. This module parses a message
once into a tree of byte offsets plus the header fields those answers need, so
that every later question is a slice of the original bytes.

Why not :mod:`pymap.mime`: as shipped (0.36.7) it gives BODYSTRUCTURE sizes and
line counts of the whole part (MIME header included) instead of its body, keeps
the CRLF that belongs to the next boundary inside each part, numbers the parts
of an attached ``message/rfc822`` as if the encapsulated message were its only
child (so ``BODY[2.1]`` returns the whole attached message and ``BODY[2.2]``
nothing), decodes RFC 2047 words in ENVELOPE fields that IMAP sends raw, and
raises on an unknown Content-Transfer-Encoding. Why not :mod:`email`: it does not
keep byte offsets, and re-serialising a parsed message does not give back the
exact bytes an IMAP client is entitled to.

The structure serialises to compact JSON (:meth:`MessageStructure.to_json`); the
storage keeps it as an encrypted blob because subjects and names are health
content (J1). The raw header block is kept as Latin-1 text so that any byte
survives the round trip.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

STRUCTURE_VERSION = 2
MAX_DEPTH = 40
MAX_PARTS = 5000

Address = tuple[str | None, str | None, str | None, str | None]
"""An IMAP address: (name, adl, mailbox, host); ``None`` is NIL."""

ENVELOPE_FIELDS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
_ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})
_TOKEN = re.compile(rb"[^\s()<>@,;:\\\"/\[\]?=]+")


class UnknownEncoding(ValueError):
    """A part's Content-Transfer-Encoding is not one IMAP BINARY can undo."""


@dataclass(slots=True)
class Envelope:
    """The raw (unfolded, not decoded) fields of an RFC 3501 ENVELOPE."""

    date: str | None = None
    subject: str | None = None
    from_: list[Address] = field(default_factory=list)
    sender: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    in_reply_to: str | None = None
    message_id: str | None = None

    def to_json(self) -> list[Any]:
        return [
            self.date,
            self.subject,
            self.from_,
            self.sender,
            self.reply_to,
            self.to,
            self.cc,
            self.bcc,
            self.in_reply_to,
            self.message_id,
        ]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Envelope:
        def addresses(value: Any) -> list[Address]:
            return [(item[0], item[1], item[2], item[3]) for item in value]

        return cls(
            data[0],
            data[1],
            addresses(data[2]),
            addresses(data[3]),
            addresses(data[4]),
            addresses(data[5]),
            addresses(data[6]),
            addresses(data[7]),
            data[8],
            data[9],
        )


@dataclass(slots=True)
class Part:
    """One MIME entity: where its header and body are, and the fields BODYSTRUCTURE shows.

    ``header_start``/``body_start`` bound the header block (blank line included);
    ``body_start``/``end`` bound the body. For ``multipart/*`` the children are
    the parts; for ``message/rfc822`` the only child is the encapsulated message
    (a :class:`Part` with an :attr:`envelope`).
    """

    header_start: int
    body_start: int
    end: int
    maintype: str
    subtype: str
    params: list[tuple[str, str]]
    content_id: str | None = None
    description: str | None = None
    encoding: str | None = None
    disposition: str | None = None
    disposition_params: list[tuple[str, str]] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    location: str | None = None
    md5: str | None = None
    lines: int = 0
    children: list[Part] = field(default_factory=list)
    envelope: Envelope | None = None

    @property
    def size(self) -> int:
        """Octets of the body, in its transfer encoding (BODYSTRUCTURE ``body-fld-octets``)."""
        return self.end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    @property
    def is_message(self) -> bool:
        return self.maintype == "message" and self.subtype in ("rfc822", "global")

    @property
    def charset(self) -> str | None:
        for name, value in self.params:
            if name == "charset":
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "h": self.header_start,
            "b": self.body_start,
            "e": self.end,
            "t": self.maintype,
            "s": self.subtype,
            "p": self.params,
            "l": self.lines,
        }
        optional = {
            "id": self.content_id,
            "de": self.description,
            "en": self.encoding,
            "di": self.disposition,
            "dp": self.disposition_params,
            "la": self.language,
            "lo": self.location,
            "md": self.md5,
        }
        data.update({key: value for key, value in optional.items() if value})
        if self.children:
            data["c"] = [child.to_json() for child in self.children]
        if self.envelope is not None:
            data["env"] = self.envelope.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        envelope = data.get("env")
        return cls(
            header_start=data["h"],
            body_start=data["b"],
            end=data["e"],
            maintype=data["t"],
            subtype=data["s"],
            params=[(name, value) for name, value in data["p"]],
            content_id=data.get("id"),
            description=data.get("de"),
            encoding=data.get("en"),
            disposition=data.get("di"),
            disposition_params=[(n, v) for n, v in data.get("dp", ())],
            language=list(data.get("la", ())),
            location=data.get("lo"),
            md5=data.get("md"),
            lines=data["l"],
            children=[cls.from_json(child) for child in data.get("c", ())],
            envelope=Envelope.from_json(envelope) if envelope is not None else None,
        )


class MessageStructure:
    """A parsed message: its size, its top-level header block and its part tree.

    Built from the cache, the part tree and the envelope are decoded only when
    asked for: ``FETCH 1:* (FLAGS ENVELOPE)`` on a large folder needs neither the
    tree nor the header of each message.
    """

    __slots__ = ("_envelope", "_root", "_root_json", "header", "memo", "size", "version")

    def __init__(
        self,
        size: int,
        header: bytes,
        root: Part | None,
        *,
        version: int = STRUCTURE_VERSION,
        root_json: dict[str, Any] | None = None,
        envelope_json: list[Any] | None = None,
    ) -> None:
        self.size = size
        self.header = header
        self.version = version
        self.memo: dict[str, bytes] = {}  # renderings of this structure (ENVELOPE, ...)
        self._root = root
        self._root_json = root_json
        self._envelope: Envelope | list[Any] | None = (
            root.envelope if root is not None else envelope_json
        )

    @property
    def root(self) -> Part:
        if self._root is None:
            assert self._root_json is not None
            root = Part.from_json(self._root_json)
            if root.envelope is None and self._envelope is not None:
                root.envelope = self.envelope  # stored once, at the top of the cache
            self._root = root
            self._root_json = None
        return self._root

    @property
    def envelope(self) -> Envelope:
        if isinstance(self._envelope, list):
            self._envelope = Envelope.from_json(self._envelope)
        if self._envelope is None:
            self._envelope = self.root.envelope
        if self._envelope is None:
            self._envelope = Envelope()
        return self._envelope

    def header_values(self, name: str) -> list[str]:
        """Every raw value (unfolded) of a top-level header field, in order."""
        wanted = name.lower()
        return [value for key, value in header_fields(self.header) if key == wanted]

    def to_json(self) -> bytes:
        root = self.root.to_json()
        root.pop("env", None)
        data = {
            "v": self.version,
            "n": self.size,
            "hd": self.header.decode("latin-1"),
            "env": self.envelope.to_json(),
            "r": root,
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> MessageStructure:
        data = json.loads(raw)
        return cls(
            size=data["n"],
            header=data["hd"].encode("latin-1"),
            root=None,
            version=data["v"],
            root_json=data["r"],
            envelope_json=data.get("env"),
        )


# -- wire forms (RFC 3501) ------------------------------------------------------------
# Here rather than in the IMAP gateway's renderer because delivery seals the rendered
# ENVELOPE of each message apart (:func:`envelope_record`): a cold listing then
# decrypts that small record instead of parsing the structure (issue 15).

NIL = b"NIL"
_NEEDS_LITERAL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f-\xff]")


def wire_string(value: str | bytes) -> bytes:
    """A quoted string, or a literal when the value cannot be quoted (8-bit, CR, LF, long)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) > 4096 or _NEEDS_LITERAL.search(data):
        return b"{%d}\r\n%b" % (len(data), data)
    if b"\\" in data or b'"' in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"%b"' % data


def wire_nstring(value: str | bytes | None) -> bytes:
    return NIL if value is None else wire_string(value)


_ADDRESSES: dict[Address, bytes] = {}
_ADDRESSES_MAX = 4096
"""Rendered addresses: a folder's mail comes from and goes to few addresses, and a
cold listing rendered each of them for every message (issue 15). At most 4,096
entries of at most 1 KiB; emptied when full."""


def _address(address: Address) -> bytes:
    rendered = _ADDRESSES.get(address)
    if rendered is None:
        rendered = b"(" + b" ".join([wire_nstring(item) for item in address]) + b")"
        if len(rendered) <= 1024:
            if len(_ADDRESSES) >= _ADDRESSES_MAX:
                _ADDRESSES.clear()
            _ADDRESSES[address] = rendered
    return rendered


def _address_list(addresses: Sequence[Address]) -> bytes:
    if not addresses:
        return NIL
    return b"(" + b"".join([_address(address) for address in addresses]) + b")"


def wire_envelope(env: Envelope) -> bytes:
    """RFC 3501 ENVELOPE; Sender and Reply-To default to From."""
    return (
        b"("
        + b" ".join(
            (
                wire_nstring(env.date),
                wire_nstring(env.subject),
                _address_list(env.from_),
                _address_list(env.sender or env.from_),
                _address_list(env.reply_to or env.from_),
                _address_list(env.to),
                _address_list(env.cc),
                _address_list(env.bcc),
                wire_nstring(env.in_reply_to),
                wire_nstring(env.message_id),
            )
        )
        + b")"
    )


ENVELOPE_RECORD = b"E1 "
"""Prefix of a sealed ENVELOPE record: the wire form's version. A record whose prefix
differs (rendered by other code) is ignored and the ENVELOPE is rendered from the
structure, so a change to :func:`wire_envelope` must change this prefix."""


def envelope_record(structure: MessageStructure) -> bytes:
    """What delivery seals beside the structure: the message's ENVELOPE, rendered."""
    return ENVELOPE_RECORD + wire_envelope(structure.envelope)


def envelope_from_record(data: bytes) -> bytes | None:
    """The ENVELOPE wire form of a record, or None if it was rendered by other code."""
    if not data.startswith(ENVELOPE_RECORD):
        return None
    return data[len(ENVELOPE_RECORD) :]


# -- parsing -------------------------------------------------------------------------


def header_fields(block: bytes) -> list[tuple[str, str]]:
    """``(lower-case name, unfolded raw value)`` for each field of a header block."""
    fields: list[tuple[str, str]] = []
    name: str | None = None
    value: list[str] = []
    for raw_line in block.split(b"\n"):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if not line:
            continue
        text = line.decode("utf-8", "replace")
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(text)
            continue
        if name is not None:
            fields.append((name, "".join(value).strip()))
        colon = text.find(":")
        if colon <= 0:
            name = None
            value = []
            continue
        name = text[:colon].strip().lower()
        value = [text[colon + 1 :]]
    if name is not None:
        fields.append((name, "".join(value).strip()))
    return fields


def split_header(data: bytes, start: int, end: int) -> int:
    """Where the body of the entity in ``data[start:end]`` starts (after the blank line)."""
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    crlf = data.find(b"\n\r\n", start, end)
    lf = data.find(b"\n\n", start, end)
    candidates = [pos + 3 for pos in (crlf,) if pos >= 0] + [pos + 2 for pos in (lf,) if pos >= 0]
    return min(candidates) if candidates else end


def _parameters(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split ``value; name=value; name="quoted"`` into the value and its parameters."""
    text = _strip_comments(data.decode("utf-8", "replace"))
    head, _, rest = text.partition(";")
    params: list[tuple[str, str]] = []
    position = 0
    while position < len(rest):
        match = re.match(r'\s*([^=;\s]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]*)\s*;?', rest[position:])
        if match is None:
            next_semicolon = rest.find(";", position)
            if next_semicolon < 0:
                break
            position = next_semicolon + 1
            continue
        name = match.group(1).lower()
        if match.group(3) is not None:
            value = re.sub(r"\\(.)", r"\1", match.group(3))
        else:
            value = match.group(2).strip()
        params.append((name, value))
        position += match.end()
    return head.strip(), params


def _strip_comments(text: str) -> str:
    """Remove RFC 5322 comments outside quoted strings (``text/plain (note)``)."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            if char == '"':
                quoted = False
            out.append(char)
        elif char == '"' and depth == 0:
            quoted = True
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


_SPECIALS = "<>@,;:."
MAX_ADDRESS_TOKENS = 10_000
"""Tokens of one address header we look at (bounded work for any client-supplied header)."""


def _address_tokens(value: str) -> list[tuple[str, str]]:
    """RFC 5322 §3.2 lexical tokens: ("q", quoted text), ("c", comment), ("l", domain
    literal), ("s", a special) and ("a", an atom); white space separates, nothing more.

    Linear: every step consumes input; unclosed quotes and comments end at the value's end.
    """
    tokens: list[tuple[str, str]] = []
    position, end = 0, len(value)
    while position < end and len(tokens) < MAX_ADDRESS_TOKENS:
        char = value[position]
        if char.isspace():
            position += 1
        elif char == '"':
            out: list[str] = []
            position += 1
            while position < end and value[position] != '"':
                if value[position] == "\\" and position + 1 < end:
                    position += 1
                out.append(value[position])
                position += 1
            tokens.append(("q", "".join(out)))
            position += 1
        elif char == "(":
            depth, out = 1, []
            position += 1
            while position < end and depth:
                current = value[position]
                if current == "\\" and position + 1 < end:
                    position += 1
                    out.append(value[position])
                elif current == "(":
                    depth += 1
                    out.append(current)
                elif current == ")":
                    depth -= 1
                    if depth:
                        out.append(current)
                else:
                    out.append(current)
                position += 1
            tokens.append(("c", " ".join("".join(out).split())))
        elif char == "[":
            close = value.find("]", position)
            close = end - 1 if close < 0 else close
            tokens.append(("l", value[position : close + 1]))
            position = close + 1
        elif char in _SPECIALS:
            tokens.append(("s", char))
            position += 1
        else:
            start = position
            while (
                position < end
                and not value[position].isspace()
                and value[position] not in _SPECIALS
                and value[position] not in '"(['
            ):
                position += 1
            tokens.append(("a", value[start:position]))
    return tokens


def _word_text(tokens: list[tuple[str, str]]) -> str:
    """An addr-spec part as written, comments dropped (``user . name`` -> ``user.name``)."""
    out: list[str] = []
    for kind, text in tokens:
        if kind == "q":
            out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif kind != "c":
            out.append(text)
    return "".join(out)


def _mailbox(tokens: list[tuple[str, str]]) -> Address | None:
    """One ``name <addr-spec>`` or ``addr-spec`` (RFC 5322 §3.4), comments ignored
    except as the name of an address that has no display name (as Dovecot does)."""
    comments = [text for kind, text in tokens if kind == "c" and text]
    words = [(kind, text) for kind, text in tokens if kind != "c"]
    if not words:
        return None
    name: str | None = None
    route: str | None = None
    spec = words
    if ("s", "<") in words:
        opening = words.index(("s", "<"))
        closing = words.index(("s", ">")) if ("s", ">") in words[opening:] else len(words)
        phrase = [text for kind, text in words[:opening] if kind in ("a", "q", "s")]
        name = " ".join(phrase) or None
        spec = words[opening + 1 : closing]
        if ("s", ":") in spec:  # obsolete route: <@a,@b:user@host> (the adl field)
            colon = len(spec) - 1 - spec[::-1].index(("s", ":"))
            route = _word_text(spec[:colon]) or None
            spec = spec[colon + 1 :]
    if name is None and comments and ("s", "<") not in words:
        name = comments[-1]  # user@host (Real Name)
    if ("s", "@") in spec:
        at = len(spec) - 1 - spec[::-1].index(("s", "@"))
        local, host = _word_text(spec[:at]), _word_text(spec[at + 1 :])
    else:
        local, host = _word_text(spec), ""
    if not local and not host and name is None:
        return None
    return (name, route, local or None, host or None)


def parse_addresses(value: str | None) -> list[Address]:
    """An address header as IMAP address structures (RFC 3501 §7.4.2, RFC 5322 §3.4).

    Groups (``team: a@x, b@y;``, also several, also empty) become a start marker
    ``(NIL NIL "team" NIL)``, their members and an end marker ``(NIL NIL NIL NIL)``;
    comments never hide an address (``<user (c)@ (c) domain.org>``).
    """
    if not value:
        return []
    tokens = _address_tokens(value)
    result: list[Address] = []
    item: list[tuple[str, str]] = []
    in_group = False
    in_angle = False

    def flush() -> None:
        address = _mailbox(item)
        if address is not None:
            result.append(address)
        item.clear()

    for kind, text in tokens:
        if kind == "s" and text == "<":
            in_angle = True
        elif kind == "s" and text == ">":
            in_angle = False
        if kind == "s" and not in_angle:
            if text == ":" and not in_group and ("s", "@") not in item:
                phrase = " ".join(t for k, t in item if k in ("a", "q", "s"))
                result.append((None, None, phrase or None, None))
                item.clear()
                in_group = True
                continue
            if text == ";" and in_group:
                flush()
                result.append((None, None, None, None))
                in_group = False
                continue
            if text == ",":
                flush()
                continue
        item.append((kind, text))
    flush()
    if in_group:
        result.append((None, None, None, None))
    return result


def address_text(addresses: Sequence[Address]) -> str:
    """The addresses as ``name <mailbox@host>`` text, for SEARCH FROM/TO/CC/BCC."""
    out: list[str] = []
    for name, _, mailbox, host in addresses:
        if mailbox is None and host is None:
            continue  # group markers
        spec = f"{mailbox or ''}@{host}" if host else (mailbox or "")
        out.append(f"{name} <{spec}>" if name else f"<{spec}>")
    return ", ".join(out)


def _envelope(fields: list[tuple[str, str]]) -> Envelope:
    first: dict[str, str] = {}
    for name, value in fields:
        if name in ENVELOPE_FIELDS and name not in first:
            first[name] = value
    return Envelope(
        date=first.get("date") or None,
        subject=first.get("subject"),
        from_=parse_addresses(first.get("from")),
        sender=parse_addresses(first.get("sender")),
        reply_to=parse_addresses(first.get("reply-to")),
        to=parse_addresses(first.get("to")),
        cc=parse_addresses(first.get("cc")),
        bcc=parse_addresses(first.get("bcc")),
        in_reply_to=first.get("in-reply-to") or None,
        message_id=first.get("message-id") or None,
    )


def _lines(data: bytes, start: int, end: int) -> int:
    """Text lines of a body: its line ends, plus a last line without one."""
    count = data.count(b"\n", start, end)
    if end > start and data[end - 1] != 0x0A:
        count += 1
    return count


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.parts = 0

    def entity(
        self, start: int, end: int, depth: int, default: tuple[str, str], *, message: bool
    ) -> Part:
        self.parts += 1
        data = self.data
        body_start = split_header(data, start, end)
        fields = header_fields(data[start:body_start])
        values: dict[str, str] = {}
        for name, value in fields:
            values.setdefault(name, value)
        maintype, subtype = default
        params: list[tuple[str, str]] = []
        if "content-type" in values:
            kind, params = _parameters(values["content-type"].encode("utf-8"))
            major, slash, minor = kind.lower().partition("/")
            if slash and _TOKEN.fullmatch(major.encode()) and _TOKEN.fullmatch(minor.encode()):
                maintype, subtype = major, minor
            else:
                maintype, subtype, params = "text", "plain", []
        if maintype == "text" and not any(name == "charset" for name, _ in params):
            params = [("charset", "us-ascii"), *params]
        disposition: str | None = None
        disposition_params: list[tuple[str, str]] = []
        if "content-disposition" in values:
            kind, disposition_params = _parameters(values["content-disposition"].encode("utf-8"))
            disposition = kind.lower() or None
        encoding = values.get("content-transfer-encoding")
        part = Part(
            header_start=start,
            body_start=body_start,
            end=end,
            maintype=maintype,
            subtype=subtype,
            params=params,
            content_id=values.get("content-id") or None,
            description=values.get("content-description") or None,
            encoding=encoding.strip().lower() if encoding else None,
            disposition=disposition,
            disposition_params=disposition_params,
            language=[
                item.strip()
                for item in _strip_comments(values.get("content-language", "")).split(",")
                if item.strip()
            ],
            location=values.get("content-location") or None,
            md5=values.get("content-md5") or None,
            lines=_lines(data, body_start, end),
            envelope=_envelope(fields) if message else None,
        )
        if depth >= MAX_DEPTH or self.parts >= MAX_PARTS:
            return part
        if maintype == "multipart":
            boundary = next((value for name, value in params if name == "boundary"), "")
            children = self.multipart(body_start, end, boundary.encode("utf-8"), depth, subtype)
            if children:
                part.children = children
            else:
                part.maintype, part.subtype = "text", "plain"
                part.params = [("charset", "us-ascii")]
        elif part.is_message and part.encoding in (None, "7bit", "8bit", "binary"):
            part.children = [
                self.entity(body_start, end, depth + 1, ("text", "plain"), message=True)
            ]
        return part

    def multipart(
        self, start: int, end: int, boundary: bytes, depth: int, subtype: str
    ) -> list[Part]:
        if not boundary or len(boundary) > 200:
            return []
        data = self.data
        marker = b"--" + boundary
        default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
        children: list[Part] = []
        part_start: int | None = None
        position = data.find(marker, start, end)
        while position >= 0:
            if position == start or data[position - 1] == 0x0A:
                newline = data.find(b"\n", position, end)
                line_end = end if newline < 0 else newline + 1
                rest = data[position + len(marker) : end if newline < 0 else newline].rstrip(b"\r")
                closing = rest.startswith(b"--")
                if closing or not rest.strip(b" \t"):
                    if part_start is not None:
                        part_end = position
                        if part_end > part_start and data[part_end - 1] == 0x0A:
                            part_end -= 1
                            if part_end > part_start and data[part_end - 1] == 0x0D:
                                part_end -= 1
                        children.append(
                            self.entity(part_start, part_end, depth + 1, default, message=False)
                        )
                        if self.parts >= MAX_PARTS:
                            return children
                    if closing:
                        return children
                    part_start = line_end
                    position = data.find(marker, line_end, end)
                    continue
            position = data.find(marker, position + 1, end)
        if part_start is not None and part_start <= end:
            children.append(self.entity(part_start, end, depth + 1, default, message=False))
        return children


def parse_message(data: bytes) -> MessageStructure:
    """Parse a whole message (RFC 5322 + MIME) into its IMAP structure."""
    root = _Parser(data).entity(0, len(data), 0, ("text", "plain"), message=True)
    return MessageStructure(len(data), data[: root.body_start], root)


# -- questions IMAP asks -------------------------------------------------------------


def find_part(root: Part, numbers: Sequence[int]) -> Part | None:
    """The part a section number names (RFC 3501 §6.4.5), or None if there is none.

    ``root`` is a message. Inside a message, part 1 of a single-part body is the
    body itself; the parts of an attached ``message/rfc822`` are the parts of the
    message it encapsulates.
    """
    current = root
    first = True
    for number in numbers:
        if not first and current.is_message and current.children:
            current = current.children[0]
        first = False
        if current.is_multipart:
            if not 1 <= number <= len(current.children):
                return None
            current = current.children[number - 1]
        elif number != 1:
            return None
    return current


def encapsulated(part: Part) -> Part | None:
    """The message a part holds: the part itself for the root, the child of ``message/rfc822``."""
    if part.envelope is not None:
        return part
    if part.is_message and part.children:
        return part.children[0]
    return None


def decode_body(data: bytes, part: Part) -> bytes:
    """The body of ``part`` with its Content-Transfer-Encoding undone (RFC 3516 BINARY)."""
    body = data[part.body_start : part.end]
    encoding = part.encoding or "7bit"
    if encoding in ("7bit", "8bit", "binary"):
        return body
    if encoding == "base64":
        alphabet = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        if len(alphabet) % 4 == 1:
            alphabet = alphabet[:-1]
        try:
            return base64.b64decode(alphabet + b"=" * (-len(alphabet) % 4))
        except (binascii.Error, ValueError):
            raise UnknownEncoding(encoding) from None
    if encoding == "quoted-printable":
        return decode_quoted_printable(body)
    raise UnknownEncoding(encoding)


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


_QP_PADDED = (b" \r\n", b"\t\r\n")


def decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7 decoding, as BINARY (RFC 3516) must return it.

    Python's ``quopri`` keeps the whitespace that ends a line (rule 3: it is
    transport padding and must be deleted) and does not see ``=`` followed by such
    padding as a soft line break, so ``BINARY[1]`` and ``BINARY.SIZE`` of such parts
    were wrong (imaptest ``fetch-binary-mime-qp``). Lines end with CRLF; an ``=``
    that starts no valid escape is kept as is (rule 3 of §6.7's note, robustness).

    When every line ends with CRLF, no CR or LF stands alone and no line but the last
    ends with padding, ``binascii.a2b_qp`` (C) gives the same bytes as the line-by-line
    rules of :func:`_decode_qp_lines` unless the body holds ``==`` (it makes one ``=``
    of it): other bodies take the line-by-line path. SEARCH TEXT decodes
    every quoted-printable French text of a folder; the Python path made it 0.13×
    Dovecot (issue 15).
    """
    lines = body.count(b"\r\n")
    if (
        body.count(b"\n") != lines
        or body.count(b"\r") != lines
        or b"==" in body
        or any(padding in body for padding in _QP_PADDED)
    ):
        return _decode_qp_lines(body)
    head, newline, last = body.rpartition(b"\n")
    return binascii.a2b_qp(head + newline + last.rstrip(b" \t"))


def _decode_qp_lines(body: bytes) -> bytes:
    """:func:`decode_quoted_printable` one line at a time (the reference rules)."""
    out = bytearray()
    lines = body.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        line = line.rstrip(b"\r").rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out += _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), line)
        if index < last and not soft:
            out += b"\r\n"
    return bytes(out)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(?==\?)")


def _decode_word(match: re.Match[str]) -> str:
    charset = match.group(1).split("*", 1)[0]
    text = match.group(3)
    try:
        if match.group(2) in "Bb":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = binascii.a2b_qp(text.encode("ascii"), header=True)
        return data.decode(charset, "replace")
    except (ValueError, LookupError, UnicodeError, binascii.Error):
        return match.group(0)


def decode_words(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded (for SEARCH, never for ENVELOPE).

    A regular expression rather than :func:`email.header.decode_header`: SEARCH
    decodes the headers of every message of a folder, and this is several
    times faster for the same result on well-formed words.
    """
    if "=?" not in value:
        return value
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub(r"\1", value))


def walk(part: Part) -> Iterator[Part]:
    """Every part of the tree, depth first, the root included."""
    yield part
    for child in part.children:
        yield from walk(child)


def text_of(data: bytes, part: Part) -> str | None:
    """The decoded text of a ``text/*`` leaf (transfer encoding and charset), else None."""
    if part.maintype != "text" or part.children:
        return None
    try:
        body = decode_body(data, part)
    except UnknownEncoding:
        body = data[part.body_start : part.end]
    charset = part.charset or "us-ascii"
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")
