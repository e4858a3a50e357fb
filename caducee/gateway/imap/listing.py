"""LIST and LSUB answers: patterns, LIST-EXTENDED selection and return options (RFC 5258).

pymap matches LIST patterns with a regular expression per pattern (``*`` as
``.*?``, ``%`` as ``[^/]*?``): a pattern with many wildcards against a long
name backtracks for ever (``LIST "" "*a*a*a*a*a*a*a*a*a*a*a*b"`` against a
200-character name of ``a``). :class:`Pattern` matches in one pass over the
name instead (the pattern's positions as the bits of an integer, advanced a
character at a time): time linear in the name, whatever the pattern.

:func:`list_entries` computes what a LIST or LSUB returns from the account's
folders and subscriptions. pymap's :class:`~pymap.listtree.ListTree` gives the
order (INBOX first, then depth first) and the attributes of plain LIST/LSUB,
which stay what they were; the extended forms add ``\\Subscribed``,
``\\NonExistent`` and ``CHILDINFO``. Bounded: at most :data:`MAX_PATTERNS`
patterns per command, each as long as pymap's parser allows a string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pymap.listtree import ListTree
from pymap.parsing.response.specials import ListResponse

MAX_PATTERNS = 20
"""Patterns one LIST may carry (``LIST "" (a b c ...)``); more is a ``BAD``."""

INBOX = "INBOX"


class Pattern:
    """An IMAP LIST pattern (``*`` any run, ``%`` any run without the delimiter).

    Bit *i* of the state means "the first *i* pattern tokens match what was read".
    Consecutive wildcards are merged first (``%*`` is ``*``, ``%%`` is ``%``), so
    one shift closes a state over the wildcards that may match nothing.
    """

    __slots__ = ("_accept", "_any", "_literals", "_no_delimiter", "delimiter", "text")

    def __init__(self, text: str, delimiter: str) -> None:
        self.text = text
        self.delimiter = delimiter
        tokens: list[str] = []
        for char in text:
            if char in "*%" and tokens and tokens[-1] in ("*", "%"):
                tokens[-1] = "*" if "*" in (char, tokens[-1]) else "%"
            else:
                tokens.append(char)
        self._literals: dict[str, int] = {}
        self._any = 0
        self._no_delimiter = 0
        for index, char in enumerate(tokens):
            bit = 1 << index
            if char == "*":
                self._any |= bit
            elif char == "%":
                self._no_delimiter |= bit
            else:
                self._literals[char] = self._literals.get(char, 0) | bit
        self._accept = 1 << len(tokens)

    def _close(self, state: int) -> int:
        return state | ((state & (self._any | self._no_delimiter)) << 1)

    def matches(self, name: str) -> bool:
        state = self._close(1)
        literals = self._literals
        for char in name:
            moved = (state & literals.get(char, 0)) << 1
            moved |= state & self._any
            if char != self.delimiter:
                moved |= state & self._no_delimiter
            state = self._close(moved)
            if not state:
                return False
        return bool(state & self._accept)

    def matches_mailbox(self, name: str) -> bool:
        """Like :meth:`matches`; ``INBOX`` in any case, as RFC 3501 §5.1 names it."""
        if name == INBOX:
            return self.matches(INBOX) or Pattern(self.text.upper(), self.delimiter).matches(INBOX)
        return self.matches(name)


@dataclass(frozen=True)
class ListRequest:
    """What one LIST (or LSUB) asks for."""

    reference: str
    patterns: Sequence[str]
    lsub: bool = False
    extended: bool = False
    """True when the command used LIST-EXTENDED syntax (options or several patterns)."""
    select_subscribed: bool = False
    select_special_use: bool = False
    recursive: bool = False
    return_subscribed: bool = False
    return_children: bool = False


@dataclass(frozen=True)
class ListEntry:
    name: str
    attributes: list[bytes]
    child_info: bool = False
    """``("CHILDINFO" ("SUBSCRIBED"))``: a subscribed descendant not matched (RFC 5258 §3.5)."""


def _ancestors(name: str, delimiter: str) -> Iterable[str]:
    parts = name.split(delimiter)
    for depth in range(1, len(parts)):
        yield delimiter.join(parts[:depth])


def _ordered(names: Iterable[str]) -> list[str]:
    """INBOX first, then by name (the order LIST always had)."""
    return sorted(set(names), key=lambda name: (name != INBOX, name))


def list_entries(
    request: ListRequest,
    existing: Mapping[str, str | None],
    subscribed: frozenset[str],
    delimiter: str,
) -> list[ListEntry]:
    """The entries a LIST/LSUB returns, in order; ``existing`` maps folder names to their
    special-use attribute, ``subscribed`` holds the subscribed names."""
    patterns = [Pattern(request.reference + text, delimiter) for text in request.patterns]

    def matched(name: str) -> bool:
        return any(pattern.matches_mailbox(name) for pattern in patterns)

    def special(name: str) -> list[bytes]:
        use = existing.get(name)
        return [use.lstrip("\\").encode("ascii")] if use else []

    if request.lsub:
        # RFC 3501 §6.3.9: subscribed names; "%" stops at an unsubscribed level that has
        # subscribed inferiors, listed \Noselect. Attributes as pymap's tree gives them.
        tree = ListTree(delimiter).update(*_ordered(subscribed))
        lsub: list[ListEntry] = []
        for entry in tree.list():
            if not matched(entry.name):
                continue
            if entry.name not in subscribed:
                lsub.append(ListEntry(entry.name, [b"Noselect"]))
            else:
                lsub.append(ListEntry(entry.name, [*entry.attributes, *special(entry.name)]))
        return lsub

    if not request.extended:
        tree = ListTree(delimiter).update(INBOX, *_ordered(existing))
        return [
            ListEntry(entry.name, [*entry.attributes, *special(entry.name)])
            for entry in tree.list()
            if entry.name in existing and matched(entry.name)
        ]

    def selected(name: str) -> bool:
        if request.select_subscribed and name not in subscribed:
            return False
        return not (request.select_special_use and not existing.get(name))

    candidates = set(existing)
    if request.select_subscribed:
        candidates = set(subscribed)
        if request.recursive:
            for name in subscribed:
                candidates.update(_ancestors(name, delimiter))
    # Which candidates have a selected descendant that no pattern matches (CHILDINFO).
    informed: set[str] = set()
    if request.recursive:
        for name in subscribed:
            if selected(name) and not matched(name):
                informed.update(_ancestors(name, delimiter))
    parents = {parent for name in existing for parent in _ancestors(name, delimiter)}
    tree = ListTree(delimiter).update(*_ordered(candidates))
    result: list[ListEntry] = []
    for entry in tree.list():
        name = entry.name
        if name not in candidates or not matched(name):
            continue
        child_info = name in informed
        if not selected(name) and not child_info:
            continue
        attributes: list[bytes] = []
        if name not in existing:
            attributes.append(b"NonExistent")
            if name in parents:
                attributes.append(b"HasChildren")
        else:
            attributes.append(b"HasChildren" if name in parents else b"HasNoChildren")
        if (request.return_subscribed or request.select_subscribed) and name in subscribed:
            attributes.append(b"Subscribed")
        attributes.extend(special(name))
        result.append(ListEntry(name, attributes, child_info))
    return result


class ExtendedListResponse(ListResponse):
    """A ``LIST`` (or ``LSUB``) line, with ``("CHILDINFO" ("SUBSCRIBED"))`` when asked."""

    def __init__(
        self,
        mailbox: str,
        sep: str | None,
        attrs: Iterable[bytes],
        *,
        lsub: bool = False,
        child_info: bool = False,
    ) -> None:
        super().__init__(mailbox, sep, attrs)
        self.lsub = lsub
        self.child_info = child_info

    @property
    def text(self) -> bytes:
        text = super().text
        if self.lsub:
            text = text.replace(b"LIST", b"LSUB", 1)
        if self.child_info:
            text += b' ("CHILDINFO" ("SUBSCRIBED"))'
        return text
