"""Login and the per-connection session: pymap's backend interfaces over :class:`ImapStore`.

pymap asks a backend for a ``LoginInterface`` (credentials → identity →
session) and a ``SessionInterface`` (folders, selection, updates). Its own
backends (dict, maildir, redis) hold mailboxes as in-process objects; ours
holds nothing but the account a connection authenticated as, and asks
:class:`~caducee.mailboxes.imap_store.ImapStore` — from a small thread pool,
since the store is synchronous SQLAlchemy — for everything else. That is what
makes every process of a multi-process gateway (K2) see the same mailboxes.

Isolation: a session is bound to one :class:`~caducee.mailboxes.imap_store.Principal`
at login and passes it to every store call; the store scopes every query to it.

Authentication takes the app password from pysasl's credentials (PLAIN or
LOGIN) and hands it to the identity service every door shares
(:mod:`caducee.mailboxes.accounts.identity`): one password check with its verified-credential
cache, one failure limiter with growing delays per (address, client IP) and per client
IP, one audit vocabulary (``login`` events, channel ``imap``) (C1, F4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from pymap.concurrent import Event
from pymap.context import socket_info
from pymap.exceptions import (
    AuthorizationFailure,
    InvalidAuth,
    MailboxConflict,
    MailboxError,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxReadOnly,
    NotSupportedError,
)
from pymap.flags import FlagOp, PermanentFlags, SessionFlags
from pymap.interfaces.filter import FilterSetInterface
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.message import MessageInterface
from pymap.interfaces.session import SessionInterface
from pymap.interfaces.token import TokenCredentials, TokensInterface
from pymap.mailbox import MailboxSnapshot
from pymap.parsing.message import AppendMessage
from pymap.parsing.response import ResponseCode
from pymap.parsing.response.code import AppendUid, CopyUid
from pymap.parsing.specials import ObjectId, SearchKey, SequenceSet
from pymap.parsing.specials.flag import Flag, Recent, Seen, Wildcard, get_system_flags
from pymap.selected import SelectedMailbox
from pymap.user import UserMetadata
from pysasl.creds.server import ServerCredentials

from caducee.gateway.imap.events import MailboxEvents
from caducee.gateway.imap.listing import ListEntry, ListRequest, list_entries
from caducee.gateway.imap.selected import CaduceeSelected, ImapMessage
from caducee.mailboxes.accounts.identity import IdentityService
from caducee.mailboxes.accounts.identity.audit import write_with_retries
from caducee.mailboxes.accounts.store import AccountKind
from caducee.mailboxes.imap_store import (
    DELIMITER,
    FlagsTooLong,
    FolderChanges,
    FolderExists,
    FolderHasChildren,
    FolderInfo,
    FolderNotFound,
    FolderProtected,
    ImapStore,
    InvalidFolderName,
    NewMessage,
    Principal,
)
from caducee.mailboxes.imap_subscriptions import Subscriptions, TooManySubscriptions
from caducee.storage.audit import ActorKind, message_read_event

log = logging.getLogger("caducee.imap")

T = TypeVar("T")

PERMANENT_FLAGS = frozenset(get_system_flags() - {Recent})
SESSION_FLAGS = frozenset({Recent})
MAX_KEYWORDS = 50
REFRESH_AT_LEAST = 1.0
FAILURE_PAUSE = 0.5
MAX_AUDITED_READS = 100_000
"""Seconds a wrong password waits for its answer (the limiter adds growing delays)."""


class Refused(MailboxError):
    """A ``NO [CANNOT]`` (or other code) with a reason, for store refusals."""

    def __init__(self, mailbox: str, reason: bytes, code: bytes = b"CANNOT") -> None:
        super().__init__(mailbox, reason, ResponseCode.of(code))


class ImapBackend:
    """What all sessions of a gateway process share: the store, wake-ups, a thread pool."""

    def __init__(
        self,
        store: ImapStore,
        events: MailboxEvents,
        identity: IdentityService,
        *,
        workers: int = 8,
    ) -> None:
        self.store = store
        self.subscriptions = Subscriptions(store.database)
        self.events = events
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imap-store")
        self._changes: dict[
            tuple[int, int, int | None], tuple[int, asyncio.Future[FolderChanges]]
        ] = {}
        self.writes = 0
        """Writes by this process's sessions so far (see :meth:`changes`)."""
        self.snapshots = FolderSnapshots()
        self.claimed: dict[FolderKey, int] = {}
        self._claiming: dict[FolderKey, asyncio.Future[None]] = {}
        r"""Per folder incarnation, the ``\Recent`` boundary this process knows is claimed."""
        self.inline_reads = store.database.dialect == "sqlite"
        """Small single-message reads run on the event loop (see :class:`FetchLoader`)."""
        self.identity = identity
        """The identity service every door of this process shares."""

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call in the IMAP thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(function, *args, **kwargs))

    async def claim_recent(self, principal: Principal, folder: FolderKey, upto: int) -> int | None:
        r""":meth:`ImapStore.claim_recent`, one claim per folder at a time in this process.

        When a message arrives, every session of the folder learns of it at once
        and would queue for the database's write lock to find it claimed (under
        imaptest stress, half the time spent waiting for SQLite's lock). Here the
        others wait for the claim on its way, then skip it when it covered their
        UIDs: this process knows the boundary reached ``upto``.
        """
        while (pending := self._claiming.get(folder)) is not None:
            await asyncio.shield(pending)
        if self.claimed.get(folder, 0) >= upto:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claiming[folder] = done
        try:
            claimed = await self.run(self.store.claim_recent, principal, folder[0], folder[1], upto)
            if len(self.claimed) > 10_000:
                self.claimed.clear()
            self.claimed[folder] = max(self.claimed.get(folder, 0), upto)
            return claimed
        finally:
            del self._claiming[folder]
            done.set_result(None)

    def wrote(self) -> int:
        """Count a write by one of this process's sessions; its number (see :meth:`changes`)."""
        self.writes += 1
        return self.writes

    async def changes(
        self, principal: Principal, folder: FolderKey, since: int | None, *, after: int = 0
    ) -> FolderChanges:
        """Store changes of a folder incarnation, with concurrent identical questions (an
        IDLE wake-up storm) asked once; :class:`FolderNotFound` once that incarnation is gone.

        A question joins one already on its way only if that one was asked after write
        number ``after`` (the caller's own last write): an answer read before a session's
        own EXPUNGE or STORE must never be that session's view after it (its EXPUNGE
        responses would come a command late). Other sessions' changes may arrive one
        refresh later, as they would have if they had come a moment later.
        """
        key = (folder[0], folder[1], since)
        entry = self._changes.get(key)
        if entry is None or entry[0] < after:
            pending = asyncio.ensure_future(
                self.run(self.store.changes, principal, folder[0], since, uid_validity=folder[1])
            )
            entry = (self.writes, pending)
            self._changes[key] = entry
            current = entry

            def forget(_: object) -> None:
                if self._changes.get(key) is current:
                    del self._changes[key]

            pending.add_done_callback(forget)
        return await asyncio.shield(entry[1])

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


