"""B5, K2 (issue 19): the channel on which an SMTP worker hands its deliveries to the main process.

Both ends run here on a real socket pair, as ``serve`` connects them; the main side's commit
is a coroutine standing in for the group committer, so that the test decides when and how
each commit ends. End to end (SMTP, SQLite, kill -9 of either process) is in
``tests/gateway/smtp/test_crash.py`` and ``tests/gateway/test_smtp_worker_idle.py``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import pytest

from caducee.gateway.commit_relay import RelayedCommitFailed, RelayedDeliveries, commit_for_worker
from caducee.mailboxes.delivery import Delivered, Envelope, Recipient, RecipientRole
from caducee.storage.blobs import SealedBlob

PATIENT = Recipient("1234567890123@patient.mssante.fr", 7, RecipientRole.PATIENT)


def _envelope(subject: str, size: int = 64) -> Envelope:
    return Envelope(
        content=f"Subject: {subject}\r\n\r\n".encode() + b"x" * size,
        direction="inbound",
        envelope_from="dr.martin@hopital.example",
        header_from="dr.martin@hopital.example",
        message_id=f"<{subject}@hopital.example>",
        thread_ids=(),
        reply_to=None,
        ends_exchange=False,
        sender_is_professional=True,
        has_attachments=False,
        recipients=(PATIENT,),
    )


SEALED = SealedBlob(id="b1", kek_id="k1", wrapped_key=b"\x01" * 40, size=80, inline=b"\x02" * 80)

Commit = Callable[[Envelope, SealedBlob | None, SealedBlob | None], Awaitable[Delivered]]


class Connected(NamedTuple):
    worker: RelayedDeliveries
    main_side: asyncio.Task[None]
    main_socket: socket.socket
    lost: asyncio.Event
    """Set when the worker learns that the main process is gone."""


async def _connected(commit: Commit, max_frame: int = 1 << 20) -> Connected:
    ours, theirs = socket.socketpair()
    main_side = asyncio.create_task(commit_for_worker(ours, commit, lambda: max_frame))
    lost = asyncio.Event()
    worker = await RelayedDeliveries.connect(theirs.detach(), lost.set)
    return Connected(worker, main_side, ours, lost)


def test_b5_each_delivery_gets_its_own_commit_answer_in_any_order() -> None:
    """Concurrent deliveries share the channel; a later one may be committed first."""

    async def scenario() -> list[Delivered]:
        first_may_end = asyncio.Event()
        first_arrived = asyncio.Event()
        seen: list[tuple[Envelope, SealedBlob | None]] = []

        async def commit(
            envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
        ) -> Delivered:
            seen.append((envelope, sealed))
            number = len(seen)
            if envelope.message_id == "<first@hopital.example>":
                first_arrived.set()
                await first_may_end.wait()
            return Delivered(message_id=number, uids={PATIENT.address: 100 + number})

        worker, main_side, _, _ = await _connected(commit)
        first = asyncio.create_task(worker.deliver(_envelope("first"), SEALED, None))
        await first_arrived.wait()
        second = await worker.deliver(_envelope("second"), None, None)
        assert not first.done()  # the second was answered while the first still commits
        first_may_end.set()
        answers = [await first, second]
        assert [e.message_id for e, _ in seen] == [
            "<first@hopital.example>",
            "<second@hopital.example>",
        ]
        assert seen[0][0] == _envelope("first") and seen[0][1] == SEALED
        await worker.close()
        await main_side  # end of file: the main side returns
        return answers

    first, second = asyncio.run(scenario())
    assert first == Delivered(message_id=1, uids={PATIENT.address: 101})
    assert second == Delivered(message_id=2, uids={PATIENT.address: 102})


def test_b5_a_failed_commit_is_an_error_for_the_worker_and_names_no_content() -> None:
    """The worker's session must not answer 250; the error carries the type, not the text."""

    async def scenario() -> RelayedCommitFailed:
        async def commit(
            envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
        ) -> Delivered:
            raise RuntimeError(f"disk full while writing {envelope.content!r}")

        worker, main_side, _, lost = await _connected(commit)
        with pytest.raises(RelayedCommitFailed) as failure:
            await worker.deliver(_envelope("Résultat HbA1c"), None, None)
        assert not lost.is_set()  # one failed commit does not end the channel
        await worker.close()
        await main_side
        return failure.value

    error = asyncio.run(scenario())
    assert str(error) == "RuntimeError"


def test_b5_when_the_main_process_is_gone_the_worker_knows_and_nothing_is_acknowledged() -> None:
    async def scenario() -> None:
        started = asyncio.Event()

        async def commit(
            envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
        ) -> Delivered:
            started.set()
            await asyncio.Event().wait()  # never commits: the process dies first
            raise AssertionError("unreachable")

        worker, main_side, main_socket, lost = await _connected(commit)
        pending = asyncio.create_task(worker.deliver(_envelope("pending"), None, None))
        await started.wait()
        main_socket.shutdown(socket.SHUT_RDWR)  # the main process dies: its socket closes
        with pytest.raises(ConnectionError):
            await pending
        await asyncio.wait_for(lost.wait(), 10)  # the worker is told, and stops
        with pytest.raises(ConnectionError):
            await worker.deliver(_envelope("after"), None, None)
        await worker.close()
        main_side.cancel()  # in this test's process, the commit that never ends
        with pytest.raises(asyncio.CancelledError):
            await main_side

    asyncio.run(scenario())


def test_k2_the_main_process_refuses_a_frame_larger_than_a_message_may_make() -> None:
    """The channel is bounded: an oversized frame ends it unread, nothing is committed."""

    async def scenario() -> int:
        commits = 0

        async def commit(
            envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
        ) -> Delivered:
            nonlocal commits
            commits += 1
            return Delivered(message_id=1, uids={})

        worker, main_side, _, lost = await _connected(commit, max_frame=16 * 1024)
        await worker.deliver(_envelope("small"), None, None)
        with pytest.raises(ConnectionError):
            await worker.deliver(_envelope("large", size=64 * 1024), None, None)
        await asyncio.wait_for(lost.wait(), 10)
        await main_side
        await worker.close()
        return commits

    assert asyncio.run(scenario()) == 1
