"""SORT and THREAD (RFC 5256): orders and trees of messages, computed from their structures.

Clients that show a folder sorted by date or by correspondent, or grouped in
conversations (Thunderbird, Roundcube, mutt), otherwise download every ENVELOPE
to do it themselves. Everything here is pure: the caller has already found the
matching messages (``search``) and loaded their cached structures; these
functions compute keys and order them, in a worker thread.

Comparisons use ``i;ascii-casemap`` (RFC 5256 §2: ASCII letters folded, other
octets compared as they are); dates are the ``Date:`` field in UTC, or the
INTERNALDATE when that field is missing or unreadable (§2.2, "sent date"); ties
keep the folder's order (§3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from caducee.mailboxes.imap_structure import Address, MessageStructure, decode_words

SORT_KEYS = frozenset({b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO"})
THREAD_ALGORITHMS = frozenset({b"ORDEREDSUBJECT", b"REFERENCES"})
_UPPER = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}
_SPACES = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:\s+|(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:)", re.IGNORECASE)
_BLOB_START = re.compile(rf"^{_BLOB}")
_MESSAGE_ID = re.compile(r"<[^<>\s]*>")


@dataclass
class Sortable:
    """What sorting or threading one message needs: its number, its structure, its dates."""

    number: int
    """Sequence number or UID: what the response names."""
    position: int
    """Its place in the folder (the sequence number): the last tie-breaker."""
    internal_date: datetime
    size: int
    structure: MessageStructure | None


def casemap(text: str) -> bytes:
    """``i;ascii-casemap`` key: ASCII letters upper-cased, compared as UTF-8 octets."""
    return text.translate(_UPPER).encode("utf-8", "surrogateescape")


def base_subject(subject: str | None) -> tuple[str, bool]:
    """The base subject (RFC 5256 §2.1) and whether the subject was a reply or forward.

    Encoded words decoded, white space collapsed, then repeatedly: trailing
    ``(fwd)`` and spaces, leading ``Re:``, ``Fw:``, ``Fwd:`` (with ``[blob]``
    prefixes) and leading ``[blob]`` (unless it is all that is left), and a
    ``[Fwd: ...]`` wrapper.
    """
    text = _SPACES.sub(" ", decode_words(subject or ""))
    reply = False
    while True:
        stripped = _TRAILER.sub("", text)  # (2)
        if stripped != text:
            reply = reply or "(fwd)" in text[len(stripped) :].lower()
            text = stripped
        while True:  # (3), (4), (5)
            before = text
            match = _LEADER.match(text)
            while match is not None and match.end() > 0:
                if match.group(0).strip():
                    reply = True
                text = text[match.end() :]
                match = _LEADER.match(text)
            blob = _BLOB_START.match(text)
            if blob is not None and text[blob.end() :]:
                text = text[blob.end() :]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):  # (6)
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def sent_date(item: Sortable) -> datetime:
    """The ``Date:`` field in UTC, or the INTERNALDATE (RFC 5256 §2.2)."""
    structure = item.structure
    if structure is not None:
        values = structure.header_values("date")
        if values:
            try:
                parsed = parsedate_to_datetime(values[0])
            except (TypeError, ValueError, IndexError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:  # "-0000": UTC, per RFC 5322 §3.3
                    parsed = parsed.replace(tzinfo=UTC)
                return parsed.astimezone(UTC)
    return _aware(item.internal_date)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _first_mailbox(addresses: Sequence[Address]) -> str:
    """The ``addr-mailbox`` of the first address; a group's start marker counts (its
    mailbox field is the group name), as Dovecot sorts and imaptest expects."""
    return (addresses[0][2] or "") if addresses else ""


def _key(name: bytes) -> Callable[[Sortable], Any]:
    if name == b"ARRIVAL":
        return lambda item: _aware(item.internal_date)
    if name == b"SIZE":
        return lambda item: item.size
    if name == b"DATE":
        return sent_date
    if name == b"SUBJECT":
        return lambda item: casemap(
            base_subject(item.structure.envelope.subject if item.structure else None)[0]
        )

    def address(item: Sortable) -> bytes:
        if item.structure is None:
            return b""
        envelope = item.structure.envelope
        addresses = {b"FROM": envelope.from_, b"TO": envelope.to, b"CC": envelope.cc}[name]
        return casemap(_first_mailbox(addresses))

    return address


def sort(items: Sequence[Sortable], criteria: Sequence[tuple[bytes, bool]]) -> list[int]:
    """The numbers of ``items`` ordered by ``criteria`` ((key, reverse) pairs), then position.

    Python's sort is stable: sorting by the last criterion first and by the
    first one last gives the lexicographic order, each in its own direction.
    """
    ordered = sorted(items, key=lambda item: item.position)
    for name, reverse in reversed(criteria):
        ordered.sort(key=_key(name), reverse=reverse)
    return [item.number for item in ordered]


# -- THREAD -------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """A thread tree node; ``item`` None is a dummy (a message referred to, not present)."""

    item: Sortable | None = None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def reaches(self, other: Node) -> bool:
        """Whether ``other`` is this node or one of its descendants."""
        stack = [self]
        while stack:
            node = stack.pop()
            if node is other:
                return True
            stack.extend(node.children)
        return False


def _sort_key(node: Node) -> tuple[datetime, int]:
    """A message's sent date and position; a dummy's are those of its first child."""
    while node.item is None and node.children:
        node = node.children[0]
    if node.item is None:
        return datetime.min.replace(tzinfo=UTC), 0
    return sent_date(node.item), node.item.position


def _sort_tree(nodes: list[Node]) -> None:
    for node in nodes:
        _sort_tree(node.children)
    nodes.sort(key=_sort_key)


def ordered_subject(items: Sequence[Sortable]) -> list[Node]:
    """ORDEREDSUBJECT (RFC 5256 §2.2): one thread per base subject, its first message the
    parent of the others (by sent date), threads ordered by their first message's date."""
    ordered = sorted(items, key=lambda item: (sent_date(item), item.position))
    threads: dict[bytes, Node] = {}
    roots: list[Node] = []
    for item in ordered:
        subject = casemap(
            base_subject(item.structure.envelope.subject if item.structure else None)[0]
        )
        node = Node(item)
        root = threads.get(subject)
        if root is None:
            threads[subject] = node
            roots.append(node)
        else:
            root.adopt(node)
    return roots


