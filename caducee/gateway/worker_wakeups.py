"""The wake-up channel from ``serve``'s SMTP worker processes to its main process.

With ``[smtp] processes`` above 1, the worker processes accept mail but IMAP runs only in the
main process: after each commit a worker writes the account ids that got mail on its stdout
pipe (:class:`WakeSender`), and the main process reads them (:func:`relay_wake_ups`) and
wakes those IDLE sessions at once, instead of at its next folder poll.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterable
from typing import Protocol


class NewMailListener(Protocol):
    """What the main process wakes: the IMAP listeners' ``notify_new_mail``."""

    def notify_new_mail(self, account_ids: Iterable[int]) -> None: ...


WAKE_BUFFER_BYTES = 64 * 1024
"""Wake-up bytes a worker lets wait for a slow main process before it coalesces them."""
WAKE_MAX_PENDING = 10_000
"""Distinct accounts a worker remembers while the main process does not read; more are dropped
(the main process's folder poll still finds them)."""
WAKE_IDS_PER_LINE = 1000
"""Account ids per line of the channel: a line stays far below the reader's 64 KiB limit."""


class WakeSender(asyncio.Protocol):
    """SMTP worker side of the wake-up channel: account ids that got mail, to the main process.

    The channel is the worker's stdout pipe, which the main process reads (account ids in
    decimal, space-separated, one batch a line: no content, no address). Writing never blocks
    an SMTP reply: the pipe is non-blocking (an asyncio write transport); while the main
    process does not keep up, ids are coalesced in a bounded set and sent when the pipe drains,
    and beyond that bound they are dropped — the main process's folder poll (SQLite) or NOTIFY
    (PostgreSQL) still wakes the sessions, only later.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None] = lambda: None
    ) -> None:
        self.loop = loop
        self.on_lost = on_lost
        self.closed = False
        self.transport: asyncio.WriteTransport | None = None
        self.pending: set[int] = set()
        self.paused = False

    @classmethod
    async def open(cls, on_lost: Callable[[], None] = lambda: None) -> WakeSender | None:
        """The channel on this process's stdout; ``print`` goes to stderr from now on.

        ``on_lost`` is called when the main process closes its end (it is gone).
        """
        loop = asyncio.get_running_loop()
        sender = cls(loop, on_lost)
        channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        try:
            await loop.connect_write_pipe(lambda: sender, channel)
        except ValueError:  # stdout is not a pipe: not started by a main process
            channel.close()
            return None
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else writes on the channel
        return sender

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.set_write_buffer_limits(high=WAKE_BUFFER_BYTES)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed:  # the main process is gone: nobody to wake
            self.on_lost()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._flush()

    def send(self, account_ids: Iterable[int]) -> None:
        """The post-commit hook of SMTP delivery in a worker (thread-safe, never blocks)."""
        ids = list(account_ids)
        if not ids:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._add(ids)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._add, ids)

    def _add(self, ids: list[int]) -> None:
        if self.transport is None:
            return
        room = WAKE_MAX_PENDING - len(self.pending)
        self.pending.update(ids[: max(room, 0)])
        if not self.paused:
            self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or not self.pending:
            return
        ids = sorted(self.pending)
        self.pending.clear()
        lines = (
            " ".join(map(str, ids[start : start + WAKE_IDS_PER_LINE])) + "\n"
            for start in range(0, len(ids), WAKE_IDS_PER_LINE)
        )
        transport.write("".join(lines).encode("ascii"))

    def close(self) -> None:
        """Send what is pending and close the channel (the main process sees end of file)."""
        self.closed = True
        self._flush()
        if self.transport is not None:
            self.transport.close()


async def relay_wake_ups(child: asyncio.subprocess.Process, imap: NewMailListener | None) -> None:
    """Main side of the channel: wake the IDLE sessions of the ids a worker reports, until EOF."""
    assert child.stdout is not None
    while True:
        try:
            line = await child.stdout.readline()
        except ValueError:  # an overlong line (not one of ours): skipped, the poll covers it
            continue
        if not line:
            return
        ids = [int(word) for word in line.split() if word.isdigit()]
        if ids and imap is not None:
            imap.notify_new_mail(ids)
