"""FETCH: which data each attribute needs, loading it in batches, and writing it out.

pymap loads one message at a time through ``MessageInterface.load_content``
while it writes the response. Against an encrypted blob store in a database
that means one thread hop and one query per message; here a
:class:`FetchLoader` decrypts the messages of a FETCH in batches (structures
from the encrypted cache, whole messages only when a section needs them),
keeps the next batch loading while the current one is written, and drops each
message once written, so ``FETCH 1:* BODY[]`` on a large folder streams with
bounded memory.

The values are pymap :class:`~pymap.parsing.specials.FetchValue` objects inside
pymap :class:`~pymap.parsing.response.specials.FetchResponse` objects, so
pymap's merging of a FETCH with the flag changes of the same message still
applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymap.flags import SessionFlags
from pymap.parsing.primitives import List
from pymap.parsing.response import UntaggedResponse
from pymap.parsing.response.specials import FetchResponse
from pymap.parsing.specials import FetchAttribute, FetchValue
from pymap.parsing.specials.datetime_ import DateTime
from pymap.parsing.specials.fetchattr import FetchPartial
from pymap.parsing.specials.flag import Flag

from caducee.gateway.imap import render
from caducee.gateway.imap.selected import MODSEQ_ATTRIBUTE, ImapMessage, StaticValue
from caducee.mailboxes.imap_store import ImapStore, Principal
from caducee.mailboxes.imap_structure import MessageStructure, find_part

STRUCTURE_ATTRIBUTES = frozenset({b"ENVELOPE", b"BODYSTRUCTURE"})
SIMPLE_ATTRIBUTES = frozenset(
    {b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"MODSEQ", b"EMAILID", b"THREADID"}
)
CONTENT_BATCH_BYTES = 4 * 1024 * 1024
STRUCTURE_BATCH = 500
CONTENT_BATCH = 100
KEEP_FETCHED = 50
"""A FETCH of bytes of at most this many messages keeps them in the process's cache (a
client opening messages); a larger one (a full sync) would only push those out."""

Runner = Callable[..., Awaitable[object]]


@dataclass
class Loaded:
    """What one message's values are computed from while its FETCH response is written."""

    structure: MessageStructure | None = None
    raw: bytes | None = None
    envelope: bytes | None = None
    """The rendered ENVELOPE when only that was loaded (not the structure)."""


def _body_section(attribute: FetchAttribute) -> tuple[list[int], bytes | None, frozenset[bytes]]:
    section = attribute.section
    if section is None:
        return [], None, frozenset()
    return list(section.parts or ()), section.specifier, frozenset(section.headers or ())


def needs(attributes: Sequence[FetchAttribute]) -> tuple[bool, bool]:
    """``(structure, content)``: whether the attributes need the cached structure, the bytes."""
    structure = content = False
    for attribute in attributes:
        name = attribute.value
        if name in SIMPLE_ATTRIBUTES:
            continue
        if name in STRUCTURE_ATTRIBUTES or (name == b"BODY" and attribute.section is None):
            structure = True
            continue
        if name == b"RFC822.HEADER":
            structure = True
            continue
        parts, specifier, _ = _body_section(attribute)
        binary = name.startswith(b"BINARY")
        if parts or binary or specifier not in (None, b"TEXT"):
            structure = True
        if render.section_needs_content(parts, specifier, binary=binary):
            content = True
    return structure, content


def only_envelope(attributes: Sequence[FetchAttribute]) -> bool:
    """True when ENVELOPE is all the attributes need beyond the entry's own data.

    Then the loader reads the ENVELOPE records sealed at delivery instead of the
    structures (issue 15: the cold ``FETCH 1:* (FLAGS ENVELOPE)``).
    """
    found = False
    for attribute in attributes:
        name = attribute.value
        if name == b"ENVELOPE":
            found = True
        elif name not in SIMPLE_ATTRIBUTES:
            return False
    return found


_HEADER_ONLY = frozenset({b"HEADER", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"MIME"})


