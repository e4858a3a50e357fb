"""Command parsers pymap 0.36.7 lacks: ENABLE, NAMESPACE, UNSELECT, CONDSTORE and QRESYNC syntax,
LIST-EXTENDED, LIST-STATUS, SORT and THREAD (RFC 5161, 2342, 3691, 7162, 5258, 5819, 5256).

pymap parses RFC 3501 well and already reads the RFC 4466 option lists that
CONDSTORE uses (``SELECT INBOX (CONDSTORE)``, ``FETCH 1:* (FLAGS) (CHANGEDSINCE
12)``, ``STORE 1 (UNCHANGEDSINCE 12) +FLAGS (\\Seen)``), so those commands are
pymap's own. What it cannot parse is added here, by subclassing its command
classes and registering them under the same names:

* ``ENABLE``, ``NAMESPACE``, ``UNSELECT``, ``SORT`` and ``THREAD`` (new commands);
* the ``MODSEQ`` fetch attribute (``FETCH 1:* (FLAGS MODSEQ)``);
* the ``MODSEQ`` search key, also inside ``OR`` and parenthesised lists;
* the ``HIGHESTMODSEQ`` status attribute;
* LIST with LIST-EXTENDED and LIST-STATUS syntax (selection options, several
  patterns, ``RETURN (SUBSCRIBED CHILDREN SPECIAL-USE STATUS (...))``);
* FETCH attributes whose ``HEADER.FIELDS`` list is echoed as given (``sections``).

The ``UID`` variants are redeclared so that ``UID FETCH`` and ``UID SEARCH``
use the extended parsers too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pymap.parsing import EndLine, Params, Space
from pymap.parsing.command import CommandAuth, CommandNoArgs, CommandSelect
from pymap.parsing.command.auth import ListCommand, StatusCommand
from pymap.parsing.command.select import FetchCommand, SearchCommand
from pymap.parsing.commands import Commands
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import Atom, List, Number, String
from pymap.parsing.specials import (
    AString,
    ExtensionOptions,
    FetchAttribute,
    Mailbox,
    SearchKey,
    SequenceSet,
    StatusAttribute,
)

from .listing import MAX_PATTERNS
from .names import decode_client_mailbox_name
from .sections import EchoedFetchAttribute
from .sorting import SORT_KEYS, THREAD_ALGORITHMS

MODSEQ = b"MODSEQ"
CONDSTORE = b"CONDSTORE"
QRESYNC = b"QRESYNC"


class EnableCommand(CommandAuth):
    """``ENABLE capability...`` (RFC 5161)."""

    command = b"ENABLE"

    def __init__(self, tag: bytes, capabilities: Sequence[bytes]) -> None:
        super().__init__(tag)
        self.capabilities = list(capabilities)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[EnableCommand, memoryview]:
        capabilities: list[bytes] = []
        while True:
            try:
                _, after = Space.parse(buf, params)
                atom, buf = Atom.parse(after, params)
            except NotParseable:
                break
            capabilities.append(atom.value.upper())
        if not capabilities:
            raise NotParseable(buf)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, capabilities), buf


class NamespaceCommand(CommandNoArgs, CommandAuth):
    """``NAMESPACE`` (RFC 2342)."""

    command = b"NAMESPACE"


_ATTRIBUTE_START = re.compile(rb" *MODSEQ(?=[\s)]|$)", re.IGNORECASE)
_MACROS = {
    b"ALL": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"),
    b"FAST": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"),
    b"FULL": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"),
}


def _fetch_attribute(buf: memoryview, params: Params) -> tuple[FetchAttribute, memoryview]:
    match = _ATTRIBUTE_START.match(buf)
    if match is not None:
        return FetchAttribute(MODSEQ), buf[match.end() :]
    return EchoedFetchAttribute.parse(buf, params)


class CondstoreFetchCommand(FetchCommand):
    """FETCH that also knows the ``MODSEQ`` attribute."""

    @classmethod
    def _attributes(
        cls, buf: memoryview, params: Params
    ) -> tuple[Sequence[FetchAttribute], memoryview]:
        try:
            atom, after = Atom.parse(buf, params)
        except NotParseable:
            pass
        else:
            macro = _MACROS.get(atom.value.upper())
            if macro is not None:
                return [FetchAttribute(name) for name in macro], after
        start = len(buf) - len(bytes(buf).lstrip(b" "))
        if bytes(buf[start : start + 1]) != b"(":
            attribute, buf = _fetch_attribute(buf, params)
            return [attribute], buf
        buf = buf[start + 1 :]
        attributes: list[FetchAttribute] = []
        while True:
            stripped = bytes(buf[:1])
            if stripped == b" ":
                buf = buf[1:]
                continue
            if stripped == b")":
                buf = buf[1:]
                break
            attribute, buf = _fetch_attribute(buf, params)
            attributes.append(attribute)
        if not attributes:
            raise NotParseable(buf)
        return attributes, buf

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[FetchCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        sequence_set, buf = SequenceSet.parse(buf, params)
        _, buf = Space.parse(buf, params)
        attributes, buf = cls._attributes(buf, params)
        if params.uid and not any(attr.value == b"UID" for attr in attributes):
            attributes = [*attributes, FetchAttribute(b"UID")]
        options, buf = ExtensionOptions.parse(buf, params)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, sequence_set, attributes, options), buf


class UidCondstoreFetchCommand(CondstoreFetchCommand):
    command = b"UID FETCH"
    delegate = FetchCommand
    uid: ClassVar[bool] = True

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[FetchCommand, memoryview]:
        return super().parse(buf, params.copy(uid=True))


class ModseqSearchKey(SearchKey):
    """A search key parser that also reads ``MODSEQ [entry type] n`` (RFC 7162 §3.1.5)."""

    _modseq = re.compile(rb' *MODSEQ +(?:"[^"]*" +(?:PRIV|SHARED|ALL) +)?(\d+)', re.IGNORECASE)
    _or = re.compile(rb" *OR +", re.IGNORECASE)
    _not = re.compile(rb" *NOT +", re.IGNORECASE)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SearchKey, memoryview]:
        inverse = False
        match = cls._not.match(buf)
        if match is not None:
            inverse = True
            buf = buf[match.end() :]
        match = cls._modseq.match(buf)
        if match is not None:
            return SearchKey(MODSEQ, int(match.group(1)), inverse), buf[match.end() :]
        match = cls._or.match(buf)
        if match is not None:
            left, buf = cls.parse(buf[match.end() :], params)
            _, buf = Space.parse(buf, params)
            right, buf = cls.parse(buf, params)
            return SearchKey(b"OR", (left, right), inverse), buf
        if bytes(buf[:64]).lstrip(b" ").startswith(b"("):
            keys, buf = List.parse(buf, params.copy(expected=[ModseqSearchKey]))
            return SearchKey(b"KEYSET", keys.get_as(SearchKey), inverse), buf
        key, buf = SearchKey.parse(buf, params)
        return (key.not_inverse if inverse else key), buf


ESEARCH_RETURNS = frozenset({b"MIN", b"MAX", b"ALL", b"COUNT"})
_RETURN = re.compile(rb" *RETURN *\(", re.IGNORECASE)


class CondstoreSearchCommand(SearchCommand):
    """SEARCH whose keys may include ``MODSEQ``, with ``RETURN (...)`` (ESEARCH, RFC 4731).

    ``returns`` is None for a plain SEARCH, else the result options asked for (empty
    means ``ALL``); options other than MIN, MAX, ALL and COUNT are a ``BAD``.
    """

    returns: frozenset[bytes] | None = None

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SearchCommand, memoryview]:
        match = _RETURN.match(buf)
        if match is not None:
            options, buf = ExtensionOptions.parse(buf[match.end() - 1 :], params)
            returns = frozenset(name.upper() for name in options.value)
            if not returns <= ESEARCH_RETURNS or any(
                len(argument.value) for argument in options.value.values()
            ):
                raise NotParseable(buf)
            command, buf = cls._parse_rest(buf, params, ExtensionOptions.empty())
            command.returns = returns
            return command, buf
        options, buf = cls._parse_options(buf, params)
        return cls._parse_rest(buf, params, options)

    @classmethod
    def _parse_rest(
        cls, buf: memoryview, params: Params, options: ExtensionOptions
    ) -> tuple[CondstoreSearchCommand, memoryview]:
        charset, buf = cls._parse_charset(buf, params)
        keys: list[SearchKey] = []
        key_params = params.copy(charset=charset)
        while True:
            try:
                _, after = Space.parse(buf, params)
                key, buf = ModseqSearchKey.parse(after, key_params)
            except NotParseable:
                if not keys:
                    raise
                break
            keys.append(key)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, keys, charset, options), buf


class UidCondstoreSearchCommand(CondstoreSearchCommand):
    command = b"UID SEARCH"
    delegate = SearchCommand
    uid: ClassVar[bool] = True

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SearchCommand, memoryview]:
        return super().parse(buf, params.copy(uid=True))


class ModseqStatusAttribute(StatusAttribute):
    """Status attributes, ``HIGHESTMODSEQ`` included."""

    valid_statuses = {*StatusAttribute.valid_statuses, b"HIGHESTMODSEQ"}  # noqa: RUF012


class CondstoreStatusCommand(StatusCommand):
    """STATUS that accepts ``HIGHESTMODSEQ``."""

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[StatusCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        attributes, after = List.parse(buf, params.copy(expected=[ModseqStatusAttribute]))
        if not attributes.value:
            raise NotParseable(buf)
        _, buf = EndLine.parse(after, params)
        return cls(params.tag, mailbox, attributes.get_as(StatusAttribute)), buf


def number_option(options: ExtensionOptions, name: bytes) -> int | None:
    """The numeric argument of an RFC 4466 option (``CHANGEDSINCE 12``), if given."""
    argument = options.get(name)
    if argument is None:
        return None
    values = list(argument.value)
    if len(values) != 1 or not isinstance(values[0], Number):
        raise NotParseable(memoryview(bytes(argument)))
    return int(values[0].value)


@dataclass(frozen=True)
class Resync:
    """The ``QRESYNC (uidvalidity modseq [known-uids [seq-match-data]])`` parameters of a
    SELECT or EXAMINE (RFC 7162 §3.2.5); the sequence-match data is not kept."""

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None


_NUMBER = re.compile(rb"[1-9][0-9]{0,19}\Z")


def qresync_option(options: ExtensionOptions) -> Resync | None:
    """The QRESYNC parameters of a SELECT/EXAMINE, if given; ``ValueError`` if malformed."""
    argument = options.get(QRESYNC)
    if argument is None:
        return None
    values = list(argument.value)
    if len(values) == 1 and isinstance(values[0], List):
        values = list(values[0].value)
    if not 2 <= len(values) <= 4:
        raise ValueError("QRESYNC takes 2 to 4 values")
    numbers = [bytes(value) for value in values[:2]]
    if not all(_NUMBER.match(number) for number in numbers):
        raise ValueError("QRESYNC uidvalidity and modseq are positive numbers")
    known: SequenceSet | None = None
    if len(values) >= 3:
        if isinstance(values[2], List):
            if len(values) != 3:
                raise ValueError("misplaced sequence-match data")
        else:
            try:
                known, rest = SequenceSet.parse(memoryview(bytes(values[2])), Params(uid=True))
            except NotParseable:
                raise ValueError("invalid known UIDs") from None
            if bytes(rest) or any(str(part) == "*" for part in known.sequences):
                raise ValueError("invalid known UIDs")
        if len(values) == 4 and not isinstance(values[3], List):
            raise ValueError("invalid sequence-match data")
    return Resync(int(numbers[0]), int(numbers[1]), known)


class UnselectCommand(CommandNoArgs, CommandSelect):
    """``UNSELECT`` (RFC 3691): leave the selected folder like CLOSE, without expunging."""

    command = b"UNSELECT"


_LIST_RETURN = re.compile(rb" +RETURN +\(", re.IGNORECASE)
_WORD = re.compile(rb" *([A-Za-z][A-Za-z0-9.-]*)")
LIST_SELECTIONS = frozenset({b"SUBSCRIBED", b"REMOTE", b"RECURSIVEMATCH", b"SPECIAL-USE"})
LIST_RETURNS = frozenset({b"SUBSCRIBED", b"CHILDREN", b"SPECIAL-USE", b"STATUS"})


def _words(
    buf: memoryview, params: Params, known: frozenset[bytes]
) -> tuple[list[bytes], memoryview]:
    """``"(" [word *(SP word)] ")"`` of known option names (anything else is a ``BAD``);
    ``STATUS`` is left for the caller when its list follows."""
    if bytes(buf[:1]) != b"(":
        raise NotParseable(buf)
    buf = buf[1:]
    words: list[bytes] = []
    while True:
        if bytes(buf[:1]) == b")":
            return words, buf[1:]
        if len(words) >= len(known) + 1:
            raise NotParseable(buf)
        match = _WORD.match(buf)
        if match is None:
            raise NotParseable(buf)
        word = match.group(1).upper()
        if word not in known:
            raise NotParseable(buf)
        buf = buf[match.end() :]
        if word == b"STATUS":
            return [*words, word], buf
        words.append(word)
        if bytes(buf[:1]) == b" ":
            buf = buf[1:]


class ExtendedListCommand(ListCommand):
    """LIST with LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) syntax::

        LIST [(selection options)] reference (pattern | (pattern ...)) [RETURN (options)]

    Selection options: SUBSCRIBED, REMOTE (no remote mailboxes here: no effect),
    RECURSIVEMATCH (with SUBSCRIBED only, RFC 5258 §3.1), SPECIAL-USE (RFC 6154 §3);
    return options: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS (...). Unknown options
    are a ``BAD`` (RFC 5258 §3.1). At most ``listing.MAX_PATTERNS`` patterns.
    ``extended`` tells whether the command used any of this syntax: a plain LIST
    answers as it always did.
    """

    patterns: Sequence[str] = ()
    selection: frozenset[bytes] = frozenset()
    returns: frozenset[bytes] = frozenset()
    status: Sequence[StatusAttribute] | None = None
    extended: bool = False

    @classmethod
    def _pattern(cls, buf: memoryview, params: Params) -> tuple[str, memoryview]:
        match = cls._list_mailbox_pattern.match(buf)
        if match:
            return decode_client_mailbox_name(match.group(0)), buf[match.end() :]
        quoted, buf = String.parse(buf, params)
        return decode_client_mailbox_name(quoted.value), buf

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ListCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        extended = False
        selection: list[bytes] = []
        if bytes(buf[:1]) == b"(":
            selection, buf = _words(buf, params, LIST_SELECTIONS)
            _, buf = Space.parse(buf, params)
            extended = True
            chosen = set(selection) - {b"REMOTE"}
            if b"RECURSIVEMATCH" in chosen and b"SUBSCRIBED" not in chosen:
                raise NotParseable(buf)
        ref_name, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        patterns: list[str] = []
        if bytes(buf[:1]) == b"(":
            extended = True
            buf = buf[1:]
            while True:
                if len(patterns) >= MAX_PATTERNS:
                    raise NotParseable(buf)
                pattern, buf = cls._pattern(buf, params)
                patterns.append(pattern)
                if bytes(buf[:1]) == b")":
                    buf = buf[1:]
                    break
                _, buf = Space.parse(buf, params)
        else:
            pattern, buf = cls._pattern(buf, params)
            patterns.append(pattern)
        returns: list[bytes] = []
        status: Sequence[StatusAttribute] | None = None
        match = _LIST_RETURN.match(buf)
        if match is not None:
            buf = buf[match.end() - 1 :]
            while True:
                words, buf = _words(buf, params, LIST_RETURNS)
                returns.extend(words)
                if not words or words[-1] != b"STATUS":
                    break
                # STATUS (attributes), then maybe more options before the closing ")".
                _, buf = Space.parse(buf, params)
                attributes, buf = List.parse(buf, params.copy(expected=[ModseqStatusAttribute]))
                if not attributes.value or status is not None:
                    raise NotParseable(buf)
                status = attributes.get_as(StatusAttribute)
                rest = bytes(buf[:1])
                if rest == b")":
                    buf = buf[1:]
                    break
                if rest != b" ":
                    raise NotParseable(buf)
                buf = memoryview(b"(" + bytes(buf[1:]))
        _, buf = EndLine.parse(buf, params)
        command = cls(params.tag, ref_name.value, patterns[0])
        command.patterns = patterns
        command.selection = frozenset(selection)
        command.returns = frozenset(returns)
        command.status = status
        command.extended = extended or bool(set(returns) - {b"STATUS"})
        return command, buf


_SORT_CRITERIA = re.compile(rb" \(((?:REVERSE +)?[A-Z]+(?: +(?:REVERSE +)?[A-Z]+)*)\)", re.I)
_THREAD_ALGORITHM = re.compile(rb" ([A-Z]+)", re.IGNORECASE)


def _search_criteria(buf: memoryview, params: Params) -> tuple[str, list[SearchKey], memoryview]:
    """``SP charset 1*(SP search-key)`` as SORT and THREAD take them (RFC 5256 §4);
    the charset is ``""`` when Python does not know it."""
    _, buf = Space.parse(buf, params)
    name, buf = AString.parse(buf, params)
    charset = bytes(name.value).decode("ascii", "replace")
    try:
        b" ".decode(charset)
    except LookupError:
        charset = ""  # answered NO [BADCHARSET] (RFC 5256 §3); the keys still parse
    keys: list[SearchKey] = []
    key_params = params.copy(charset=charset or "utf-8")
    while True:
        try:
            _, after = Space.parse(buf, params)
            key, buf = ModseqSearchKey.parse(after, key_params)
        except NotParseable:
            if not keys:
                raise
            break
        keys.append(key)
    _, buf = EndLine.parse(buf, params)
    return charset, keys, buf


class SortCommand(CommandSelect):
    """``SORT (criteria) charset search-keys`` (RFC 5256 §3).

    ``criteria`` is a list of (key, reverse) pairs; an unknown key is a ``BAD``.
    """

    command = b"SORT"

    def __init__(
        self,
        tag: bytes,
        criteria: Sequence[tuple[bytes, bool]],
        charset: str,
        keys: Sequence[SearchKey],
    ) -> None:
        super().__init__(tag)
        self.criteria = list(criteria)
        self.charset = charset
        self.keys = frozenset(keys)

    @property
    def uid(self) -> bool:
        return False

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SortCommand, memoryview]:
        match = _SORT_CRITERIA.match(buf)
        if match is None:
            raise NotParseable(buf)
        criteria: list[tuple[bytes, bool]] = []
        reverse = False
        for word in match.group(1).upper().split():
            if word == b"REVERSE":
                reverse = True
                continue
            if word not in SORT_KEYS:
                raise NotParseable(buf)
            criteria.append((word, reverse))
            reverse = False
        charset, keys, buf = _search_criteria(buf[match.end() :], params)
        return cls(params.tag, criteria, charset, keys), buf


class UidSortCommand(SortCommand):
    command = b"UID SORT"
    delegate = SortCommand

    @property
    def uid(self) -> bool:
        return True


class ThreadCommand(CommandSelect):
    """``THREAD algorithm charset search-keys`` (RFC 5256 §3): ORDEREDSUBJECT, REFERENCES."""

    command = b"THREAD"

    def __init__(
        self, tag: bytes, algorithm: bytes, charset: str, keys: Sequence[SearchKey]
    ) -> None:
        super().__init__(tag)
        self.algorithm = algorithm
        self.charset = charset
        self.keys = frozenset(keys)

    @property
    def uid(self) -> bool:
        return False

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ThreadCommand, memoryview]:
        match = _THREAD_ALGORITHM.match(buf)
        if match is None or match.group(1).upper() not in THREAD_ALGORITHMS:
            raise NotParseable(buf)
        charset, keys, buf = _search_criteria(buf[match.end() :], params)
        return cls(params.tag, match.group(1).upper(), charset, keys), buf


class UidThreadCommand(ThreadCommand):
    command = b"UID THREAD"
    delegate = ThreadCommand

    @property
    def uid(self) -> bool:
        return True


def caducee_commands() -> Commands:
    """pymap's commands with ours registered over them."""
    commands = Commands()
    for command in (
        EnableCommand,
        NamespaceCommand,
        CondstoreFetchCommand,
        UidCondstoreFetchCommand,
        CondstoreSearchCommand,
        UidCondstoreSearchCommand,
        CondstoreStatusCommand,
        UnselectCommand,
        ExtendedListCommand,
        SortCommand,
        UidSortCommand,
        ThreadCommand,
        UidThreadCommand,
    ):
        commands.register(command)
    return commands