FolderKey = tuple[int, int]
"""A folder incarnation: (folder id, UIDVALIDITY). A deleted folder's id may come back
(SQLite reuses the largest rowid); its UIDVALIDITY never does."""


@dataclass(frozen=True, slots=True)
class FolderCopy:
    """A held copy of a folder incarnation's messages at ``modseq`` (never modified)."""

    folder_id: int
    uid_validity: int
    modseq: int
    messages: list[ImapMessage]

    @property
    def identity(self) -> tuple[int, int, int]:
        """(folder id, UIDVALIDITY, modseq): what the store needs to send only the changes."""
        return self.folder_id, self.uid_validity, self.modseq


class FolderSnapshots:
    """The last known content of recently selected folders, shared by this process's sessions.

    A SELECT then asks the store only for what changed since that copy, instead
    of every entry of the folder (10,000 rows and objects for a large one).
    The cached messages are never modified, only replaced. Entries are keyed by
    folder *incarnation* (id and UIDVALIDITY), so no copy can outlive its folder:
    after DELETE and CREATE of a name, the new folder never inherits the old
    one's messages, even when it got the same id (issue 15).
    """

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._folders: OrderedDict[FolderKey, tuple[int, list[ImapMessage]]] = OrderedDict()
        self._names: dict[tuple[int, str], FolderKey] = {}

    def known(self, account_id: int, name: str) -> FolderCopy | None:
        """The copy held for a name, if any: the base a SELECT asks the store's changes against.

        The caller keeps this copy and gives it back to :meth:`apply`: another session may
        replace or evict the entry while the store is asked, and a delta applied to any other
        base would lose every message it does not mention (issue 15: a session shown a folder
        without its unchanged messages).
        """
        key = self._names.get((account_id, name))
        if key is None:
            return None
        held = self._folders.get(key)
        if held is None:
            return None
        return FolderCopy(key[0], key[1], held[0], held[1])

    def apply(
        self, account_id: int, name: str, changes: FolderChanges, base: FolderCopy | None
    ) -> list[ImapMessage]:
        """The folder's messages after ``changes`` (read against ``base``, the copy
        :meth:`known` gave), remembered for the next SELECT."""
        folder = changes.folder
        key = (folder.id, folder.uid_validity)
        if changes.since is None:
            messages = [ImapMessage(entry) for entry in changes.entries]
        elif base is None or base.identity != (*key, changes.since):
            raise RuntimeError("folder changes read against a copy that was not given")
        elif not changes.entries and not changes.expunged:
            messages = base.messages
        else:
            by_uid = {message.uid: message for message in base.messages}
            for uid in changes.expunged:
                by_uid.pop(uid, None)
            for entry in changes.entries:
                by_uid[entry.uid] = ImapMessage(entry)
            messages = [by_uid[uid] for uid in sorted(by_uid)]
        self._folders[key] = (folder.highest_modseq, messages)
        self._folders.move_to_end(key)
        self._names[(account_id, name)] = key
        while len(self._folders) > self.limit:
            self._folders.popitem(last=False)
        if len(self._names) > 10 * self.limit:
            self._names.clear()
        return messages