def reads_body(attributes: Sequence[FetchAttribute]) -> bool:
    """True when the attributes return message content beyond headers (F4: a read).

    ``BODY[]``, ``BODY[TEXT]``, ``BODY[1]``, ``BINARY[…]``, ``RFC822``, ``RFC822.TEXT``
    (peek or not) read; ``BODY[HEADER…]``, ``BODY[n.MIME]``, ``RFC822.HEADER``, ``ENVELOPE``,
    ``BODYSTRUCTURE``, sizes and flags do not.
    """
    for attribute in attributes:
        name = attribute.value
        if name in (b"RFC822", b"RFC822.TEXT"):
            return True
        if name in (b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK"):
            section = attribute.section
            if section is None:
                if name.startswith(b"BINARY"):
                    return True
                continue  # BODY without a section is the structure
            if section.specifier not in _HEADER_ONLY:
                return True
    return False


KNOWN_ENCODINGS = frozenset({None, "7bit", "8bit", "binary", "base64", "quoted-printable"})


def decodable(attributes: Sequence[FetchAttribute], structures: Iterable[MessageStructure]) -> bool:
    """False when a BINARY attribute names a leaf part whose encoding cannot be undone."""
    sections = [
        list(a.section.parts or ()) if a.section is not None else []
        for a in attributes
        if a.value.startswith(b"BINARY")
    ]
    for structure in structures:
        for parts in sections:
            part = find_part(structure.root, parts) if parts else None
            if part is not None and not part.children and part.encoding not in KNOWN_ENCODINGS:
                return False
    return True


def _partial(data: bytes, partial: FetchPartial | None) -> bytes:
    if partial is None:
        return data
    start = partial.start
    end = len(data) if partial.length is None else start + partial.length
    return data[start:end]


def _literal(data: bytes, *, binary: bool = False) -> bytes:
    prefix = b"~" if binary and b"\x00" in data else b""
    return b"%b{%d}\r\n%b" % (prefix, len(data), data)


def response_name(attribute: FetchAttribute) -> bytes:
    """The attribute as the response names it: pymap 0.36.7 leaves ``.PEEK`` on BINARY."""
    name = bytes(attribute.for_response)
    if name.startswith(b"BINARY.PEEK"):
        return b"BINARY" + name[len(b"BINARY.PEEK") :]
    return name


class LazyValue(FetchValue):
    """A fetch value computed from the loaded message when the response is written."""

    __slots__ = ["box", "compute"]

    def __init__(
        self, attribute: FetchAttribute, box: Loaded, compute: Callable[[Loaded], bytes]
    ) -> None:
        super().__init__(attribute)
        self.box = box
        self.compute = compute

    def __bytes__(self) -> bytes:
        return response_name(self.attribute) + b" " + self.compute(self.box)


def _section_value(attribute: FetchAttribute) -> Callable[[Loaded], bytes]:
    name = attribute.value
    binary = name.startswith(b"BINARY")
    parts: list[int]
    specifier: bytes | None
    headers: frozenset[bytes]
    if name == b"RFC822.HEADER":
        parts, specifier, headers = [], b"HEADER", frozenset()
    else:
        parts, specifier, headers = _body_section(attribute)
    size_only = name == b"BINARY.SIZE"

    def compute(box: Loaded) -> bytes:
        try:
            data = render.section(box.structure, box.raw, parts, specifier, headers, binary=binary)
        except render.SectionError:
            data = None
        if data is None:
            return b"0" if size_only else render.NIL
        if size_only:
            return b"%d" % len(data)
        return _literal(_partial(data, attribute.partial), binary=binary)

    return compute


def _envelope(box: Loaded) -> bytes:
    if box.envelope is not None:
        return box.envelope
    structure = box.structure
    if structure is None:
        return render.NIL
    rendered = structure.memo.get("envelope")
    if rendered is None:
        rendered = structure.memo["envelope"] = render.envelope(structure.envelope)
    return rendered


def _structure_value(attribute: FetchAttribute) -> Callable[[Loaded], bytes]:
    if attribute.value == b"ENVELOPE":
        return _envelope
    extended = attribute.value == b"BODYSTRUCTURE"
    key = "bodystructure" if extended else "body"

    def compute(box: Loaded) -> bytes:
        structure = box.structure
        if structure is None:
            return render.NIL
        rendered = structure.memo.get(key)
        if rendered is None:
            rendered = render.bodystructure(structure.root, extended=extended)
            structure.memo[key] = rendered
        return rendered

    return compute


Render = Callable[[ImapMessage, Loaded], bytes]
_FLAG_LISTS: dict[frozenset[Flag], bytes] = {}


def flag_list(flags: frozenset[Flag]) -> bytes:
    """``(\\Flagged \\Seen)``, memoised: a folder uses few distinct flag sets."""
    rendered = _FLAG_LISTS.get(flags)
    if rendered is None:
        rendered = bytes(List(flags, sort=True))
        if len(_FLAG_LISTS) < 10_000:
            _FLAG_LISTS[flags] = rendered
    return rendered


class FetchPlan:
    """What one FETCH command writes for every message: per attribute, a name and a renderer.

    Worked out once per command; each message's response then only calls the
    renderers (pymap builds and formats value objects per message and attribute).
    """

    def __init__(
        self, attributes: Sequence[FetchAttribute], session_flags: SessionFlags, *, condstore: bool
    ) -> None:
        self.items: list[tuple[FetchAttribute, bytes, Render]] = []
        seen: set[bytes] = set()
        for attribute in attributes:
            name = response_name(attribute)
            if name in seen:
                continue
            seen.add(name)
            self.items.append((attribute, name, self._renderer(attribute, session_flags)))
        if condstore and b"MODSEQ" not in seen:
            self.items.append((MODSEQ_ATTRIBUTE, b"MODSEQ", _modseq))

    @staticmethod
    def _renderer(attribute: FetchAttribute, session_flags: SessionFlags) -> Render:
        name = attribute.value
        if name == b"UID":
            return lambda message, _: b"%d" % message.uid
        if name == b"FLAGS":
            return lambda message, _: flag_list(message.get_flags(session_flags))
        if name == b"INTERNALDATE":
            return lambda message, _: bytes(DateTime(message.internal_date))
        if name == b"RFC822.SIZE":
            return lambda message, _: b"%d" % message.size
        if name == b"MODSEQ":
            return _modseq
        if name in (b"EMAILID", b"THREADID"):
            return lambda message, _: render.NIL
        if name in STRUCTURE_ATTRIBUTES or (name == b"BODY" and attribute.section is None):
            structure = _structure_value(attribute)
        else:
            structure = _section_value(attribute)
        return lambda _, box: structure(box)

    def render(self, message: ImapMessage, box: Loaded) -> bytes:
        return b" ".join([name + b" " + item(message, box) for _, name, item in self.items])

    def values(self, message: ImapMessage, box: Loaded) -> list[FetchValue]:
        """The same data as pymap values (when pymap merges two FETCH of one message)."""
        return [
            StaticValue(attribute, name, item(message, box)) for attribute, name, item in self.items
        ]


def _modseq(message: ImapMessage, _: Loaded) -> bytes:
    return b"(%d)" % message.modseq


class PlannedFetchResponse(FetchResponse):
    """One message's FETCH response, rendered by the command's :class:`FetchPlan` when written."""

    def __init__(
        self,
        seq: int,
        message: ImapMessage,
        plan: FetchPlan,
        loader: FetchLoader | None,
        index: int,
    ) -> None:
        UntaggedResponse.__init__(self)
        self.seq = seq
        self.message = message
        self.plan = plan
        self.loader = loader
        self.index = index

    @property
    def data(self) -> dict[FetchAttribute, FetchValue]:
        box = Loaded()
        return {value.attribute: value for value in self.plan.values(self.message, box)}

    @data.setter
    def data(self, value: dict[FetchAttribute, FetchValue]) -> None:
        raise AttributeError("the values of a planned FETCH response are computed")

    async def async_write(self, writer: Any) -> None:
        box = Loaded()
        loader = self.loader
        if loader is not None:
            await loader.fill(self.index, box)
        try:
            self.write_with(writer, box)
        finally:
            if loader is not None:
                loader.release(self.index, box)

    def write(self, writer: Any) -> None:
        self.write_with(writer, Loaded())

    def write_with(self, writer: Any, box: Loaded) -> None:
        writer.write(b"* %d FETCH (%b)\r\n" % (self.seq, self.plan.render(self.message, box)))


class FetchLoader:
    """Loads structures and bytes for the messages of one FETCH, a batch ahead of the writer.

    What the process already holds decrypted (:meth:`ImapStore.cached`: the messages of
    a warm listing, a message opened again) is answered on the event loop with no
    query; only the others are loaded, in batches, in the thread pool.
    """

    def __init__(
        self,
        store: ImapStore,
        principal: Principal,
        folder_id: int,
        run: Callable[..., Awaitable[object]],
        messages: Sequence[ImapMessage],
        *,
        structure: bool,
        content: bool,
        inline: bool = False,
        envelope: bool = False,
    ) -> None:
        self.store = store
        self.principal = principal
        self.folder_id = folder_id
        self.run = run
        self.messages = list(messages)
        self.structure = structure
        self.content = content
        self.envelope = envelope and not structure and not content
        """Only ENVELOPEs: read from their own records, not from the structures."""
        self.held: dict[int, tuple[MessageStructure | None, bytes | None]] = {}
        self.held_envelopes: dict[int, bytes] = {}
        if self.envelope:
            self.held_envelopes = store.cached_envelopes(m.message_id for m in self.messages)
        else:
            self.held = store.cached(
                ((m.message_id, m.blob_id) for m in self.messages),
                structure=structure,
                content=content,
            )
        self.batches: list[list[int]] = self._plan()
        self.batch_of: dict[int, int] = {}
        for number, indexes in enumerate(self.batches):
            for index in indexes:
                self.batch_of[index] = number
        self.tasks: dict[int, asyncio.Task[dict[int, Loaded]]] = {}
        self.inline: dict[int, Loaded] | None = None
        if (
            inline
            and len(self.messages) == 1
            and not self.held
            and not self.held_envelopes
            and self.messages[0].size <= store.blobs.inline_max_bytes
        ):
            # Its bytes are in its database row (no file or object-store read).
            self.inline = {}

    def _plan(self) -> list[list[int]]:
        """Batches of the indexes of the messages not held, by count and by bytes."""
        batches: list[list[int]] = []
        batch: list[int] = []
        size = 0
        limit = CONTENT_BATCH if self.content else STRUCTURE_BATCH
        for index, message in enumerate(self.messages):
            if message.message_id in self.held or message.message_id in self.held_envelopes:
                continue
            batch.append(index)
            size += message.size if self.content else 0
            if len(batch) >= limit or size >= CONTENT_BATCH_BYTES:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)
        return batches

    def _load(self, number: int, *, build: bool = True) -> dict[int, Loaded]:
        wanted = [self.messages[index].uid for index in self.batches[number]]
        store, principal, folder = self.store, self.principal, self.folder_id
        if self.envelope:
            envelopes = store.envelopes(principal, folder, wanted, build=build)
            return {uid: Loaded(envelope=envelopes.get(uid)) for uid in wanted}
        structures = (
            store.structures(principal, folder, wanted, build=build) if self.structure else {}
        )
        keep = len(self.messages) <= KEEP_FETCHED
        contents = store.contents(principal, folder, wanted, keep=keep) if self.content else {}
        return {uid: Loaded(structures.get(uid), contents.get(uid)) for uid in wanted}

    def _start(self, number: int) -> asyncio.Task[dict[int, Loaded]]:
        task = self.tasks.get(number)
        if task is None:
            task = asyncio.ensure_future(self.run(self._load, number))  # type: ignore[arg-type]
            self.tasks[number] = task
        return task

    async def fill(self, index: int, box: Loaded) -> None:
        """Put message ``index`` in ``box`` (loading its batch, and the next, when needed)."""
        envelope = self.held_envelopes.get(self.messages[index].message_id)
        if envelope is not None:
            box.envelope = envelope
            return
        held = self.held.get(self.messages[index].message_id)
        if held is not None:
            box.structure, box.raw = held
            return
        if self.inline is not None:
            # One small message on a local database (SQLite, WAL: a read never waits for a
            # writer): read and decrypt it here. The thread hop and its wake-up cost more
            # than the read itself (issue 15: 200 one-by-one fetches at 0.3× Dovecot).
            if not self.inline:
                self.inline = self._load(0, build=False)
            loaded = self.inline.get(self.messages[index].uid)
            if (
                loaded is not None
                and (loaded.structure is not None or not self.structure)
                and (loaded.envelope is not None or not self.envelope)
            ):
                box.structure, box.raw, box.envelope = loaded.structure, loaded.raw, loaded.envelope
                return
            self.inline = None  # no structure cache yet: building it writes, off the loop
        number = self.batch_of[index]
        task = self._start(number)
        if number + 1 < len(self.batches):
            self._start(number + 1)
        loaded = (task.result() if task.done() else await task).get(self.messages[index].uid)
        if loaded is not None:
            box.structure, box.raw, box.envelope = loaded.structure, loaded.raw, loaded.envelope

    def release(self, index: int, box: Loaded) -> None:
        """Drop message ``index`` once written (and its batch after its last message)."""
        box.structure = box.raw = box.envelope = None
        number = self.batch_of.get(index)
        # A held message stays in ``held`` (two UIDs of the command may share it; what
        # it refers to is in the byte-bounded caches anyway).
        if number is not None and index == self.batches[number][-1]:
            self.tasks.pop(number, None)

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
