"""Command parsers pymap 0.36.7 lacks: ENABLE, NAMESPACE, UNSELECT, CONDSTORE syntax, LIST-STATUS,
SORT and THREAD (RFC 5161, 2342, 3691, 7162, 5819, 5256).

pymap parses RFC 3501 well and already reads the RFC 4466 option lists that
CONDSTORE uses (``SELECT INBOX (CONDSTORE)``, ``FETCH 1:* (FLAGS) (CHANGEDSINCE
12)``, ``STORE 1 (UNCHANGEDSINCE 12) +FLAGS (\\Seen)``), so those commands are
pymap's own. What it cannot parse is added here, by subclassing its command
classes and registering them under the same names:

* ``ENABLE``, ``NAMESPACE``, ``UNSELECT``, ``SORT`` and ``THREAD`` (new commands);
* the ``MODSEQ`` fetch attribute (``FETCH 1:* (FLAGS MODSEQ)``);
* the ``MODSEQ`` search key, also inside ``OR`` and parenthesised lists;
* the ``HIGHESTMODSEQ`` status attribute;
* ``LIST ref pattern RETURN (STATUS (...))`` (LIST-STATUS);
* FETCH attributes whose ``HEADER.FIELDS`` list is echoed as given (``sections``).

The ``UID`` variants are redeclared so that ``UID FETCH`` and ``UID SEARCH``
use the extended parsers too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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

from .names import decode_client_mailbox_name
from .sections import EchoedFetchAttribute
from .sorting import SORT_KEYS, THREAD_ALGORITHMS

MODSEQ = b"MODSEQ"
CONDSTORE = b"CONDSTORE"


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


class UnselectCommand(CommandNoArgs, CommandSelect):
    """``UNSELECT`` (RFC 3691): leave the selected folder like CLOSE, without expunging."""

    command = b"UNSELECT"


_LIST_RETURN = re.compile(rb" +RETURN +\(", re.IGNORECASE)
_STATUS_OPTION = re.compile(rb" *STATUS +", re.IGNORECASE)


class StatusListCommand(ListCommand):
    """``LIST ref pattern RETURN (STATUS (...))`` (LIST-STATUS, RFC 5819), or a plain LIST.

    ``status`` is None for a plain LIST (or ``RETURN ()``), else the status attributes
    asked for. Only the STATUS return option is understood: LIST-EXTENDED selection
    options and other return options are a ``BAD`` (we do not announce LIST-EXTENDED).
    """

    status: Sequence[StatusAttribute] | None = None

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ListCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        ref_name, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        match = cls._list_mailbox_pattern.match(buf)
        if match:
            pattern = decode_client_mailbox_name(match.group(0))
            buf = buf[match.end() :]
        else:
            quoted, buf = String.parse(buf, params)
            pattern = decode_client_mailbox_name(quoted.value)
        status: Sequence[StatusAttribute] | None = None
        match = _LIST_RETURN.match(buf)
        if match is not None:
            buf = buf[match.end() :]
            option = _STATUS_OPTION.match(buf)
            if option is not None:
                attributes, buf = List.parse(
                    buf[option.end() :], params.copy(expected=[ModseqStatusAttribute])
                )
                if not attributes.value:
                    raise NotParseable(buf)
                status = attributes.get_as(StatusAttribute)
            closing = bytes(buf[:64]).lstrip(b" ")
            if not closing.startswith(b")"):
                raise NotParseable(buf)
            buf = buf[len(bytes(buf[:64])) - len(closing) + 1 :]
        _, buf = EndLine.parse(buf, params)
        command = cls(params.tag, ref_name.value, pattern)
        command.status = status
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
        StatusListCommand,
        SortCommand,
        UidSortCommand,
        ThreadCommand,
        UidThreadCommand,
    ):
        commands.register(command)
    return commands