def _references(structure: MessageStructure | None) -> list[str]:
    if structure is None:
        return []
    ids = _MESSAGE_ID.findall(" ".join(structure.header_values("references")))
    if not ids:
        ids = _MESSAGE_ID.findall(" ".join(structure.header_values("in-reply-to")))[:1]
    return ids


def _message_id(structure: MessageStructure | None) -> str | None:
    if structure is None:
        return None
    found = _MESSAGE_ID.findall(structure.envelope.message_id or "")
    return found[0] if found else None


def references(items: Sequence[Sortable]) -> list[Node]:
    """REFERENCES (RFC 5256 §2.2, after Jamie Zawinski's algorithm), steps 1 to 6."""
    table: dict[str, Node] = {}
    containers: list[Node] = []

    def container_for(message_id: str) -> Node:
        node = table.get(message_id)
        if node is None:
            node = table[message_id] = Node()
            containers.append(node)
        return node

    for item in sorted(items, key=lambda item: item.position):  # (1)
        message_id = _message_id(item.structure)
        container = table.get(message_id) if message_id is not None else None
        if container is None or container.item is not None:
            # A missing or duplicate Message-ID: a unique one ("as if it had none").
            if message_id is not None and message_id not in table:
                container = container_for(message_id)
            else:
                container = Node()
                containers.append(container)
        container.item = item
        previous: Node | None = None
        for reference in _references(item.structure):  # (1A)
            node = container_for(reference)
            if (
                previous is not None
                and node is not previous
                and node.parent is None
                and not node.reaches(previous)
            ):
                previous.adopt(node)
            previous = node
        if container.parent is not None:  # (1B) the message's own references win
            container.parent.children.remove(container)
            container.parent = None
        if previous is not None and not container.reaches(previous):
            previous.adopt(container)
    roots = [node for node in containers if node.parent is None]  # (2)
    roots = _prune(roots, top=True)  # (4)
    roots = _gather_by_subject(roots)  # (5)
    _sort_tree(roots)  # (6)
    return roots


def _prune(nodes: list[Node], *, top: bool) -> list[Node]:
    """Step 4: drop empty dummies; promote a dummy's children, except at the top when it
    has several (RFC 5256 §2.2 (4))."""
    kept: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, top=False)
        for child in node.children:
            child.parent = node
        if node.item is None:
            if not node.children:
                continue
            if not top or len(node.children) == 1:
                for child in node.children:
                    child.parent = node.parent
                kept.extend(node.children)
                continue
        kept.append(node)
    return kept


def _subject_of(node: Node) -> tuple[bytes, bool]:
    target = node if node.item is not None else node.children[0]
    item = target.item
    subject, reply = base_subject(
        item.structure.envelope.subject if item is not None and item.structure else None
    )
    return casemap(subject), reply


def _gather_by_subject(roots: list[Node]) -> list[Node]:
    """Step 5: threads whose roots have the same base subject are merged."""
    table: dict[bytes, Node] = {}
    for node in roots:  # (5B)
        subject, reply = _subject_of(node)
        if not subject:
            continue
        other = table.get(subject)
        if (
            other is None
            or (node.item is None and other.item is not None)
            or (other.item is not None and _subject_of(other)[1] and not reply)
        ):
            table[subject] = node
    result = list(roots)
    for node in roots:  # (5C)
        if node.parent is not None:
            continue  # merged into another thread already
        subject, reply = _subject_of(node)
        other = table.get(subject) if subject else None
        if other is None or other is node:
            continue
        if node.item is None and other.item is None:
            for child in list(node.children):
                other.adopt(child)
            result.remove(node)
        elif other.item is None:
            other.adopt(node)
            result.remove(node)
        elif node.item is None:
            node.adopt(other)
            result.remove(other)
            table[subject] = node
        elif reply and not _subject_of(other)[1]:
            other.adopt(node)
            result.remove(node)
        else:
            dummy = Node()
            result[result.index(other)] = dummy
            dummy.adopt(other)
            dummy.adopt(node)
            result.remove(node)
            table[subject] = dummy
    return result


def render_threads(roots: Sequence[Node]) -> bytes:
    """``(1)(2 3 (4)(5))``: a chain of single children runs on, siblings nest (RFC 5256 §4)."""
    return b"".join(b"(" + _render(node) + b")" for node in roots)


def _render(node: Node) -> bytes:
    parts: list[bytes] = []
    while True:
        if node.item is not None:
            parts.append(b"%d" % node.item.number)
        if len(node.children) == 1:
            node = node.children[0]
            continue
        if node.children:
            parts.append(b"".join(b"(" + _render(child) + b")" for child in node.children))
        break
    return b" ".join(parts)