class _NoTokens(TokensInterface):
    """Bearer tokens are not offered over IMAP (app passwords only)."""

    def get_login_token(
        self,
        identifier: str,
        authcid: str,
        key: bytes,
        *,
        authzid: str | None = None,
        location: str | None = None,
        expiration: datetime | None = None,
    ) -> str | None:
        return None

    def get_admin_token(
        self,
        admin_key: bytes | None,
        *,
        authzid: str | None = None,
        location: str | None = None,
        expiration: datetime | None = None,
    ) -> str | None:
        return None

    def parse(self, authzid: str, token: str, *, admin_keys: Any = frozenset()) -> TokenCredentials:
        raise ValueError("tokens are not supported")


class _SecretCatcher:
    """Takes the secret out of pysasl credentials through their public ``verify``."""

    def __init__(self) -> None:
        self.secret = ""

    def compare_authcid(self, authcid: str) -> bool:
        return True

    def compare_secret(self, value: str) -> bool:
        self.secret = value
        return True

    def get_clear_secret(self) -> str | None:
        return None

    @property
    def authcid(self) -> str:
        return ""


class Login(LoginInterface):
    """App-password login (PLAIN, LOGIN), slowed down and then refused after failures."""

    def __init__(self, backend: ImapBackend) -> None:
        self.backend = backend

    @property
    def tokens(self) -> TokensInterface:
        return _NoTokens()

    async def authenticate(self, credentials: ServerCredentials) -> IdentityInterface:
        try:
            ip = str(socket_info.get().peername_ip or "unknown")
        except LookupError:
            ip = "unknown"
        catcher = _SecretCatcher()
        credentials.verify(catcher)
        backend = self.backend
        outcome = await backend.identity.sign_in(
            credentials.authcid, catcher.secret, ip=ip, channel="imap"
        )
        if outcome.throttled is not None:
            raise InvalidAuth("Too many failed logins; try again later.")
        if outcome.principal is None:
            await asyncio.sleep(FAILURE_PAUSE)
            raise InvalidAuth()
        principal = outcome.principal
        if outcome.fresh:
            await backend.run(backend.store.prepare_account, principal)
        return Identity(backend, principal)

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> IdentityInterface:
        if authzid and authzid.strip().lower() != authenticated.name:
            raise AuthorizationFailure()
        return authenticated


