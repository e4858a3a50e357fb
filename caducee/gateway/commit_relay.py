"""SQLite's one writer for ``serve``'s SMTP worker processes (issue 19).

On a SQLite file every write transaction takes the file's lock. Two processes committing
deliveries each through it queue on SQLite's busy handler, which sleeps and retries: two SMTP
processes accepted only 11 % more than one. So with ``[smtp] processes`` above 1 on SQLite, a
worker process does everything of a message but the commit (the SMTP session, the checks, the
sealing of the message and its IMAP structure, the blob file) and hands the commit to the main
process over a private socket pair: the main process's group committer writes it in the
transaction of that moment, with its own sessions' messages, and replies. The worker answers
``250`` only after that reply, so ``250`` still comes only after the durable commit (B5); if
the main process is gone, the worker answers ``451`` and stops.

The main process, which committed, also wakes the job workers and the IMAP IDLE sessions at
once. On PostgreSQL the workers commit themselves: the server takes concurrent writers.

Frames on the socket are a header (body length, request id) and a pickled body: the worker's
delivery envelope and sealed blobs one way, the :class:`~caducee.mailboxes.delivery.Delivered`
(or the name of the error) the other. The socket pair is created by the main process and
inherited only by the worker it starts, so both ends are this gateway's own code; the main
process still refuses a frame larger than a message may make it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from caducee.mailboxes.delivery import Delivered, Envelope
from caducee.storage.blobs import SealedBlob

log = logging.getLogger("caducee.commit_relay")

_HEADER = struct.Struct("!IQ")
"""Body length (bytes) and request id, before each body."""

FRAME_OVERHEAD_BYTES = 1024 * 1024
"""What a frame may carry besides twice the message (its copy and its sealed inline copy)."""

Deliver = Callable[[Envelope, SealedBlob | None, SealedBlob | None], Awaitable[Delivered]]


class RelayedCommitFailed(Exception):
    """The main process could not commit a worker's delivery (its error is logged there)."""


def _frame(request_id: int, body: object) -> tuple[bytes, bytes]:
    data = pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data), request_id), data


class RelayedDeliveries:
    """Worker side: each delivery goes to the main process, which commits it and replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_lost: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Delivered]] = {}
        self._replies = asyncio.create_task(self._read_replies(), name="commit-relay-replies")

    @classmethod
    async def connect(cls, fd: int, on_lost: Callable[[], None]) -> RelayedDeliveries:
        """The worker's end of the socket pair, inherited as ``fd``; ``on_lost`` is called
        once the main process is gone (the worker then stops)."""
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
        return cls(reader, writer, on_lost)

    async def deliver(
        self, envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
    ) -> Delivered:
        """Return once the main process committed the delivery; raise if it did not."""
        if self._replies.done():
            raise ConnectionError("the main process is gone")
        request_id = next(self._ids)
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        header, body = _frame(request_id, (envelope, sealed, structure))
        try:
            self._writer.write(header)
            self._writer.write(body)
            await self._writer.drain()
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _read_replies(self) -> None:
        try:
            while True:
                length, request_id = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                body = await self._reader.readexactly(length)
                committed, value = pickle.loads(body)  # noqa: S301 - our main process
                future = self._pending.pop(request_id, None)
                if future is None or future.done():
                    continue  # its session went away meanwhile
                if committed:
                    future.set_result(value)
                else:
                    future.set_exception(RelayedCommitFailed(value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the main process is gone"))
            self._pending.clear()
            self._on_lost()

    async def close(self) -> None:
        """Close the socket (the main process sees end of file) and stop reading."""
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._replies.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._replies


async def commit_for_worker(
    sock: socket.socket, deliver: Deliver, max_frame: Callable[[], int]
) -> None:
    """Main side: commit each delivery a worker sends with ``deliver`` and reply, until EOF.

    Requests are answered concurrently, so that the worker's deliveries of one moment share
    the group committer's transaction. A frame above ``max_frame()`` bytes ends the channel
    (the worker's sessions then answer ``451``): no frame of ours is that large.
    """
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    answers: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, body: bytes) -> None:
        reply: tuple[bool, Any]
        try:
            envelope, sealed, structure = pickle.loads(body)  # noqa: S301 - our own worker
            reply = (True, await deliver(envelope, sealed, structure))
        except Exception as error:  # the worker's session answers 451
            log.error("relayed delivery failed", exc_info=error)
            reply = (False, type(error).__name__)
        header, data = _frame(request_id, reply)
        if not writer.is_closing():
            writer.write(header)
            writer.write(data)

    try:
        while True:
            length, request_id = _HEADER.unpack(await reader.readexactly(_HEADER.size))
            if length > max_frame():
                log.error("relayed delivery too large; closing the channel", extra={"size": length})
                break
            task = asyncio.create_task(answer(request_id, await reader.readexactly(length)))
            answers.add(task)
            task.add_done_callback(answers.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the worker exited
    finally:
        await asyncio.gather(*answers, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
