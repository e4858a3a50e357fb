"""SEARCH evaluation: flags, dates, sizes and UIDs from the cache; headers and text decoded.

pymap's search criteria compare against what ``LoadedMessageInterface`` gives,
which for TEXT and BODY is the raw bytes of ``text/*`` parts: a word in a
quoted-printable or base64 French text (``r=C3=A9sultats``) is never found, and
SMALLER/LARGER load the whole message to measure it. Here:

* flag, date, size, UID, sequence and MODSEQ keys use the session's cached
  entries and touch no message;
* header keys (FROM, TO, CC, BCC, SUBJECT, HEADER, SENT*) use the cached
  structure (an encrypted header block, not the message), with RFC 2047 words
  decoded;
* BODY and TEXT decode each text part (transfer encoding, then charset) and
  compare case-insensitively (Unicode simple case mapping of ``re``).

Keys that only need cached data are applied first, so the expensive ones run
on the messages that are still candidates. The whole evaluation runs in a
worker thread (it is CPU work and storage reads), one batch of messages at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from email.utils import parsedate_to_datetime

from pymap.exceptions import SearchNotAllowed
from pymap.parsing.specials import SearchKey, SequenceSet
from pymap.parsing.specials.flag import Flag

from caducee.gateway.imap.selected import ImapMessage, ranges
from caducee.mailboxes.imap_store import ImapStore, Principal
from caducee.mailboxes.imap_structure import (
    MessageStructure,
    address_text,
    decode_words,
    parse_addresses,
    text_of,
    walk,
)

BATCH = 200
_FLAG_KEYS: dict[bytes, tuple[str, bool]] = {
    b"ANSWERED": ("\\Answered", True),
    b"UNANSWERED": ("\\Answered", False),
    b"DELETED": ("\\Deleted", True),
    b"UNDELETED": ("\\Deleted", False),
    b"DRAFT": ("\\Draft", True),
    b"UNDRAFT": ("\\Draft", False),
    b"FLAGGED": ("\\Flagged", True),
    b"UNFLAGGED": ("\\Flagged", False),
    b"SEEN": ("\\Seen", True),
    b"UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = frozenset({b"FROM", b"TO", b"CC", b"BCC", b"SUBJECT", b"HEADER"})
_SENT_KEYS = frozenset({b"SENTBEFORE", b"SENTON", b"SENTSINCE"})
_TEXT_KEYS = frozenset({b"BODY", b"TEXT"})


def _pattern(needle: str) -> re.Pattern[str]:
    """Case-insensitive substring search without copying (and case-folding) each text."""
    return _PATTERNS.get(needle) or _PATTERNS.setdefault(
        needle, re.compile(re.escape(needle), re.IGNORECASE)
    )


_PATTERNS: dict[str, re.Pattern[str]] = {}


class Candidate:
    """One message under evaluation, with its structure and bytes once loaded."""

    __slots__ = ["message", "raw", "seq", "structure"]

    def __init__(self, seq: int, message: ImapMessage) -> None:
        self.seq = seq
        self.message = message
        self.structure: MessageStructure | None = None
        self.raw: bytes | None = None


def requirement(key: SearchKey) -> int:
    """0: cached entry only; 1: cached structure (headers); 2: message bytes."""
    name = key.value
    if name == b"KEYSET":
        return max((requirement(k) for k in key.filter_key_set), default=0)
    if name == b"OR":
        left, right = key.filter_key_or
        return max(requirement(left), requirement(right))
    if name in _TEXT_KEYS:
        return 2
    if name in _HEADER_KEYS or name in _SENT_KEYS:
        return 1
    return 0


class Evaluator:
    """Decides whether a candidate matches a search key."""

    def __init__(self, *, max_seq: int, max_uid: int, recent: frozenset[int]) -> None:
        self.max_seq = max_seq
        self.max_uid = max_uid
        self.recent = recent
        self._ranges: dict[int, list[tuple[int, int]]] = {}

    def _in_set(self, sequence_set: SequenceSet, value: int) -> bool:
        key = id(sequence_set)
        spans = self._ranges.get(key)
        if spans is None:
            spans = ranges(sequence_set, self.max_uid if sequence_set.uid else self.max_seq)
            self._ranges[key] = spans
        return any(low <= value <= high for low, high in spans)

    def matches(self, key: SearchKey, candidate: Candidate) -> bool:
        return self._match(key, candidate) != key.inverse

    def _flags(self, candidate: Candidate) -> frozenset[str]:
        return frozenset(str(flag) for flag in candidate.message.permanent_flags)

    def _match(self, key: SearchKey, candidate: Candidate) -> bool:
        name = key.value
        message = candidate.message
        if name == b"ALL":
            return True
        if name == b"KEYSET":
            return all(self.matches(k, candidate) for k in key.filter_key_set)
        if name == b"OR":
            left, right = key.filter_key_or
            return self.matches(left, candidate) or self.matches(right, candidate)
        if name == b"SEQSET":
            sequence_set = key.filter_sequence_set
            return self._in_set(sequence_set, message.uid if sequence_set.uid else candidate.seq)
        if name in _FLAG_KEYS:
            system, expected = _FLAG_KEYS[name]
            return (system in self._flags(candidate)) == expected
        if name in (b"KEYWORD", b"UNKEYWORD"):
            keyword = key.filter
            assert isinstance(keyword, Flag)
            return (str(keyword) in self._flags(candidate)) == (name == b"KEYWORD")
        if name == b"RECENT":
            return message.uid in self.recent
        if name == b"OLD":
            return message.uid not in self.recent
        if name == b"NEW":
            return message.uid in self.recent and "\\Seen" not in self._flags(candidate)
        if name in (b"BEFORE", b"ON", b"SINCE"):
            return _compare_dates(message.internal_date.date(), key.filter_datetime.date(), name)
        if name in (b"LARGER", b"SMALLER"):
            limit = key.filter_int
            return message.size > limit if name == b"LARGER" else message.size < limit
        if name == b"MODSEQ":
            return message.modseq >= key.filter_int
        if name in _SENT_KEYS:
            sent = _sent_date(candidate.structure)
            return sent is not None and _compare_dates(
                sent, key.filter_datetime.date(), name.removeprefix(b"SENT")
            )
        if name in _HEADER_KEYS:
            return _header_match(key, candidate.structure)
        if name in _TEXT_KEYS:
            needle = _pattern(key.filter_str)
            if name == b"TEXT" and _header_contains(candidate.structure, needle):
                return True
            return _body_contains(candidate, needle)
        raise SearchNotAllowed(key)


def _compare_dates(value: date, limit: date, name: bytes) -> bool:
    if name == b"BEFORE":
        return value < limit
    if name == b"ON":
        return value == limit
    return value >= limit


def _sent_date(structure: MessageStructure | None) -> date | None:
    if structure is None:
        return None
    values = structure.header_values("date")
    if not values:
        return None
    try:
        parsed: datetime = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.date()


def _header_match(key: SearchKey, structure: MessageStructure | None) -> bool:
    if structure is None:
        return False
    needle: str
    if key.value == b"HEADER":
        field, needle = key.filter_header
        values = structure.header_values(field)
        if not needle:
            return bool(values)
    else:
        values = structure.header_values(key.value.decode("ascii").lower())
        needle = str(key.filter)
        if key.value != b"SUBJECT":
            # Also the addresses as parsed (RFC 5322 comments and groups removed), so
            # that FROM user@domain.org finds "<user (comment)@ (comment) domain.org>".
            values = [*values, *(address_text(parse_addresses(value)) for value in values)]
    pattern = _pattern(needle)
    return any(pattern.search(decode_words(value)) for value in values)


def _header_contains(structure: MessageStructure | None, needle: re.Pattern[str]) -> bool:
    if structure is None:
        return False
    text = structure.header.decode("utf-8", "replace")
    return needle.search(decode_words(" ".join(text.split()))) is not None


def _body_contains(candidate: Candidate, needle: re.Pattern[str]) -> bool:
    if candidate.structure is None or candidate.raw is None:
        return False
    raw = candidate.raw
    for part in walk(candidate.structure.root):
        text = text_of(raw, part)
        if text is not None and needle.search(text):
            return True
        if part is not candidate.structure.root and part.envelope is not None:
            block = raw[part.header_start : part.body_start].decode("utf-8", "replace")
            if needle.search(decode_words(" ".join(block.split()))):
                return True
    return False


def search(
    store: ImapStore,
    principal: Principal,
    folder_id: int,
    keys: Iterable[SearchKey],
    candidates: Sequence[tuple[int, ImapMessage]],
    *,
    max_seq: int,
    max_uid: int,
    recent: frozenset[int],
    cancelled: Callable[[], bool] = lambda: False,
) -> list[tuple[int, ImapMessage]]:
    """The candidates matching every key (in a worker thread: this may read and decrypt)."""
    evaluator = Evaluator(max_seq=max_seq, max_uid=max_uid, recent=recent)
    ordered = sorted(keys, key=requirement)
    cheap = [key for key in ordered if requirement(key) == 0]
    costly = [key for key in ordered if requirement(key) > 0]
    pool = [Candidate(seq, message) for seq, message in candidates]
    pool = [c for c in pool if all(evaluator.matches(key, c) for key in cheap)]
    if not costly:
        return [(c.seq, c.message) for c in pool]
    need_raw = any(requirement(key) == 2 for key in costly)
    matched: list[tuple[int, ImapMessage]] = []
    for start in range(0, len(pool), BATCH):
        if cancelled():
            break
        batch = pool[start : start + BATCH]
        wanted = [c.message.uid for c in batch]
        structures = store.structures(principal, folder_id, wanted)
        contents = store.contents(principal, folder_id, wanted, keep=False) if need_raw else {}
        for candidate in batch:
            candidate.structure = structures.get(candidate.message.uid)
            candidate.raw = contents.get(candidate.message.uid)
            if all(evaluator.matches(key, candidate) for key in costly):
                matched.append((candidate.seq, candidate.message))
            candidate.structure = candidate.raw = None
    return matched
