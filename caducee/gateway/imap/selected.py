"""The selected-folder state of a session, on top of pymap's ``SelectedMailbox``.

pymap's :class:`~pymap.selected.SelectedMailbox` keeps the UID ↔ sequence
number map a client has been told about and turns differences into untagged
``EXPUNGE``, ``EXISTS`` and ``FETCH`` responses; we reuse it as is, with three
additions:

* the untagged ``FETCH`` of a flag change carries ``MODSEQ`` once the client
  enabled CONDSTORE (RFC 7162 §3.2), which pymap does not know;
* the folder id, CONDSTORE and QRESYNC state survive :meth:`fork`;
* once the client enabled QRESYNC (RFC 7162 §3.2.10), expunges are reported as one
  untagged ``VANISHED`` with their UIDs instead of ``EXPUNGE`` responses, and every
  unsolicited ``FETCH`` carries the message's UID (§3.2.4);
* sequence sets are resolved against the cached UIDs range by range.
  pymap's ``SynchronizedMessages.get_all`` expands a set into every number it
  contains, so ``UID FETCH 1:4294967295`` (which clients do send) would build a
  four-billion-element set; here the cost is one pass over the folder.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from pymap.flags import FlagOp, PermanentFlags, SessionFlags
from pymap.interfaces.message import CachedMessage
from pymap.message import BaseMessage
from pymap.parsing.command import Command
from pymap.parsing.primitives import List, Number
from pymap.parsing.response import UntaggedResponse
from pymap.parsing.response.code import PermanentFlags as PermanentFlagsCode
from pymap.parsing.response.specials import ExpungeResponse, FetchResponse, FlagsResponse
from pymap.parsing.specials import FetchAttribute, FetchValue, ObjectId, SequenceSet
from pymap.parsing.specials.flag import Flag, Recent, Wildcard, get_system_flags
from pymap.parsing.specials.sequenceset import MaxValue
from pymap.selected import SelectedMailbox

from caducee.mailboxes.imap_store import EntryState

MODSEQ_ATTRIBUTE = FetchAttribute(b"MODSEQ")
SYSTEM_FLAGS = sorted(get_system_flags() - {Recent})
"""The system flags a client may store, as listed in FLAGS (``\\Recent`` is the server's)."""
_FLAG_CACHE: dict[str, Flag] = {}


def to_flag(value: str) -> Flag:
    flag = _FLAG_CACHE.get(value)
    if flag is None:
        flag = Flag(value.encode("ascii", "replace"))
        if len(_FLAG_CACHE) < 10_000:
            _FLAG_CACHE[value] = flag
    return flag


_FLAG_SETS: dict[frozenset[str], frozenset[Flag]] = {}
_NO_ID = ObjectId(None)


def to_flags(flags: frozenset[str]) -> frozenset[Flag]:
    """The pymap flags of a stored flag set (a few distinct sets cover a whole mailbox)."""
    result = _FLAG_SETS.get(flags)
    if result is None:
        result = frozenset(to_flag(flag) for flag in flags)
        if len(_FLAG_SETS) < 10_000:
            _FLAG_SETS[flags] = result
    return result


class ImapMessage(BaseMessage):
    """A message as a session caches it: UID, flags, modseq, where its bytes are.

    ``BaseMessage.__init__`` builds two ``ObjectId`` objects per message; a
    10,000-message SELECT would spend more time there than in the database,
    so the slots are filled here directly (same values: no OBJECTID ids).
    """

    __slots__ = ["blob_id", "message_id", "modseq", "size"]

    def __init__(self, entry: EntryState) -> None:
        flags = to_flags(entry.flags)
        set_final = object.__setattr__  # pymap declares these Final; this is their first value
        set_final(self, "uid", entry.uid)
        set_final(self, "internal_date", entry.internal_date)
        set_final(self, "expunged", False)
        self._email_id = _NO_ID
        self._thread_id = _NO_ID
        self._permanent_flags = flags
        self._flags_key = (entry.uid, flags)
        self.modseq = entry.modseq
        self.message_id = entry.message_id
        self.blob_id = entry.blob_id
        self.size = entry.size

    async def load_content(self, requirement: Any) -> Any:
        """Not used: FETCH and SEARCH load content in batches (``fetch``, ``search``)."""
        raise NotImplementedError("content is loaded by the fetch and search loaders")


class StaticValue(FetchValue):
    """A fetch value whose wire form is known now (pymap's goes through slow formatting)."""

    __slots__ = ["raw"]

    def __init__(self, attribute: FetchAttribute, name: bytes, value: bytes) -> None:
        super().__init__(attribute)
        self.raw = name + b" " + value

    def __bytes__(self) -> bytes:
        return self.raw


def modseq_value(value: int) -> FetchValue:
    return StaticValue(MODSEQ_ATTRIBUTE, b"MODSEQ", b"(%d)" % value)


class FastFetchResponse(FetchResponse):
    """An untagged FETCH written in one piece from values that render themselves.

    With a ``loader`` (see :mod:`.fetch`), the message data the values need is
    put in place just before writing and dropped right after, without the
    async context manager pymap uses per response.
    """

    def __init__(
        self,
        seq: int,
        data: Iterable[FetchValue],
        *,
        loader: Any = None,
        index: int = 0,
        box: Any = None,
    ) -> None:
        super().__init__(seq, data)
        self.loader = loader
        self.index = index
        self.box = box

    async def async_write(self, writer: Any) -> None:
        loader = self.loader
        if loader is None:
            self.write(writer)
            return
        await loader.fill(self.index, self.box)
        try:
            self.write(writer)
        finally:
            loader.release(self.index, self.box)

    def write(self, writer: Any) -> None:
        writer.write(
            b"* %d FETCH (%b)\r\n" % (self.seq, b" ".join([bytes(v) for v in self.data.values()]))
        )


class UnmergedFetchResponse(FastFetchResponse):
    """An untagged FETCH that pymap must not merge into a command's FETCH of the same number.

    pymap merges a FETCH that reports another session's flag change into the
    command's own FETCH response with the same sequence number, *at the command
    response's place*. That is only right while numbers mean the same message and
    every flag in it was announced: when the same update also brings EXPUNGE
    responses (which renumber what follows) or new keywords (announced by an
    untagged FLAGS that must come first, RFC 3501 §7.2.6), the update's FETCH stays
    a separate response after them.
    """

    @property
    def merge_key(self) -> int:
        raise TypeError("not mergeable")


def uid_set_bytes(uids: Sequence[int]) -> bytes:
    """Ascending UIDs as a compact set (``41,43:116``)."""
    parts: list[bytes] = []
    start = previous = -1
    for uid in [*uids, -2]:
        if uid == previous + 1:
            previous = uid
            continue
        if start >= 0:
            parts.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
        start = previous = uid
    return b",".join(parts)


class VanishedResponse(UntaggedResponse):
    """``* VANISHED [(EARLIER)] uid-set`` (RFC 7162 §3.2.10).

    Without ``EARLIER`` it stands for the EXPUNGE responses of those UIDs (the client
    renumbers); ``(EARLIER)`` names UIDs gone before this selection saw them, in
    answer to ``SELECT ... (QRESYNC ...)`` or ``UID FETCH ... (VANISHED)``.
    """

    def __init__(self, uids: Sequence[int], *, earlier: bool = False) -> None:
        super().__init__()
        self.uids = list(uids)
        self.earlier = earlier

    @property
    def text(self) -> bytes:
        label = b"VANISHED (EARLIER) " if self.earlier else b"VANISHED "
        return super().text + label + uid_set_bytes(self.uids)


class CaduceeSelected(SelectedMailbox):
    """pymap's selected mailbox plus the folder id, CONDSTORE state and the session's view.

    Besides pymap's bookkeeping, a selection guards what its client is told against
    stale store answers (issue 15): a change older than the one already shown
    (lower modseq) is ignored, a UID the client saw expunged never comes back, and a
    keyword is announced by an untagged ``FLAGS`` before the first response that
    uses it. Together these keep every session's view ordered: sequence numbers
    follow ascending UIDs, a message's ``MODSEQ`` never goes back.
    """

    __slots__ = [
        "_announce",
        "_dirty",
        "_high_uid",
        "_keywords",
        "condstore",
        "folder_id",
        "qresync",
        "uid_validity",
    ]

    def __init__(
        self,
        mailbox_id: ObjectId,
        readonly: bool,
        permanent_flags: PermanentFlags,
        session_flags: SessionFlags,
        selected_set: Any = None,
        lookup: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            mailbox_id, readonly, permanent_flags, session_flags, selected_set, lookup, **kwargs
        )
        self.condstore = False
        self.qresync = False
        self.folder_id = 0
        self.uid_validity = 0
        self._dirty = True
        self._high_uid = 0
        self._keywords: frozenset[Flag] = frozenset()
        self._announce = False

    @property
    def high_uid(self) -> int:
        """The highest UID this selection ever showed (expunged ones included)."""
        return self._high_uid

    @property
    def keywords(self) -> frozenset[Flag]:
        """The keywords the client was told about (the untagged ``FLAGS``)."""
        return self._keywords

    def _learn(self, flags: Iterable[Flag]) -> None:
        new = {flag for flag in flags if not flag.is_system} - self._keywords
        if new:
            self._keywords = self._keywords | new
            self._announce = True

    def add_updates(self, messages: Iterable[CachedMessage], expunged: Iterable[int]) -> None:
        cache = self.messages._cache  # pymap 0.36.7: uid -> cached message
        current = self.messages._uids
        fresh: list[CachedMessage] = []
        for message in messages:
            known = cache.get(message.uid)
            if known is None:
                if message.uid <= self._high_uid and message.uid not in current:
                    continue  # expunged while this answer was on its way: never back
            elif (
                isinstance(known, ImapMessage)
                and isinstance(message, ImapMessage)
                and message.modseq < known.modseq
            ):
                continue  # an answer older than what the client was shown
            fresh.append(message)
            self._learn(message.permanent_flags)
            if message.uid > self._high_uid:
                self._high_uid = message.uid
        expunged = list(expunged)
        if fresh or expunged or self.messages._pending_remove:
            self._dirty = True
        super().add_updates(fresh, expunged)

    def announcement(self) -> list[UntaggedResponse]:
        """``FLAGS`` (and ``PERMANENTFLAGS``) once new keywords reached the selection.

        Called before any response that could show a new keyword; empty otherwise.
        """
        if not self._announce:
            return []
        self._announce = False
        flags = [*SYSTEM_FLAGS, *sorted(self._keywords)]
        responses: list[UntaggedResponse] = [FlagsResponse(flags)]
        if not self.readonly:
            responses.append(
                UntaggedResponse(
                    b"Flags permitted.",
                    PermanentFlagsCode([*flags, Wildcard]),
                    condition=b"OK",
                )
            )
        return responses

    def set_deleted(self) -> None:
        self._dirty = True
        super().set_deleted()

    def silence(self, seq_set: SequenceSet, flag_set: AbstractSet[Flag], flag_op: FlagOp) -> None:
        self._dirty = True
        super().silence(seq_set, flag_set, flag_op)

    def fork(self, command: Command) -> tuple[SelectedMailbox, Iterable[UntaggedResponse]]:
        """pymap's fork, skipped when nothing changed since the last one.

        pymap snapshots and compares the whole UID, sequence and flag state after
        every command: O(folder size) per command, milliseconds on a 10,000
        message folder. When no update reached this selection since the last
        fork, the last snapshot still describes it and there is nothing to report.
        """
        if not self._dirty and self._prev is not None:
            copy = type(self)(
                self._mailbox_id,
                self._readonly,
                self._permanent_flags,
                self._session_flags,
                self._selected_set,
                self._lookup,
                _mod_sequence=self._mod_sequence,
                _prev=self._prev,
                _messages=self._messages,
            )
            untagged: Iterable[UntaggedResponse] = []
        else:
            forked, untagged = super().fork(command)
            assert isinstance(forked, CaduceeSelected)
            copy = forked
        copy.condstore = self.condstore
        copy.qresync = self.qresync
        copy.folder_id = self.folder_id
        copy.uid_validity = self.uid_validity
        copy._dirty = False
        copy._high_uid = self._high_uid
        copy._keywords = self._keywords
        copy._announce = self._announce
        return copy, untagged

    def _compare(self, before: Any, after: Any, with_uid: bool) -> Iterable[UntaggedResponse]:
        # Same class as our command responses, so that pymap merges the FETCH of a
        # flag change with the FETCH a STORE or FETCH command returns for that message
        # -- unless numbers moved or keywords must be announced first (see
        # UnmergedFetchResponse).
        responses = list(super()._compare(before, after, with_uid or self.qresync))
        if self.qresync and any(isinstance(r, ExpungeResponse) for r in responses):
            # RFC 7162 §3.2.10: once QRESYNC is enabled, VANISHED replaces EXPUNGE.
            vanished = VanishedResponse(sorted(before.uids - after.uids))
            first = next(i for i, r in enumerate(responses) if isinstance(r, ExpungeResponse))
            responses = [r for r in responses if not isinstance(r, ExpungeResponse)]
            responses.insert(first, vanished)
        # pymap also sends FETCH (FLAGS) for messages that are new to the client (when
        # they are \Recent): it has never seen them, EXISTS is what tells it of them.
        arrived = {after.seqs_cache[uid] for uid in after.uids - before.uids}
        if arrived:
            responses = [
                r for r in responses if not (isinstance(r, FetchResponse) and r.seq in arrived)
            ]
        announce = self.announcement()
        separate = bool(announce) or any(
            isinstance(r, (ExpungeResponse, VanishedResponse)) for r in responses
        )
        fetch_class = UnmergedFetchResponse if separate else FastFetchResponse
        uid_of: dict[int, int] | None = None
        cache = self.messages._cache  # pymap 0.36.7: uid -> cached message
        result: list[UntaggedResponse] = []
        for response in responses:
            if isinstance(response, FetchResponse):
                if announce:
                    result.extend(announce)
                    announce = []
                values = list(response.data.values())
                if self.condstore:
                    if uid_of is None:
                        uid_of = {seq: uid for uid, seq in after.seqs_cache.items()}
                    message = cache.get(uid_of.get(response.seq, 0))
                    if isinstance(message, ImapMessage):
                        values.append(modseq_value(message.modseq))
                response = fetch_class(response.seq, values)
            result.append(response)
        result.extend(announce)
        return result

    def load_all(self, messages: Sequence[ImapMessage]) -> None:
        """Fill a fresh selection with a whole folder (ascending UIDs) in one pass.

        Same state as pymap's ``set_messages`` on an empty selection, without
        its per-message sorted insert.
        """
        synced = self.messages
        assert not synced._uids
        uids = [message.uid for message in messages]
        synced._uids = set(uids)
        synced._sorted = uids
        synced._seqs_cache = {uid: seq for seq, uid in enumerate(uids, 1)}
        synced._cache = {message.uid: message for message in messages}
        synced._flags_key_map = {message.uid: message.flags_key for message in messages}
        synced._flags_key_set = set(synced._flags_key_map.values())
        self._high_uid = uids[-1] if uids else 0
        self._keywords = frozenset(
            flag for message in messages for flag in message.permanent_flags if not flag.is_system
        )
        self._announce = False  # SELECT's own FLAGS response lists them

    # -- sequence sets -----------------------------------------------------------------

    def uids(self) -> list[int]:
        """The UIDs the client knows, ascending (position + 1 is the sequence number)."""
        return list(self.messages._sorted)  # pymap 0.36.7: sorted UID list

    def resolve(self, sequence_set: SequenceSet) -> list[tuple[int, ImapMessage]]:
        """``(sequence number, message)`` for every known message the set names."""
        ordered: Sequence[int] = self.messages._sorted
        cache = self.messages._cache
        if not ordered:
            return []
        result: list[tuple[int, ImapMessage]] = []
        if sequence_set.uid:
            for low, high in ranges(sequence_set, ordered[-1]):
                start = bisect_left(ordered, low)
                stop = bisect_right(ordered, high)
                for index in range(start, stop):
                    message = cache[ordered[index]]
                    assert isinstance(message, ImapMessage)
                    result.append((index + 1, message))
        else:
            count = len(ordered)
            for low, high in ranges(sequence_set, count):
                for seq in range(max(low, 1), min(high, count) + 1):
                    message = cache[ordered[seq - 1]]
                    assert isinstance(message, ImapMessage)
                    result.append((seq, message))
        result.sort(key=lambda item: item[0])
        unique: list[tuple[int, ImapMessage]] = []
        last = 0
        for seq, message in result:
            if seq != last:
                unique.append((seq, message))
                last = seq
        return unique


def ranges(sequence_set: SequenceSet, maximum: int) -> list[tuple[int, int]]:
    """The set as sorted, merged ``(low, high)`` ranges, ``*`` being ``maximum``."""
    spans: list[tuple[int, int]] = []
    for element in sequence_set.sequences:
        if isinstance(element, tuple):
            low = maximum if isinstance(element[0], MaxValue) else int(element[0])
            high = maximum if isinstance(element[1], MaxValue) else int(element[1])
        else:
            low = high = maximum if isinstance(element, MaxValue) else int(element)
        spans.append((min(low, high), max(low, high)))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def flags_list(flags: Iterable[Flag]) -> bytes:
    return bytes(List(flags, sort=True))


def number(value: int) -> Number:
    return Number(value)
