"""The lock one process's writers to a SQLite file queue on, clients' writes first (issue 19).

SQLite has one writer at a time, and each commit waits for its fsync. In ``serve`` the
writers of the main process are the group committer (an SMTP client waits for its ``250``),
the IMAP sessions (a client waits for its reply, an IDLE session for the ``\\Recent`` claim
that precedes ``EXISTS``) and the job workers (filing, notifications, relay: nobody waits on
the line). With a plain lock, each delivery batch queued behind whatever job transaction held
the file, often two or three fsyncs deep: at half load, the time to ``250`` reached p99 97 ms
and ``250`` → ``EXISTS`` 113 ms, with the lock wait the largest part.

Here a thread marked with :func:`mark_background_writer` (the job workers do it) lets the
other writers that are waiting go first. It does not wait for them forever: after
:data:`BACKGROUND_PATIENCE_SECONDS` it goes first instead, as soon as the lock is released,
so a steady stream of deliveries delays jobs by a bounded time and never starves them.

Foreground writers are served in the order they came. A ``threading.Condition`` alone is not
fair: the group committer, which takes the lock again as soon as it has the next batch, won
nearly every release, and an IDLE session's ``\\Recent`` claim waited p50 17 ms, p90 47 ms
and up to 184 ms for it at half load with one process (p99 ``250`` → ``EXISTS`` 220 ms).

Reentrant, like the lock it replaces: a thread already holding it gets it again at once.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time

BACKGROUND_PATIENCE_SECONDS = 0.1
"""How long a background writer lets foreground writers pass before it goes first."""

_thread_role = threading.local()


def mark_background_writer() -> None:
    """Mark the calling thread's SQLite writes as deferrable (a job worker's thread)."""
    _thread_role.background = True


def _is_background() -> bool:
    return bool(getattr(_thread_role, "background", False))


class WriterLock:
    """A reentrant lock where foreground waiters pass background ones, for a bounded time."""

    def __init__(self, patience: float = BACKGROUND_PATIENCE_SECONDS) -> None:
        self.patience = patience
        self._state = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._foreground_queue: collections.deque[int] = collections.deque()
        """Waiting foreground writers' tickets, in arrival order: they are served in it."""
        self._tickets = itertools.count()
        self._overdue = 0
        """Background waiters past their patience: foreground writers let them go first."""
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many threads wait for the lock now."""
        with self._state:
            return self._waiting

    def acquire(self, timeout: float) -> bool:
        """Take the lock within ``timeout`` seconds; ``False`` if it was not free by then."""
        me = threading.get_ident()
        background = _is_background()
        with self._state:
            if self._owner == me:
                self._depth += 1
                return True
            now = time.monotonic()
            deadline = now + timeout
            polite_until = now + self.patience
            overdue = False
            ticket = -1
            if not background:
                ticket = next(self._tickets)
                self._foreground_queue.append(ticket)
            self._waiting += 1
            try:
                while True:
                    now = time.monotonic()
                    if background and not overdue and now >= polite_until:
                        # Its turn now: a writer releasing the lock and taking it again at
                        # once would otherwise win every time (a Condition is not fair).
                        overdue = True
                        self._overdue += 1
                    if background:
                        may_take = overdue or not self._foreground_queue
                    else:
                        may_take = not self._overdue and self._foreground_queue[0] == ticket
                    if self._owner is None and may_take:
                        self._owner = me
                        self._depth = 1
                        return True
                    if now >= deadline:
                        return False
                    wake_at = deadline if overdue or not background else polite_until
                    self._state.wait(max(0.0, min(deadline, wake_at) - now))
            finally:
                self._waiting -= 1
                if overdue:
                    self._overdue -= 1
                    self._state.notify_all()  # foreground waiters may go again
                if not background:
                    self._foreground_queue.remove(ticket)
                    self._state.notify_all()  # the next in line, or background waiters, may go

    def release(self) -> None:
        """Give the lock back (once per :meth:`acquire`)."""
        with self._state:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a writer lock this thread does not hold")
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._state.notify_all()