class Identity(IdentityInterface):
    """An authenticated account."""

    def __init__(self, backend: ImapBackend, principal: Principal) -> None:
        self.backend = backend
        self.principal = principal

    @property
    def name(self) -> str:
        return self.principal.address

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    def new_session(self) -> AbstractAsyncContextManager[SessionInterface]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[SessionInterface]:
        session = ImapSession(self.backend, self.principal)
        try:
            yield session
        finally:
            session.close()

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        return None

    async def get(self) -> UserMetadata:
        raise NotSupportedError("user metadata is not available over IMAP")

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotSupportedError("user metadata is not available over IMAP")

    async def delete(self) -> None:
        raise NotSupportedError("user metadata is not available over IMAP")


def mailbox_id(folder: FolderInfo) -> ObjectId:
    return ObjectId(b"F%d" % folder.id)


def store_flags(flags: Iterable[Flag]) -> frozenset[str]:
    """The flags a client may store: the permanent system flags and keywords."""
    result = {str(flag) for flag in flags if flag in PERMANENT_FLAGS or not flag.is_system}
    if len([flag for flag in result if not flag.startswith("\\")]) > MAX_KEYWORDS:
        raise Refused("", b"Too many keywords on one message.", b"LIMIT")
    return frozenset(result)


FLAG_MODES = {FlagOp.ADD: "add", FlagOp.DELETE: "remove", FlagOp.REPLACE: "replace"}


def _translate(name: str, error: Exception) -> MailboxError:
    if isinstance(error, FolderNotFound):
        return MailboxNotFound(name)
    if isinstance(error, FolderExists):
        return MailboxConflict(name)
    if isinstance(error, FolderHasChildren):
        return MailboxHasChildren(name)
    if isinstance(error, FolderProtected):
        return Refused(name, b"INBOX and the special-use folders cannot be deleted or renamed.")
    if isinstance(error, TooManySubscriptions):
        return Refused(name, b"Too many subscriptions.", b"LIMIT")
    if isinstance(error, InvalidFolderName):
        return Refused(name, str(error).encode("ascii", "replace") + b".")
    if isinstance(error, FlagsTooLong):
        return Refused(name, b"Too many flags on one message.", b"LIMIT")
    raise error


