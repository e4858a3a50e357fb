"""One failure limiter for every door (SMTP AUTH, IMAP LOGIN, HTTP Basic): C1, issue 12.

Failures are counted under two keys:

* ``(account, source IP)``: a few free failures (a user mistyping); once they are spent, a
  delay that doubles with every further failure (``base``, ``2 × base``, … up to ``maximum``). While
  the delay runs, attempts for that account *from that address* are refused without
  checking the password. The same account from any other address is not affected: an
  attacker elsewhere cannot lock the real user out.
* ``source IP``: many more free failures (a hospital's NAT carries hundreds of users),
  then the same growing delays for every account from that address, *except* the
  accounts that signed in successfully from that address recently (``trusted_seconds``):
  one user guessing behind a NAT does not lock their colleagues out.

A success clears the pair's count and marks the pair as trusted. Counts fade: a key
with no failure for ``forget_seconds`` starts again from zero. Memory is bounded
(``max_keys`` per table, the oldest forgotten first).

Decisions are taken in memory (no I/O, no sleeping): callers ask
:meth:`FailureLimiter.check` before verifying, and answer with their protocol's "try later"
(SMTP ``454 4.7.0``, IMAP ``NO [UNAVAILABLE]``, HTTP ``429`` with ``Retry-After``) when it
returns a delay. With a :class:`~caducee.mailboxes.accounts.identity.shared_failures.SharedFailures`
store, failures and successes are also written to the database in the background and the
counts of other processes and nodes merged in, so that several nodes together give no more
free failures than one and a block on one node holds on all of them (within a poll). Keys
are digests of the account and address: the form shared at rest.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from caducee.mailboxes.accounts.identity.shared_failures import SharedCount, SharedFailures


@dataclass(frozen=True)
class LimiterPolicy:
    """The limiter's numbers (``[identity]`` settings)."""

    free_failures_per_account_ip: int = 10
    free_failures_per_ip: int = 100
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0
    forget_seconds: float = 3600.0
    trusted_seconds: float = 86400.0
    max_keys: int = 100_000


@dataclass
class _Count:
    failures: int
    last: float
    blocked_until: float


