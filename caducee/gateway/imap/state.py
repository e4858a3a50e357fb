"""The IMAP command state machine: pymap's, with our rules for TLS, CONDSTORE and bulk commands.

pymap's :class:`~pymap.imap.state.ConnectionState` dispatches commands to
``do_<name>`` methods; we keep its dispatch, login, LIST, APPEND, COPY, MOVE,
EXPUNGE and IDLE plumbing and change:

* the greeting: pymap offers LOGIN and AUTHENTICATE in clear text to clients
  connecting from localhost; we never do (``LOGINDISABLED`` until STARTTLS, on
  every address), and on the implicit-TLS port authentication is offered at once
  and STARTTLS is not;
* ENABLE (CONDSTORE, QRESYNC) and NAMESPACE, which pymap lacks; with QRESYNC,
  SELECT/EXAMINE ``(QRESYNC (...))`` and ``UID FETCH ... (VANISHED)`` answer
  ``VANISHED (EARLIER)`` (RFC 7162 §3.2);
* LIST and LSUB, answered by :mod:`.listing` (LIST-EXTENDED, LIST-STATUS, and a
  pattern matcher that cannot backtrack);
* SELECT/EXAMINE (``HIGHESTMODSEQ``, ``(CONDSTORE)``, ``PERMANENTFLAGS`` with
  ``\\*`` so clients may keep keywords), STATUS (``HIGHESTMODSEQ``, counts
  from the store), CLOSE (no expunge on a read-only selection);
* FETCH, STORE and SEARCH, which pymap runs one message at a time through
  the backend; here they are batched (see :mod:`.fetch`, :mod:`.search`),
  answer ``MODSEQ``/``CHANGEDSINCE``/``UNCHANGEDSINCE``, and a non-peek fetch
  sets ``\\Seen`` through the same store call as STORE (so it queues the G2
  read receipt); the first read of each message's body in a session of a patient
  mailbox is audited (F4, ``message.read``) before it is sent;
* SORT and THREAD (RFC 5256), which pymap lacks: the search keys select, then
  :mod:`.sorting` orders or threads the matches from their cached structures.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from pymap.config import IMAPConfig
from pymap.exceptions import MailboxNotFound, MailboxReadOnly
from pymap.flags import FlagOp
from pymap.imap.state import ConnectionState
from pymap.interfaces.login import LoginInterface
from pymap.parsing.command import Command
from pymap.parsing.command.any import CapabilityCommand
from pymap.parsing.command.auth import ListCommand, SelectCommand, StatusCommand
from pymap.parsing.command.select import CloseCommand, FetchCommand, SearchCommand, StoreCommand
from pymap.parsing.primitives import List, Number
from pymap.parsing.response import (
    CommandResponse,
    ResponseBad,
    ResponseCode,
    ResponseNo,
    ResponseOk,
    UntaggedResponse,
)
from pymap.parsing.response.code import PermanentFlags, UidNext, UidValidity, Unseen
from pymap.parsing.response.specials import (
    ExistsResponse,
    FlagsResponse,
    RecentResponse,
    StatusResponse,
)
from pymap.parsing.specials import (
    FetchAttribute,
    FetchValue,
    SearchKey,
    SequenceSet,
    StatusAttribute,
)
from pymap.parsing.specials.flag import Seen, Wildcard
from pymap.selected import SelectedMailbox

from caducee.gateway.imap import fetch as fetching
from caducee.gateway.imap import search as searching
from caducee.gateway.imap import sorting
from caducee.gateway.imap.commands import (
    CONDSTORE,
    MODSEQ,
    QRESYNC,
    EnableCommand,
    ExtendedListCommand,
    NamespaceCommand,
    SortCommand,
    ThreadCommand,
    UnselectCommand,
    number_option,
    qresync_option,
)
from caducee.gateway.imap.listing import ExtendedListResponse, ListRequest
from caducee.gateway.imap.selected import (
    CaduceeSelected,
    FastFetchResponse,
    ImapMessage,
    StaticValue,
    VanishedResponse,
    modseq_value,
    ranges,
)
from caducee.gateway.imap.session import FLAG_MODES, ImapSession, log, store_flags
from caducee.mailboxes.imap_store import DELIMITER, FolderNotFound

_CommandRet = tuple[CommandResponse, SelectedMailbox | None]
#: LIST attributes of a name that has no STATUS (RFC 5819 §2).
_NOT_SELECTABLE = frozenset({b"noselect", b"nonexistent"})
_FLAGS = FetchAttribute(b"FLAGS")
_UID = FetchAttribute(b"UID")
_MODSEQ = FetchAttribute(MODSEQ)


class StreamedOk(ResponseOk):
    """A tagged OK whose untagged responses are drained to the socket as they are written."""


def _uses_modseq(keys: Any) -> bool:
    for key in keys:
        if key.value == MODSEQ:
            return True
        if key.value == b"KEYSET" and _uses_modseq(key.filter_key_set):
            return True
        if key.value == b"OR" and _uses_modseq(key.filter_key_or):
            return True
    return False


def _sequence_bytes(numbers: list[int]) -> bytes:
    """A compact sequence set (``1:3,7``) for ``[MODIFIED ...]``."""
    parts: list[bytes] = []
    ordered = sorted(set(numbers))
    start = previous = ordered[0]
    for value in [*ordered[1:], 0]:
        if value == previous + 1:
            previous = value
            continue
        parts.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
        start = previous = value
    return b",".join(parts)


def _esearch(
    tag: bytes,
    uid: bool,
    returns: frozenset[bytes],
    matched: list[tuple[int, ImapMessage]],
    numbers: list[int],
    with_modseq: bool,
) -> bytes:
    """The ``ESEARCH`` response (RFC 4731 §3.1; ``MODSEQ`` per RFC 7162 §3.1.5).

    ``RETURN ()`` means ``ALL``. MIN, MAX and ALL are left out when nothing matched;
    COUNT is always given. With a MODSEQ search key, ``MODSEQ`` is the highest
    modseq of the messages the response names (only the MIN/MAX ones when ALL and
    COUNT are not asked for).
    """
    wanted = returns or frozenset({b"ALL"})
    parts = [b'ESEARCH (TAG "%b")' % tag]
    if uid:
        parts.append(b"UID")
    if matched:
        if b"MIN" in wanted:
            parts.append(b"MIN %d" % numbers[0])
        if b"MAX" in wanted:
            parts.append(b"MAX %d" % numbers[-1])
    if b"COUNT" in wanted:
        parts.append(b"COUNT %d" % len(numbers))
    if matched and b"ALL" in wanted:
        parts.append(b"ALL " + _sequence_bytes(numbers))
    if with_modseq and matched:
        if wanted & {b"ALL", b"COUNT"}:
            named = matched
        else:
            named = [matched[0]] if b"MIN" in wanted else []
            named += [matched[-1]] if b"MAX" in wanted else []
        parts.append(b"MODSEQ %d" % max(message.modseq for _, message in named))
    return b" ".join(parts)


def _bad_charset(tag: bytes) -> ResponseNo:
    """RFC 5256 §3: an unknown charset is ``NO [BADCHARSET]``, naming some we know."""
    return ResponseNo(
        tag, b"Unknown charset.", ResponseCode.of(b"BADCHARSET (UTF-8 US-ASCII ISO-8859-1)")
    )


class CaduceeConnectionState(ConnectionState):
    """One connection's state, from greeting to logout."""

    def __init__(self, login: LoginInterface, config: IMAPConfig, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        self.implicit_tls = implicit_tls
        if implicit_tls:
            self.auth = config.tls_auth
            self._capability = [cap for cap in self._capability if cap != b"STARTTLS"]
        self.enabled: set[bytes] = set()
        self._announce_modseq = False

    @property
    def imap_session(self) -> ImapSession:
        session = self.session
        assert isinstance(session, ImapSession)
        return session

    @property
    def current(self) -> CaduceeSelected:
        selected = self.selected
        assert isinstance(selected, CaduceeSelected)
        return selected

    def enable_condstore(self) -> None:
        if CONDSTORE not in self.enabled and isinstance(self._selected, CaduceeSelected):
            # RFC 7162 §3.1: enabled by a command (FETCH MODSEQ, SEARCH MODSEQ, ...) while
            # a folder is selected: the client learns the folder's HIGHESTMODSEQ now.
            self._announce_modseq = True
        self.enabled.add(CONDSTORE)
        if isinstance(self._selected, CaduceeSelected):
            self._selected.condstore = True

    async def do_command(self, cmd: Command) -> CommandResponse:
        response = await super().do_command(cmd)
        if self._announce_modseq:
            self._announce_modseq = False
            selected = self._selected
            if isinstance(selected, CaduceeSelected) and isinstance(response, ResponseOk):
                response.add_untagged_ok(
                    b"Highest modification sequence.",
                    ResponseCode.of(b"HIGHESTMODSEQ %d" % (selected.mod_sequence or 1)),
                )
        return response

    @property
    def condstore(self) -> bool:
        return CONDSTORE in self.enabled

    @property
    def qresync(self) -> bool:
        return QRESYNC in self.enabled

    # -- before login ------------------------------------------------------------------

    async def do_greeting(self) -> CommandResponse:
        # pymap switches on authentication for clients on localhost; we never
        # accept credentials before TLS, from anywhere.
        return ResponseOk(b"*", self.config.greeting, self.capability)

    async def do_capability(self, cmd: CapabilityCommand) -> _CommandRet:
        response = ResponseOk(cmd.tag, b"Capabilities listed.")
        response.add_untagged(UntaggedResponse(self.capability.string))
        return response, None

    # -- extensions --------------------------------------------------------------------

    async def do_enable(self, cmd: EnableCommand) -> _CommandRet:
        enabled: list[bytes] = []
        for capability in cmd.capabilities:
            if capability == CONDSTORE and capability not in enabled:
                self.enable_condstore()
                enabled.append(capability)
            elif capability == QRESYNC and capability not in enabled:
                # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
                self.enable_condstore()
                self.enabled.add(QRESYNC)
                if isinstance(self._selected, CaduceeSelected):
                    self._selected.qresync = True
                enabled.append(capability)
        response = ResponseOk(cmd.tag, b"ENABLE completed.")
        response.add_untagged(UntaggedResponse(b" ".join([b"ENABLED", *enabled])))
        return response, None

    async def do_namespace(self, cmd: NamespaceCommand) -> _CommandRet:
        response = ResponseOk(cmd.tag, b"NAMESPACE completed.")
        response.add_untagged(UntaggedResponse(b'NAMESPACE (("" "/")) NIL NIL'))
        return response, await self.imap_session.refresh(self._selected)

    # -- selection ---------------------------------------------------------------------

    async def do_select(self, cmd: SelectCommand) -> _CommandRet:
        try:
            resync = qresync_option(cmd.options)
        except ValueError:
            return ResponseBad(cmd.tag, b"Invalid QRESYNC parameters."), None
        if resync is not None and not self.qresync:
            # RFC 7162 §3.2.5: QRESYNC parameters without ENABLE QRESYNC are a BAD.
            return ResponseBad(cmd.tag, b"QRESYNC is not enabled."), None
        closed = self._selected is not None
        self._selected = None
        self.imap_session.unwatch()
        if cmd.options.has(CONDSTORE):
            self.enable_condstore()
        mailbox, selected = await self.imap_session.select_mailbox(cmd.mailbox, cmd.readonly)
        assert isinstance(selected, CaduceeSelected)
        selected.condstore = self.condstore
        selected.qresync = self.qresync
        if selected.readonly:
            response = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-ONLY"))
        else:
            response = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-WRITE"))
        if closed and self.qresync:
            # RFC 7162 §3.2.11: the previous folder's responses end here.
            response.add_untagged_ok(b"Previous mailbox closed.", ResponseCode.of(b"CLOSED"))
        if selected.readonly:
            response.add_untagged_ok(b"Read-only mailbox.", PermanentFlags([]))
        else:
            response.add_untagged_ok(
                b"Flags permitted.", PermanentFlags([*mailbox.permanent_flags, Wildcard])
            )
        keywords = selected.keywords
        response.add_untagged(FlagsResponse(sorted(mailbox.permanent_flags | keywords)))
        response.add_untagged(ExistsResponse(mailbox.exists))
        response.add_untagged(RecentResponse(mailbox.recent))
        if mailbox.first_unseen:
            response.add_untagged_ok(b"First unseen message.", Unseen(mailbox.first_unseen))
        response.add_untagged_ok(b"Predicted next UID.", UidNext(mailbox.next_uid))
        response.add_untagged_ok(b"UIDs valid.", UidValidity(mailbox.uid_validity))
        response.add_untagged_ok(
            b"Highest modification sequence.",
            ResponseCode.of(b"HIGHESTMODSEQ %d" % (selected.mod_sequence or 1)),
        )
        if resync is not None and resync.uid_validity == selected.uid_validity:
            await self._resynchronise(response, selected, resync.modseq, resync.known_uids)
        return response, selected

    async def _vanished(
        self, selected: CaduceeSelected, since: int, within: SequenceSet | None
    ) -> list[int]:
        """UIDs expunged after modseq ``since`` (``imap_expunged`` keeps them all), within
        the UID set ``within`` if given, leaving out those this selection still shows (it
        will report them itself, as VANISHED, when it learns of their removal)."""
        session = self.imap_session
        try:
            changes = await session.backend.run(
                session.store.changes,
                session.principal,
                selected.folder_id,
                since,
                uid_validity=selected.uid_validity,
            )
        except FolderNotFound:  # deleted meanwhile: the next refresh says so
            return []
        shown = selected.messages._cache  # pymap 0.36.7: uid -> cached message
        gone = sorted({uid for uid in changes.expunged if uid not in shown})
        if within is not None:
            # Sorted, merged spans: one binary search per UID, whatever the client sent.
            spans = ranges(within, max(changes.folder.uid_next - 1, 1))
            lows = [low for low, _ in spans]
            inside = []
            for uid in gone:
                index = bisect_right(lows, uid) - 1
                if index >= 0 and uid <= spans[index][1]:
                    inside.append(uid)
            gone = inside
        return gone

    async def _resynchronise(
        self,
        response: CommandResponse,
        selected: CaduceeSelected,
        since: int,
        known: SequenceSet | None,
    ) -> None:
        """SELECT/EXAMINE ``(QRESYNC (uidvalidity modseq [known-uids]))`` (RFC 7162 §3.2.5):
        ``VANISHED (EARLIER)`` for what was expunged since ``modseq`` (among the known
        UIDs), then a ``FETCH (UID FLAGS MODSEQ)`` for every message changed or added
        since. The sequence-match data is not needed: the UIDs are exact."""
        gone = await self._vanished(selected, since, known)
        if gone:
            response.add_untagged(VanishedResponse(gone, earlier=True))
        session_flags = selected.session_flags
        for seq, message in selected.resolve(SequenceSet.all()):
            if message.modseq <= since:
                continue
            flags_list = bytes(List(message.get_flags(session_flags), sort=True))
            values: list[FetchValue] = [
                StaticValue(_UID, b"UID", b"%d" % message.uid),
                StaticValue(_FLAGS, b"FLAGS", flags_list),
                modseq_value(message.modseq),
            ]
            response.add_untagged(FastFetchResponse(seq, values))

    async def do_status(self, cmd: StatusCommand) -> _CommandRet:
        session = self.imap_session
        response = ResponseOk(cmd.tag, b"STATUS completed.")
        response.add_untagged(await self._status_response(cmd.mailbox, cmd.status_list))
        return response, await session.refresh(self._selected)

    async def do_list(self, cmd: ListCommand) -> _CommandRet:
        """LIST and LSUB, with LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819).

        Answered from :func:`listing.list_entries` (pymap's regular-expression
        matching backtracks without bound on patterns with many wildcards). With
        ``RETURN (STATUS (...))`` each selectable folder's ``STATUS`` follows its
        ``LIST`` line (§2); none for ``\\Noselect`` or ``\\NonExistent`` names.
        """
        session = self.imap_session
        lsub = cmd.only_subscribed
        extended = isinstance(cmd, ExtendedListCommand) and cmd.extended
        patterns = list(cmd.patterns) if isinstance(cmd, ExtendedListCommand) else [cmd.filter]
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        if patterns == [""] and not extended:
            # RFC 3501 §6.3.8: the hierarchy delimiter and the root name.
            response.add_untagged(ExtendedListResponse("", DELIMITER, [b"Noselect"], lsub=lsub))
            return response, await session.refresh(self._selected)
        selection = cmd.selection if isinstance(cmd, ExtendedListCommand) else frozenset()
        returns = cmd.returns if isinstance(cmd, ExtendedListCommand) else frozenset()
        request = ListRequest(
            cmd.ref_name,
            patterns,
            lsub=lsub,
            extended=extended,
            select_subscribed=b"SUBSCRIBED" in selection,
            select_special_use=b"SPECIAL-USE" in selection,
            recursive=b"RECURSIVEMATCH" in selection,
            return_subscribed=b"SUBSCRIBED" in returns,
        )
        entries = await session.list_entries(request)
        wanted = cmd.status if isinstance(cmd, ExtendedListCommand) else None
        for entry in entries:
            response.add_untagged(
                ExtendedListResponse(
                    entry.name, DELIMITER, entry.attributes, lsub=lsub, child_info=entry.child_info
                )
            )
            selectable = not any(flag.lower() in _NOT_SELECTABLE for flag in entry.attributes)
            if wanted is not None and selectable:
                try:
                    response.add_untagged(await self._status_response(entry.name, wanted))
                except MailboxNotFound:  # deleted meanwhile by another session
                    continue
        return response, await session.refresh(self._selected)

    async def _status_response(
        self, mailbox: str, attributes: Sequence[StatusAttribute]
    ) -> StatusResponse:
        session = self.imap_session
        status = await session._call(mailbox, session.store.status, session.principal, mailbox)
        folder = status.folder
        data: dict[Any, Any] = {}
        for attribute in attributes:
            name = attribute.value
            if name == b"MESSAGES":
                data[attribute] = Number(status.messages)
            elif name == b"RECENT":
                data[attribute] = Number(status.recent)
            elif name == b"UNSEEN":
                data[attribute] = Number(status.unseen)
            elif name == b"UIDNEXT":
                data[attribute] = Number(folder.uid_next)
            elif name == b"UIDVALIDITY":
                data[attribute] = Number(folder.uid_validity)
            elif name == b"HIGHESTMODSEQ":
                self.enable_condstore()
                data[attribute] = Number(folder.highest_modseq)
        return StatusResponse(mailbox, data)

    async def do_close(self, cmd: CloseCommand) -> _CommandRet:
        selected = self.current
        if not selected.readonly:
            await self.imap_session.expunge_mailbox(selected)
        self._selected = None
        self.imap_session.unwatch()
        return ResponseOk(cmd.tag, b"CLOSE completed."), None

    async def do_unselect(self, cmd: UnselectCommand) -> _CommandRet:
        """RFC 3691: no longer selected, nothing expunged, no untagged responses."""
        self._selected = None
        self.imap_session.unwatch()
        return ResponseOk(cmd.tag, b"UNSELECT completed."), None

    # -- FETCH -------------------------------------------------------------------------

    async def do_fetch(self, cmd: FetchCommand) -> _CommandRet:
        session = self.imap_session
        selected = self.current
        if not cmd.uid:
            selected.hide_expunged = True
        changed_since = number_option(cmd.options, b"CHANGEDSINCE")
        attributes = list(cmd.attributes)
        vanished: list[int] = []
        if cmd.options.has(b"VANISHED"):
            # RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE, once QRESYNC is enabled.
            if not (cmd.uid and changed_since is not None and self.qresync):
                return ResponseBad(
                    cmd.tag, b"VANISHED needs UID FETCH, CHANGEDSINCE, QRESYNC."
                ), None
            vanished = await self._vanished(selected, changed_since, cmd.sequence_set)
        if self.qresync and not any(a.value == b"UID" for a in attributes):
            attributes.append(_UID)  # RFC 7162 §3.2.4: every FETCH names its UID
        if changed_since is not None or any(a.value == MODSEQ for a in attributes):
            self.enable_condstore()
        messages = selected.resolve(cmd.sequence_set)
        if changed_since is not None:
            messages = [(seq, m) for seq, m in messages if m.modseq > changed_since]
        if not selected.readonly and any(a.set_seen for a in attributes):
            unseen = [m.uid for _, m in messages if Seen not in m.permanent_flags]
            if unseen:
                outcome = await session._call(
                    "",
                    session.store.store_flags,
                    session.principal,
                    selected.folder_id,
                    unseen,
                    frozenset({"\\Seen"}),
                    "add",
                )
                if outcome.changed:
                    updated = {entry.uid: ImapMessage(entry) for entry in outcome.changed}
                    if any(a.value == b"FLAGS" for a in attributes):
                        # Our FETCH response carries the new FLAGS; no second one.
                        selected.silence(
                            SequenceSet(list(updated), uid=True), frozenset({Seen}), FlagOp.ADD
                        )
                    selected.add_updates(list(updated.values()), [])
                    messages = [(seq, updated.get(m.uid, m)) for seq, m in messages]
                    session.touched()
        if any(a.value.startswith(b"BINARY") for a in attributes):
            wanted = [m.uid for _, m in messages]
            structures = await session.backend.run(
                session.store.structures, session.principal, selected.folder_id, wanted
            )
            if not fetching.decodable(attributes, structures.values()):
                return (
                    ResponseNo(
                        cmd.tag,
                        b"A part has a transfer encoding the server cannot decode.",
                        ResponseCode.of(b"UNKNOWN-CTE"),
                    ),
                    None,
                )
        if fetching.reads_body(attributes) and messages:
            read = [m.message_id for _, m in messages]
            if session.must_audit(read):  # no thread hop for reads that need no event
                await session.backend.run(session.audit_reads, read)
        need_structure, need_content = fetching.needs(attributes)
        envelope = fetching.only_envelope(attributes)
        if envelope:
            need_structure = False  # the ENVELOPE records sealed at delivery (issue 15)
        loader = None
        if need_structure or need_content or envelope:
            loader = fetching.FetchLoader(
                session.store,
                session.principal,
                selected.folder_id,
                session.backend.run,
                [m for _, m in messages],
                structure=need_structure,
                content=need_content,
                inline=session.backend.inline_reads,
                envelope=envelope,
            )
        response = StreamedOk(cmd.tag, b"FETCH completed.")
        if vanished:
            response.add_untagged(VanishedResponse(vanished, earlier=True))
        response.add_untagged(*selected.announcement())
        plan = fetching.FetchPlan(attributes, selected.session_flags, condstore=self.condstore)
        for index, (seq, message) in enumerate(messages):
            response.add_untagged(fetching.PlannedFetchResponse(seq, message, plan, loader, index))
        return response, await session.refresh(selected)

    # -- STORE -------------------------------------------------------------------------

    async def do_store(self, cmd: StoreCommand) -> _CommandRet:
        session = self.imap_session
        selected = self.current
        if selected.readonly:
            raise MailboxReadOnly()
        if not cmd.uid:
            selected.hide_expunged = True
        unchanged_since = number_option(cmd.options, b"UNCHANGEDSINCE")
        if unchanged_since is not None:
            self.enable_condstore()
        messages = selected.resolve(cmd.sequence_set)
        flags = store_flags(cmd.flag_set)
        outcome = await session._call(
            "",
            session.store.store_flags,
            session.principal,
            selected.folder_id,
            [m.uid for _, m in messages],
            flags,
            FLAG_MODES[cmd.mode],
            unchanged_since=unchanged_since,
        )
        if outcome.receipts:
            log.info("read receipt queued", extra={"account": session.principal.account_id})
        if cmd.silent:  # before the cache changes: silence compares with the old flags
            selected.silence(cmd.sequence_set, cmd.flag_set, cmd.mode)
        updated = {entry.uid: ImapMessage(entry) for entry in outcome.changed}
        if updated:
            selected.add_updates(list(updated.values()), [])
            session.touched()
        code = None
        if outcome.modified:
            modified = set(outcome.modified)
            numbers = [m.uid if cmd.uid else seq for seq, m in messages if m.uid in modified]
            code = ResponseCode.of(b"MODIFIED " + _sequence_bytes(numbers))
        response = ResponseOk(cmd.tag, b"STORE completed.", code)
        response.add_untagged(*selected.announcement())  # new keywords before their first use
        modified_uids = set(outcome.modified)
        session_flags = selected.session_flags
        for seq, message in messages:
            message = updated.get(message.uid, message)
            if message.uid in modified_uids:
                continue
            values: list[FetchValue] = []
            if not cmd.silent:
                flags_list = bytes(List(message.get_flags(session_flags), sort=True))
                values.append(StaticValue(_FLAGS, b"FLAGS", flags_list))
            elif not (self.condstore and message.uid in updated):
                continue
            if cmd.uid or self.qresync:
                values.append(StaticValue(_UID, b"UID", b"%d" % message.uid))
            if self.condstore:
                values.append(modseq_value(message.modseq))
            response.add_untagged(FastFetchResponse(seq, values))
        return response, await session.refresh(selected)

    # -- SEARCH ------------------------------------------------------------------------

    async def do_search(self, cmd: SearchCommand) -> _CommandRet:
        session = self.imap_session
        selected = self.current
        if not cmd.uid:
            selected.hide_expunged = True
        keys: frozenset[SearchKey] = cmd.keys
        with_modseq = _uses_modseq(keys)
        if with_modseq:
            self.enable_condstore()
        candidates = selected.resolve(SequenceSet.all())
        uids = selected.uids()
        matched = await session.backend.run(
            searching.search,
            session.store,
            session.principal,
            selected.folder_id,
            keys,
            candidates,
            max_seq=len(uids),
            max_uid=uids[-1] if uids else 0,
            recent=frozenset(selected.session_flags.recent_uids),
        )
        numbers = [message.uid if cmd.uid else seq for seq, message in matched]
        returns = getattr(cmd, "returns", None)
        if returns is not None:
            text = _esearch(cmd.tag, bool(cmd.uid), returns, matched, numbers, with_modseq)
        else:
            text = b" ".join([b"SEARCH", *(b"%d" % number for number in numbers)])
            if with_modseq and matched:
                text += b" (MODSEQ %d)" % max(message.modseq for _, message in matched)
        response = ResponseOk(cmd.tag, b"SEARCH completed.")
        response.add_untagged(UntaggedResponse(text))
        return response, await session.refresh(selected)

    # -- SORT, THREAD (RFC 5256) -------------------------------------------------------

    async def _sortables(
        self, keys: frozenset[SearchKey], uid: bool, *, structures: bool
    ) -> list[sorting.Sortable]:
        """The messages matching ``keys``, with what SORT or THREAD needs of each."""
        session = self.imap_session
        selected = self.current
        if not uid:
            selected.hide_expunged = True
        if _uses_modseq(keys):
            self.enable_condstore()
        candidates = selected.resolve(SequenceSet.all())
        uids = selected.uids()
        store, principal, folder_id = session.store, session.principal, selected.folder_id

        def work() -> list[sorting.Sortable]:
            matched = searching.search(
                store,
                principal,
                folder_id,
                keys,
                candidates,
                max_seq=len(uids),
                max_uid=uids[-1] if uids else 0,
                recent=frozenset(selected.session_flags.recent_uids),
            )
            loaded: dict[int, Any] = {}
            if structures:
                wanted = [message.uid for _, message in matched]
                for start in range(0, len(wanted), searching.BATCH):
                    chunk = wanted[start : start + searching.BATCH]
                    loaded.update(store.structures(principal, folder_id, chunk))
            return [
                sorting.Sortable(
                    message.uid if uid else seq,
                    seq,
                    message.internal_date,
                    message.size,
                    loaded.get(message.uid),
                )
                for seq, message in matched
            ]

        return await session.backend.run(work)

    async def do_sort(self, cmd: SortCommand) -> _CommandRet:
        """SORT and UID SORT: ``* SORT n...`` (RFC 5256 §4)."""
        if not cmd.charset:
            return _bad_charset(cmd.tag), None
        needs_structure = any(name not in (b"ARRIVAL", b"SIZE") for name, _ in cmd.criteria)
        items = await self._sortables(cmd.keys, cmd.uid, structures=needs_structure)
        numbers = sorting.sort(items, cmd.criteria)
        response = ResponseOk(cmd.tag, b"SORT completed.")
        response.add_untagged(
            UntaggedResponse(b" ".join([b"SORT", *(b"%d" % number for number in numbers)]))
        )
        return response, await self.imap_session.refresh(self.current)

    async def do_thread(self, cmd: ThreadCommand) -> _CommandRet:
        """THREAD and UID THREAD: ``* THREAD (1 2)(3)`` (RFC 5256 §4)."""
        if not cmd.charset:
            return _bad_charset(cmd.tag), None
        items = await self._sortables(cmd.keys, cmd.uid, structures=True)
        if cmd.algorithm == b"REFERENCES":
            roots = sorting.references(items)
        else:
            roots = sorting.ordered_subject(items)
        response = ResponseOk(cmd.tag, b"THREAD completed.")
        text = sorting.render_threads(roots)
        response.add_untagged(UntaggedResponse(b"THREAD " + text if text else b"THREAD"))
        return response, await self.imap_session.refresh(self.current)