class ImapSession(SessionInterface):
    """One authenticated connection's view of its account's folders."""

    def __init__(self, backend: ImapBackend, principal: Principal) -> None:
        self.backend = backend
        self.store = backend.store
        self.events = backend.events
        self.principal = principal
        self._watching = False
        self._seen_version: tuple[int, int] | None = None
        self._refreshed_at = 0.0
        self._reads_audited: set[int] = set()
        self._last_write = 0

    def must_audit(self, message_ids: Sequence[int]) -> bool:
        """Whether :meth:`audit_reads` has an event to write for these reads (a patient
        mailbox, a message not read yet in this session): asked on the event loop, so
        that other reads cost no thread hop."""
        if self.principal.kind != AccountKind.PATIENT.value:
            return False
        return any(i not in self._reads_audited for i in message_ids)

    def audit_reads(self, message_ids: Sequence[int]) -> None:
        """One ``message.read`` event (F4, channel ``imap``) per message whose body this
        session reads for the first time, for patient mailboxes; written before the body
        is sent (with retries), so that a read the trail cannot hold is not served."""
        if self.principal.kind != AccountKind.PATIENT.value:
            return
        new = [i for i in dict.fromkeys(message_ids) if i not in self._reads_audited]
        if not new:
            return
        principal = self.principal

        def work(session: Any) -> None:
            for message_id in new:
                message_read_event(
                    session,
                    reader_account_id=principal.account_id,
                    reader_kind=ActorKind.PATIENT.value,
                    message_id=message_id,
                    mailbox_account_id=principal.account_id,
                    channel="imap",
                )

        write_with_retries(self.store.database, work)
        if len(self._reads_audited) > MAX_AUDITED_READS:
            self._reads_audited.clear()
        self._reads_audited.update(new)

    @property
    def owner(self) -> str:
        return self.principal.address

    @property
    def filter_set(self) -> FilterSetInterface[Any] | None:
        return None

    def close(self) -> None:
        self.unwatch()

    async def cleanup(self) -> None:
        pass

    def watch(self) -> None:
        if not self._watching:
            self.events.watch(self.principal.account_id)
            self._watching = True

    def unwatch(self) -> None:
        if self._watching:
            self.events.unwatch(self.principal.account_id)
            self._watching = False

    async def _call(self, name: str, function: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return await self.backend.run(function, *args, **kw)
        except (FolderNotFound, FolderExists, FolderHasChildren, FolderProtected) as error:
            raise _translate(name, error) from None
        except (InvalidFolderName, FlagsTooLong) as error:
            raise _translate(name, error) from None

    def touched(self) -> None:
        """After a write of this session: wake the others, and never reuse an older answer."""
        self._last_write = self.backend.wrote()
        self.events.touch(self.principal.account_id)

    # -- folders -----------------------------------------------------------------------

    async def folders(self) -> list[FolderInfo]:
        return await self.backend.run(self.store.list_folders, self.principal)

    async def list_mailboxes(
        self,
        ref_name: str,
        filter_: str,
        subscribed: bool = False,
        selected: SelectedMailbox | None = None,
    ) -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]], SelectedMailbox | None]:
        """pymap's LIST/LSUB entry point, kept for its interface: the connection state
        answers every LIST and LSUB through :meth:`list_entries`."""
        request = ListRequest(ref_name, [filter_], lsub=subscribed)
        entries = await self.list_entries(request)
        listed = [(entry.name, DELIMITER, entry.attributes) for entry in entries]
        return listed, await self.refresh(selected)

    async def list_entries(self, request: ListRequest) -> list[ListEntry]:
        """What a LIST or LSUB returns (:func:`listing.list_entries`), from one look at the
        folders and, when the request involves them, one at the subscriptions."""
        folders = await self.folders()
        existing = {folder.name: folder.special_use for folder in folders}
        wants_subscriptions = request.lsub or request.select_subscribed or request.return_subscribed
        subscribed: frozenset[str] = frozenset()
        if wants_subscriptions:
            subscribed = await self.backend.run(self.backend.subscriptions.names, self.principal)
        return list_entries(request, existing, subscribed, DELIMITER)

    async def get_mailbox(
        self, name: str, selected: SelectedMailbox | None = None
    ) -> tuple[MailboxSnapshot, SelectedMailbox | None]:
        status = await self._call(name, self.store.status, self.principal, name)
        folder = status.folder
        snapshot = MailboxSnapshot(
            mailbox_id(folder),
            False,
            folder.uid_validity,
            PERMANENT_FLAGS,
            SESSION_FLAGS,
            status.messages,
            status.recent,
            status.unseen,
            None,
            folder.uid_next,
        )
        return snapshot, await self.refresh(selected)

    async def create_mailbox(
        self, name: str, selected: SelectedMailbox | None = None
    ) -> tuple[ObjectId, SelectedMailbox | None]:
        folder = await self._call(name, self.store.create_folder, self.principal, name)
        return mailbox_id(folder), await self.refresh(selected)

    async def delete_mailbox(
        self, name: str, selected: SelectedMailbox | None = None
    ) -> SelectedMailbox | None:
        await self._call(name, self.store.delete_folder, self.principal, name)
        self.touched()
        return await self.refresh(selected)

    async def rename_mailbox(
        self, before_name: str, after_name: str, selected: SelectedMailbox | None = None
    ) -> SelectedMailbox | None:
        await self._call(
            before_name, self.store.rename_folder, self.principal, before_name, after_name
        )
        # Subscriptions follow the folder (a second transaction: if it failed, the
        # folder is renamed and its subscription stays under the old name, as RFC
        # 3501 allows).
        await self._call(
            after_name, self.backend.subscriptions.rename, self.principal, before_name, after_name
        )
        return await self.refresh(selected)

    async def subscribe(
        self, name: str, selected: SelectedMailbox | None = None
    ) -> SelectedMailbox | None:
        await self._call(name, self.backend.subscriptions.subscribe, self.principal, name)
        return await self.refresh(selected)

    async def unsubscribe(
        self, name: str, selected: SelectedMailbox | None = None
    ) -> SelectedMailbox | None:
        await self._call(name, self.backend.subscriptions.unsubscribe, self.principal, name)
        return await self.refresh(selected)

    async def append_messages(
        self, name: str, messages: Sequence[AppendMessage], selected: SelectedMailbox | None = None
    ) -> tuple[AppendUid, SelectedMailbox | None]:
        new = [
            NewMessage(
                content=message.literal,
                flags=store_flags(message.flag_set),
                internal_date=message.when,
            )
            for message in messages
        ]
        try:
            outcome = await self._call(name, self.store.append, self.principal, name, new)
        except MailboxNotFound:
            raise MailboxNotFound(name, try_create=True) from None
        self.touched()
        return (
            AppendUid(outcome.uid_validity, [uid for _, uid in outcome.pairs]),
            await self.refresh(selected),
        )

    # -- selection ---------------------------------------------------------------------

    async def select_mailbox(
        self, name: str, readonly: bool = False
    ) -> tuple[MailboxSnapshot, SelectedMailbox]:
        snapshots = self.backend.snapshots
        base = snapshots.known(self.principal.account_id, name)
        selection = await self._call(
            name,
            self.store.select,
            self.principal,
            name,
            claim_recent=not readonly,
            known=None if base is None else base.identity,
        )
        folder = selection.changes.folder
        selected = CaduceeSelected(
            mailbox_id(folder),
            readonly,
            PermanentFlags(PERMANENT_FLAGS | {Wildcard}),
            SessionFlags(SESSION_FLAGS),
            lookup=folder.name,
        )
        selected.folder_id = folder.id
        selected.uid_validity = folder.uid_validity
        messages = snapshots.apply(self.principal.account_id, name, selection.changes, base)
        if selection.recent_from is not None:
            for message in messages:
                if message.uid >= selection.recent_from:
                    selected.session_flags.add_recent(message.uid)
        selected.load_all(messages)
        selected.mod_sequence = folder.highest_modseq
        unseen = [seq for seq, m in enumerate(messages, 1) if Seen not in m.permanent_flags]
        snapshot = MailboxSnapshot(
            mailbox_id(folder),
            readonly,
            folder.uid_validity,
            PERMANENT_FLAGS,
            SESSION_FLAGS,
            len(messages),
            selected.session_flags.recent,
            len(unseen),
            unseen[0] if unseen else None,
            folder.uid_next,
        )
        self.watch()
        return snapshot, selected

    async def refresh(
        self, selected: SelectedMailbox | None, *, force: bool = False
    ) -> SelectedMailbox | None:
        """Bring ``selected`` up to date with the store (new, changed and expunged messages).

        After ordinary commands the store is asked only when a change of this
        account was reported since the last look (by this process, the SMTP
        hook, or the change feed for other processes) or after a second
        without looking; NOOP, CHECK and IDLE always ask (``force``). This
        saves a database round trip per command when nothing happens.
        """
        if not isinstance(selected, CaduceeSelected):
            return selected
        version = self.events.version(self.principal.account_id)
        now = time.monotonic()
        if (
            not force
            and version == self._seen_version
            and now - self._refreshed_at < REFRESH_AT_LEAST
            and not selected.messages._pending_remove
        ):
            return selected
        self._seen_version = version
        self._refreshed_at = now
        try:
            changes = await self.backend.changes(
                self.principal,
                (selected.folder_id, selected.uid_validity),
                selected.mod_sequence,
                after=self._last_write,
            )
        except FolderNotFound:
            selected.set_deleted()
            return selected
        # Always: this also reports expunges held back while a FETCH, STORE or
        # SEARCH by sequence number was running (pymap's pending removals).
        known = selected.messages._cache  # pymap 0.36.7: uid -> message
        high = selected.high_uid
        arrived = [e.uid for e in changes.entries if e.uid > high and e.uid not in known]
        selected.add_updates([ImapMessage(e) for e in changes.entries], changes.expunged)
        if arrived and not selected.readonly and changes.recent_from <= arrived[-1]:
            claimed = await self.backend.claim_recent(
                self.principal, (selected.folder_id, selected.uid_validity), arrived[-1] + 1
            )
            if claimed is not None:
                for uid in arrived:
                    if uid >= claimed and uid in known:
                        selected.session_flags.add_recent(uid)
        if selected.mod_sequence is None or changes.folder.highest_modseq > selected.mod_sequence:
            selected.mod_sequence = changes.folder.highest_modseq
        return selected

    async def check_mailbox(
        self, selected: SelectedMailbox, *, wait_on: Event | None = None, housekeeping: bool = False
    ) -> SelectedMailbox:
        assert isinstance(selected, CaduceeSelected)
        if wait_on is None:
            refreshed = await self.refresh(selected, force=True)
            assert refreshed is not None
            return refreshed
        account = self.principal.account_id
        waiter = self.events.waiter(account)
        try:
            before = selected.mod_sequence
            await self.refresh(selected, force=True)
            if selected.mod_sequence != before or wait_on.is_set():
                return selected
            wake = asyncio.ensure_future(waiter.wait())
            done = asyncio.ensure_future(wait_on.wait())
            try:
                await asyncio.wait({wake, done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                done.cancel()
        finally:
            self.events.forget(account, waiter)
        refreshed = await self.refresh(selected, force=True)
        assert refreshed is not None
        return refreshed

    async def expunge_mailbox(
        self, selected: SelectedMailbox, uid_set: SequenceSet | None = None
    ) -> SelectedMailbox:
        assert isinstance(selected, CaduceeSelected)
        if selected.readonly:
            raise MailboxReadOnly()
        uids = None if uid_set is None else [m.uid for _, m in selected.resolve(uid_set)]
        await self._call("", self.store.expunge, self.principal, selected.folder_id, uids)
        self.touched()
        refreshed = await self.refresh(selected)
        assert refreshed is not None
        return refreshed

    async def _copy(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str, *, move: bool
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        assert isinstance(selected, CaduceeSelected)
        if move and selected.readonly:
            raise MailboxReadOnly()
        uids = [message.uid for _, message in selected.resolve(sequence_set)]
        try:
            outcome = await self._call(
                mailbox,
                self.store.copy,
                self.principal,
                selected.folder_id,
                uids,
                mailbox,
                move=move,
            )
        except MailboxNotFound:
            raise MailboxNotFound(mailbox, try_create=True) from None
        self.touched()
        copy_uid = CopyUid(outcome.uid_validity, outcome.pairs) if outcome.pairs else None
        refreshed = await self.refresh(selected)
        assert refreshed is not None
        return copy_uid, refreshed

    async def copy_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._copy(selected, sequence_set, mailbox, move=False)

    async def move_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._copy(selected, sequence_set, mailbox, move=True)

    # FETCH, SEARCH and STORE are answered by the connection state (batch loading,
    # CONDSTORE); pymap's per-message session calls are not used.

    async def fetch_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, set_seen: bool
    ) -> tuple[Iterable[tuple[int, MessageInterface]], SelectedMailbox]:
        raise NotImplementedError

    async def search_mailbox(
        self, selected: SelectedMailbox, keys: frozenset[SearchKey]
    ) -> tuple[Iterable[tuple[int, MessageInterface]], SelectedMailbox]:
        raise NotImplementedError

    async def update_flags(
        self,
        selected: SelectedMailbox,
        sequence_set: SequenceSet,
        flag_set: frozenset[Flag],
        mode: FlagOp = FlagOp.REPLACE,
    ) -> tuple[Iterable[tuple[int, MessageInterface]], SelectedMailbox]:
        raise NotImplementedError