@dataclass(frozen=True)
class Decision:
    """Whether an attempt may be checked; if not, for how long it is refused."""

    retry_after: float = 0.0
    scope: str = ""
    """``account-ip`` or ``ip``: which count refused (for logs and audit rules)."""

    @property
    def allowed(self) -> bool:
        return self.retry_after <= 0

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds for ``Retry-After`` (at least 1)."""
        return max(1, math.ceil(self.retry_after))


ALLOWED = Decision()


def _normal(account: str) -> str:
    return account.strip().lower()


PAIR_PREFIX = "p:"
IP_PREFIX = "i:"


def pair_key(account: str, ip: str) -> str:
    """The key of an (account, source address) count: a digest, never the address itself."""
    material = _normal(account).encode("utf-8", "replace") + b"\x00" + ip.encode()
    return PAIR_PREFIX + hashlib.sha256(material).hexdigest()[:64]


def ip_key(ip: str) -> str:
    return IP_PREFIX + hashlib.sha256(ip.encode()).hexdigest()[:64]


class FailureLimiter:
    """Growing delays per (account, source IP) and per source IP; thread-safe."""

    def __init__(
        self,
        policy: LimiterPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedFailures | None = None,
    ) -> None:
        self.policy = policy or LimiterPolicy()
        self.clock = clock
        self._lock = threading.Lock()
        self._pairs: OrderedDict[str, _Count] = OrderedDict()
        self._ips: OrderedDict[str, _Count] = OrderedDict()
        self._trusted: OrderedDict[str, float] = OrderedDict()
        self.shared = shared
        if shared is not None:
            shared.attach(self.merge, self.delay_for)

    def _delay(self, failures: int, free: int) -> float:
        """After ``free`` failures: ``base``, then twice as long after each further one."""
        beyond = failures - free
        if beyond < 0:
            return 0.0
        policy = self.policy
        return float(min(policy.max_delay_seconds, policy.base_delay_seconds * 2**beyond))

    def delay_for(self, key: str, failures: int) -> float:
        """The block ``failures`` deserve under ``key`` (its scope decides the free ones)."""
        policy = self.policy
        free = (
            policy.free_failures_per_account_ip
            if key.startswith(PAIR_PREFIX)
            else policy.free_failures_per_ip
        )
        return self._delay(failures, free)

    def _live(self, table: OrderedDict[str, _Count], key: str, now: float) -> _Count | None:
        count = table.get(key)
        if count is not None and now - count.last > self.policy.forget_seconds:
            del table[key]
            return None
        return count

    def _trusted_pair(self, pair: str, now: float) -> bool:
        until = self._trusted.get(pair)
        return until is not None and until > now

    def check(self, account: str, ip: str) -> Decision:
        """May an attempt for ``account`` from ``ip`` be checked now?"""
        if self.shared is not None:
            self.shared.touch()
        now = self.clock()
        pair = pair_key(account, ip)
        with self._lock:
            count = self._live(self._pairs, pair, now)
            if count is not None and count.blocked_until > now:
                return Decision(count.blocked_until - now, "account-ip")
            by_ip = self._live(self._ips, ip_key(ip), now)
            if (
                by_ip is not None
                and by_ip.blocked_until > now
                and not self._trusted_pair(pair, now)
            ):
                return Decision(by_ip.blocked_until - now, "ip")
        return ALLOWED

    def _bounded(self, table: OrderedDict[str, _Count], key: str, count: _Count) -> None:
        table[key] = count
        table.move_to_end(key)
        while len(table) > self.policy.max_keys:
            table.popitem(last=False)

    def _count(self, table: OrderedDict[str, _Count], key: str, free: int, now: float) -> None:
        count = self._live(table, key, now) or _Count(0, now, 0.0)
        count.failures += 1
        count.last = now
        delay = self._delay(count.failures, free)
        if delay:
            count.blocked_until = now + delay
        self._bounded(table, key, count)

    def failed(self, account: str, ip: str) -> None:
        """Count one failed attempt (wrong password, unknown account, bad token)."""
        now = self.clock()
        pair, by_ip = pair_key(account, ip), ip_key(ip)
        policy = self.policy
        with self._lock:
            self._count(self._pairs, pair, policy.free_failures_per_account_ip, now)
            self._count(self._ips, by_ip, policy.free_failures_per_ip, now)
        if self.shared is not None:
            self.shared.failed(pair)
            self.shared.failed(by_ip)

    def succeeded(self, account: str, ip: str) -> None:
        """The right credentials from ``ip``: the pair starts again and is trusted there."""
        now = self.clock()
        pair = pair_key(account, ip)
        with self._lock:
            self._pairs.pop(pair, None)
            self._trusted[pair] = now + self.policy.trusted_seconds
            self._trusted.move_to_end(pair)
            while len(self._trusted) > self.policy.max_keys:
                self._trusted.popitem(last=False)
        if self.shared is not None:
            self.shared.succeeded(pair)

    def merge(self, shared: SharedCount) -> None:
        """Take a count from the shared store: the larger count and the later block win."""
        table = self._pairs if shared.key.startswith(PAIR_PREFIX) else self._ips
        now = self.clock()
        blocked = 0.0
        if shared.blocked_until is not None:
            remaining = (shared.blocked_until - datetime.now(UTC)).total_seconds()
            blocked = now + remaining if remaining > 0 else 0.0
        with self._lock:
            count = self._live(table, shared.key, now)
            if count is None:
                count = _Count(shared.failures, now, blocked)
            else:
                count.failures = max(count.failures, shared.failures)
                count.blocked_until = max(count.blocked_until, blocked)
            self._bounded(table, shared.key, count)
