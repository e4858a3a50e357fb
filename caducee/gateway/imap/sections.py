"""FETCH sections answered as the client wrote them (RFC 3501 §6.4.5, §7.4.2).

pymap 0.36.7 parses ``BODY[HEADER.FIELDS (from from)]`` into a *set* of field
names and writes the response's section from that set, sorted: the client that
asked for ``(from from)`` (or ``(subject from)``) is answered ``(FROM)`` (or
``(FROM SUBJECT)``) and cannot match the response to its request (imaptest
``fetch-body``; Dovecot echoes the list in the order given, duplicates included).
:class:`EchoedFetchAttribute` keeps the list as given (upper-cased, as pymap and
Dovecot write it) for the response's name and its hash (two sections that differ
only by their list are two response items); the set pymap keeps is still what
selects the header lines, so which lines come back does not change.
"""

from __future__ import annotations

from pymap.parsing import Params
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import List
from pymap.parsing.specials import FetchAttribute
from pymap.parsing.specials.astring import AString
from pymap.parsing.specials.fetchattr import FetchPartial

__all__ = ["EchoedFetchAttribute", "EchoedSection"]

_FIELD_LISTS = (b"HEADER.FIELDS", b"HEADER.FIELDS.NOT")


class EchoedSection(FetchAttribute.Section):
    """A section whose header-field list also keeps the client's order and duplicates."""

    def __init__(
        self,
        parts: list[int],
        specifier: bytes | None,
        as_given: tuple[bytes, ...],
    ) -> None:
        super().__init__(parts, specifier, frozenset(as_given))
        self.as_given = tuple(name.upper() for name in as_given)

    def __hash__(self) -> int:
        return hash((tuple(self.parts), self.specifier, self.as_given))


class EchoedFetchAttribute(FetchAttribute):
    """A fetch attribute whose response name repeats the client's header-field list."""

    @classmethod
    def _parse_section(
        cls, buf: memoryview, params: Params
    ) -> tuple[FetchAttribute.Section, memoryview]:
        section, after = super()._parse_section(buf, params)
        if section.specifier not in _FIELD_LISTS:
            return section, after
        # pymap accepted the section, so the list after the specifier parses: read it again,
        # in order. The specifier is the first atom after the part numbers.
        start = bytes(buf[: len(buf) - len(after)]).upper().find(section.specifier)
        list_buf = buf[start + len(section.specifier) :]
        field_list, rest = List.parse(list_buf, params.copy(expected=[AString]))
        if len(rest) != len(after):  # not the list pymap read: keep pymap's reading
            raise NotParseable(buf)
        given = tuple(name.value for name in field_list.get_as(AString))
        return EchoedSection(list(section.parts), section.specifier, given), after

    @property
    def for_response(self) -> FetchAttribute:
        if self.partial is None or self.partial.length is None:
            return self
        return EchoedFetchAttribute(
            self.value, self.section, FetchPartial(self.partial.start, None)
        )

    @property
    def raw(self) -> bytes:
        section = self.section
        if not isinstance(section, EchoedSection) or section.specifier is None:
            return super().raw
        if self._raw is None:
            name = b"BODY" if self.value == b"BODY.PEEK" else self.value
            parts = b".".join(b"%d" % number for number in section.parts)
            # Names that are not atoms ("a b") are quoted: pymap writes them bare.
            fields = bytes(List([AString(field) for field in section.as_given]))
            text = b"%s[%s%s%s %s]" % (
                name,
                parts,
                b"." if parts else b"",
                section.specifier,
                fields,
            )
            if self.partial is not None:
                start, length = self.partial.start, self.partial.length
                text += b"<%d>" % start if length is None else b"<%d.%d>" % (start, length)
            self._raw = text
        return self._raw
