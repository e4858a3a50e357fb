"""Wake-ups for IDLE sessions of this process: local writes, the SMTP hook, other processes.

A session waiting in IDLE on a folder of account *A* waits on an
:class:`asyncio.Event` registered here under *A*. Three things set it:

* a write by another IMAP session of this process (:meth:`MailboxEvents.touch`);
* the SMTP server of this process, after the commit of a delivery, through
  :meth:`MailboxEvents.notify_new_mail` (thread-safe; the hook ``serve`` calls);
* the :class:`~caducee.mailboxes.imap_changes.ChangeFeed`, for writes made by
  other processes (PostgreSQL ``LISTEN``; polling on SQLite).

Accounts are watched (polled) while one of their sessions has a folder
selected, so the feed has its baseline before the client starts idling.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterable


class MailboxEvents:
    """Per-account wake-up events for the sessions of one event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._interest: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._versions: Counter[int] = Counter()
        self._epoch = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the sessions run on (notifications from other threads are passed to it)."""
        self._loop = loop

    # -- sessions ----------------------------------------------------------------------

    def watch(self, account_id: int) -> None:
        with self._lock:
            self._interest[account_id] += 1

    def unwatch(self, account_id: int) -> None:
        with self._lock:
            self._interest[account_id] -= 1
            if self._interest[account_id] <= 0:
                del self._interest[account_id]

    def watched(self) -> list[int]:
        """Accounts some session has a folder selected in (read by the change feed's thread)."""
        with self._lock:
            return list(self._interest)

    def waiter(self, account_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(account_id, set()).add(event)
        return event

    def forget(self, account_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(account_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[account_id]

    def version(self, account_id: int) -> tuple[int, int]:
        """Changes when a change of ``account_id`` is reported (compare, do not interpret)."""
        return self._epoch, self._versions[account_id]

    # -- notifications -----------------------------------------------------------------

    def touch(self, account_id: int) -> None:
        """Wake the waiters of ``account_id`` (call on the loop)."""
        self._versions[account_id] += 1
        for event in self._waiters.get(account_id, ()):
            event.set()

    def _fire(self, account_id: int | None) -> None:
        if account_id is None:
            self._epoch += 1
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
        else:
            self.touch(account_id)

    def notify(self, account_id: int | None) -> None:
        """Thread-safe: ``account_id`` changed (None: anything may have changed)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire(account_id)
        else:
            loop.call_soon_threadsafe(self._fire, account_id)

    def notify_new_mail(self, account_ids: Iterable[int]) -> None:
        """The post-commit hook of SMTP delivery: these accounts received mail (thread-safe)."""
        for account_id in set(account_ids):
            self.notify(account_id)
