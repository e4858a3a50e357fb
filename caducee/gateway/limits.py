"""Bounded resources shared by every listener (issue 12, point 3).

:class:`ConnectionLimiter` counts the open connections of a listener family
(SMTP, IMAP, HTTP) in one process, in total and per client address, and says
whether one more may be served. :class:`DataBudget` counts the SMTP DATA bytes
held in memory across all sessions of a process.

Both are plain counters used from the event loop's thread only: no lock.
An IPv6 client is counted per /64 (one host usually owns a whole /64); an
IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def client_key(peername: Any) -> str:
    """The key a client address is counted under (``peername`` of a transport)."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    if not isinstance(host, str):
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionLimiter:
    """Open connections of one listener family: at most ``total``, ``per_ip`` per client."""

    __slots__ = ("__weakref__", "admitted", "open", "per_client", "per_ip", "refused", "total")

    def __init__(self, *, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.admitted = 0  # since the start, for metrics
        self.refused = 0

    def admit(self, key: str) -> str | None:
        """Count one more connection of ``key``; None when admitted, else why not.

        A refused connection is not counted (do not :meth:`release` it).
        """
        if self.open >= self.total:
            self.refused += 1
            return "total"
        current = self.per_client.get(key, 0)
        if current >= self.per_ip:
            self.refused += 1
            return "per-ip"
        self.open += 1
        self.admitted += 1
        self.per_client[key] = current + 1
        return None

    def release(self, key: str) -> None:
        """An admitted connection of ``key`` has closed."""
        current = self.per_client.get(key, 0)
        if current <= 1:
            self.per_client.pop(key, None)
        else:
            self.per_client[key] = current - 1
        self.open = max(0, self.open - 1)


class DataBudget:
    """SMTP DATA bytes held in memory by all sessions of a process, at most ``limit``.

    A session always gets what it asks when no other session holds any bytes, so a
    message of the largest accepted size can always be received when the gateway is quiet.
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int, own: int = 0) -> bool:
        """Hold ``size`` more bytes for a session already holding ``own``; False if no room.

        Nothing is held when the answer is False.
        """
        if size <= 0:
            return True
        if self.held > own and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        """Release ``size`` bytes held before."""
        self.held = max(0, self.held - size)

    def hold(self) -> Held:
        """A session's share of the budget, empty for now."""
        return Held(self)


class Held:
    """The bytes one session holds of a :class:`DataBudget`; release them when done."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: DataBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes; False (nothing more held) when they do not fit."""
        if not self.budget.take(size, own=self.size):
            return False
        self.size += max(0, size)
        return True

    def grow_to(self, size: int) -> bool:
        """Hold at least ``size`` bytes in all; False when they do not fit."""
        return size <= self.size or self.take(size - self.size)

    def release(self) -> None:
        """Give every byte held back to the budget."""
        self.budget.give_back(self.size)
        self.size = 0
