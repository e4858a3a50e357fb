"""Failed sign-ins counted across every process and node of a gateway (C1, K2).

The :class:`~caducee.mailboxes.accounts.identity.limiter.FailureLimiter` decides in memory, so a
check costs no database trip. Alone, each process would count on its own: a gateway of
three nodes would give an attacker three times the free failures, and a block on one node
would not hold on the next. This module shares the counts through the database:

* every failure is added to the shared count of its key in one atomic upsert (the count
  fades like the local one: a key idle for ``forget_seconds`` starts again from one), and
  the block that count deserves is written with it; the local limiter then takes the larger
  of its own count and the shared one;
* a success deletes the shared count of its (account, address) pair;
* every ``poll_seconds`` each process reads the counts changed since its last look and
  merges them (larger count, later block), so a block decided on one node holds on the
  others within a poll interval; old rows are pruned on the way.

Keys are SHA-256 digests of the account and address (no address or IP in clear at rest).
Writes run on one background thread, never on the event loop, and a database that cannot
be reached only means the process counts alone until it can again (logged, never fatal: a
sign-in is not refused because the shared count is unavailable). The thread starts on the
first failure or check, so commands that never sign anyone in start none.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Index, Integer, String, case, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from caducee.storage.db import Base, Database, UtcDateTime, table_of
from caducee.storage.upsert import upsert_insert

log = logging.getLogger("caducee.identity")

POLL_SECONDS = 1.0
MAX_ROWS_PER_POLL = 10_000
PRUNE_EVERY_POLLS = 60
CLOCK_SKEW = timedelta(seconds=2)
"""Rows changed this long before the last one seen are read again (nodes' clocks differ)."""


class SignInFailure(Base):
    """One shared failure count: a (account, address) pair or an address."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_updated_at", "updated_at"),)

    key: Mapped[str] = mapped_column(String(66), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UtcDateTime())
    blocked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


_TABLE = table_of(SignInFailure)


@dataclass(frozen=True)
class SharedCount:
    """A count read back from the database, for the local limiter to merge."""

    key: str
    failures: int
    blocked_until: datetime | None


Merge = Callable[[SharedCount], None]
"""How the local limiter takes a shared count (the larger count, the later block)."""
DelayFor = Callable[[str, int], float]
"""The block, in seconds, that ``failures`` deserve under ``key``'s scope."""


class SharedFailures:
    """The database side of the failure limiter (see the module documentation)."""

    def __init__(
        self,
        database: Database,
        *,
        forget_seconds: float,
        poll_seconds: float = POLL_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.forget = timedelta(seconds=forget_seconds)
        self.poll_seconds = poll_seconds
        self.now = now
        self._merge: Merge | None = None
        self._delay_for: DelayFor | None = None
        self._work: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._seen = datetime(1970, 1, 1, tzinfo=UTC)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = threading.Event()
        self._polls = 0

    def attach(self, merge: Merge, delay_for: DelayFor) -> None:
        """Called by the limiter that owns this store."""
        self._merge, self._delay_for = merge, delay_for

    # -- from the limiter (any thread, never blocking) --------------------------------------

    def failed(self, key: str) -> None:
        self._ensure_started()
        self._work.put(("failed", key))

    def succeeded(self, key: str) -> None:
        self._ensure_started()
        self._work.put(("succeeded", key))

    def touch(self) -> None:
        """A check happened: make sure the poller runs (blocks from other nodes arrive)."""
        if self._thread is None:
            self._ensure_started()

    def close(self) -> None:
        self._stopped.set()
        self._work.put(None)

    # -- the background thread -------------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="sign-in-failures", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self._work.get(timeout=self.poll_seconds)
            except queue.Empty:
                item = ("poll", "")
            if item is None:
                return
            try:
                self._handle(*item)
            except Exception:  # the database may be away: count locally until it is back
                log.warning("shared sign-in failure counts unavailable", exc_info=True)

    def _handle(self, what: str, key: str) -> None:
        if what == "failed":
            self._merge_in(self.add_failure(key))
        elif what == "succeeded":
            self.clear(key)
        else:
            for count in self.changed_since():
                self._merge_in(count)

    def _merge_in(self, count: SharedCount) -> None:
        if self._merge is not None:
            self._merge(count)

    # -- database operations (public for tests and the operator's tools) ---------------------

    def add_failure(self, key: str) -> SharedCount:
        """One more failure under ``key``; the shared count and the block it now deserves."""
        now = self.now()
        cutoff = now - self.forget
        with self.database.transaction() as session:
            statement = upsert_insert(session, _TABLE).values(
                key=key, failures=1, last_failure_at=now, blocked_until=None, updated_at=now
            )
            failures: int = session.execute(
                statement.on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "failures": case(
                            (_TABLE.c.last_failure_at < cutoff, 1),
                            else_=_TABLE.c.failures + 1,
                        ),
                        "last_failure_at": now,
                        "updated_at": now,
                    },
                ).returning(_TABLE.c.failures)
            ).scalar_one()
            delay = self._delay_for(key, failures) if self._delay_for else 0.0
            blocked: datetime | None = None
            if delay > 0:
                blocked = now + timedelta(seconds=delay)
                session.execute(
                    update(_TABLE)
                    .where(_TABLE.c.key == key)
                    .where((_TABLE.c.blocked_until.is_(None)) | (_TABLE.c.blocked_until < blocked))
                    .values(blocked_until=blocked)
                )
        return SharedCount(key, failures, blocked)

    def clear(self, key: str) -> None:
        with self.database.transaction() as session:
            session.execute(delete(_TABLE).where(_TABLE.c.key == key))

    def changed_since(self) -> list[SharedCount]:
        """Counts changed since the last call (with an overlap for clock skew); prunes old rows."""
        now = self.now()
        with self.database.reading() as session:
            rows = session.execute(
                select(_TABLE.c.key, _TABLE.c.failures, _TABLE.c.blocked_until, _TABLE.c.updated_at)
                .where(_TABLE.c.updated_at > self._seen - CLOCK_SKEW)
                .order_by(_TABLE.c.updated_at)
                .limit(MAX_ROWS_PER_POLL)
            ).all()
        if rows:
            self._seen = max(self._seen, rows[-1].updated_at)
        self._polls += 1
        if self._polls % PRUNE_EVERY_POLLS == 0:  # now and then: forget what faded everywhere
            with self.database.transaction() as session:
                session.execute(
                    delete(_TABLE)
                    .where(_TABLE.c.last_failure_at < now - self.forget)
                    .where((_TABLE.c.blocked_until.is_(None)) | (_TABLE.c.blocked_until < now))
                )
        return [SharedCount(row.key, row.failures, row.blocked_until) for row in rows]
