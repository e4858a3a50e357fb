"""Login events written so that a burst of failures never fails the request (F4).

Each sign-in attempt (success, failure, refusal while delayed) is one ``login`` audit event
(:func:`caducee.storage.audit.login_event`, the vocabulary every channel shares). Writing it
is a short write transaction; under a burst on SQLite, writers queue on the database's
write lock and one may still fail with "database is locked". :class:`LoginAudit` retries a
few times with growing pauses, and if the event still cannot be written, hands it to one
background thread that keeps retrying (for ``patience`` seconds) instead of failing the
sign-in with a server error. An event that is finally dropped is logged as an error (its
facts, never a secret).

From the event loop (:meth:`LoginAudit.record_async`), events go through a group committer
(:class:`~caducee.storage.group_commit.GroupCommitter`): the logins of concurrent clients
share one transaction and one fsync, and each sign-in is answered once its event is committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import find_account
from caducee.storage.audit import login_event
from caducee.storage.db import Database
from caducee.storage.group_commit import GroupCommitter

log = logging.getLogger("caducee.identity")

RETRY_PAUSES = (0.05, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class LoginFact:
    """One sign-in attempt to audit (no secret, no address: the account is looked up)."""

    channel: str
    method: str
    success: bool
    account_id: int | None = None
    account_kind: str | None = None
    named: str | None = None
    """The address the credentials named, to find the account of a failure (not stored)."""
    throttled: bool = False


def _write(session: Session, fact: LoginFact) -> None:
    account_id, kind = fact.account_id, fact.account_kind
    if account_id is None and fact.named:
        account = find_account(session, fact.named)
        account_id = account.id if account is not None else None
    login_event(
        session,
        account_id=account_id,
        account_kind=kind,
        success=fact.success,
        method=fact.method,
        channel=fact.channel,
        throttled=fact.throttled,
    )


def _transient(error: Exception) -> bool:
    if isinstance(error, OperationalError):
        return True
    if isinstance(error, DBAPIError):
        text = str(error.orig).lower()
        return "locked" in text or "busy" in text or "serializ" in text or "deadlock" in text
    return False


class LoginAudit:
    """Writes login events with retries, and a background retrier for the stubborn ones."""

    def __init__(
        self,
        database: Database,
        *,
        pauses: tuple[float, ...] = RETRY_PAUSES,
        patience: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.pauses = pauses
        self.patience = patience
        self.sleep = sleep
        self._later: queue.Queue[tuple[float, LoginFact]] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._committer: GroupCommitter | None = None
        self.written = 0
        self.deferred = 0
        self.dropped = 0

    def _try(self, fact: LoginFact) -> Exception | None:
        try:
            with self.database.transaction() as session:
                _write(session, fact)
        except (OperationalError, DBAPIError) as error:
            if not _transient(error):
                raise
            return error
        self.written += 1
        return None

    def record(self, fact: LoginFact) -> None:
        """Write the event now (retrying briefly), or leave it to the background retrier."""
        for pause in (*self.pauses, None):
            error = self._try(fact)
            if error is None:
                return
            if pause is not None:
                self.sleep(pause)
        self._defer(fact)

    def _group(self) -> GroupCommitter:
        with self._lock:
            if self._committer is None:
                self._committer = GroupCommitter(self.database, name="audit-logins")
                self._committer.start()
            return self._committer

    async def record_async(self, fact: LoginFact) -> None:
        """:meth:`record` from the event loop, sharing commits with concurrent sign-ins."""
        try:
            await self._group().run(lambda session: _write(session, fact))
        except (OperationalError, DBAPIError) as error:
            if not _transient(error):
                raise
            await asyncio.to_thread(self.record, fact)  # retries, then the background retrier
            return
        self.written += 1

    async def record_if(self, condition: Callable[[Session], bool], fact: LoginFact) -> bool:
        """Write ``fact`` if ``condition`` holds, read in the same (group-committed) transaction.

        For a remembered sign-in: the fingerprint check and its login event cost one trip.
        """

        def work(session: Session) -> bool:
            if not condition(session):
                return False
            _write(session, fact)
            return True

        try:
            written = await self._group().run(work)
        except (OperationalError, DBAPIError) as error:
            if not _transient(error):
                raise
            return await asyncio.to_thread(self._checked_record, condition, fact)
        if written:
            self.written += 1
        return written

    def _checked_record(self, condition: Callable[[Session], bool], fact: LoginFact) -> bool:
        with self.database.reading() as session:
            if not condition(session):
                return False
        self.record(fact)
        return True

    def close(self) -> None:
        """Stop the group committer after the events already submitted."""
        with self._lock:
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.stop()

    def _defer(self, fact: LoginFact) -> None:
        self.deferred += 1
        log.warning(
            "audit write deferred", extra={"channel": fact.channel, "account": fact.account_id}
        )
        try:
            self._later.put_nowait((time.monotonic() + self.patience, fact))
        except queue.Full:
            self._drop(fact)
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._retry_forever, name="audit-retry", daemon=True
                )
                self._thread.start()

    def _drop(self, fact: LoginFact) -> None:
        self.dropped += 1
        log.error(
            "audit event dropped",
            extra={
                "channel": fact.channel,
                "account": fact.account_id,
                "success": fact.success,
                "method": fact.method,
            },
        )

    def _retry_forever(self) -> None:
        while True:
            try:
                deadline, fact = self._later.get(timeout=30)
            except queue.Empty:
                return
            while True:
                try:
                    error = self._try(fact)
                except Exception:  # a non-transient failure: nothing more to try
                    self._drop(fact)
                    break
                if error is None:
                    break
                if time.monotonic() > deadline:
                    self._drop(fact)
                    break
                self.sleep(1.0)

    def pending(self) -> int:
        """Events waiting for the background retrier (for tests and doctor)."""
        return self._later.qsize()


def write_with_retries(
    database: Database,
    work: Callable[[Session], object],
    *,
    pauses: tuple[float, ...] = RETRY_PAUSES,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run ``work`` in a write transaction, again after a pause when the database is busy.

    For audit events that must exist before the access they record is served (an IMAP
    message read): the last failure is raised, and the caller refuses the access.
    """
    for pause in (*pauses, None):
        try:
            with database.transaction() as session:
                work(session)
            return
        except (OperationalError, DBAPIError) as error:
            if pause is None or not _transient(error):
                raise
            sleep(pause)
