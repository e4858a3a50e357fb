"""H1, K2, K3 (issue 19): ``serve``'s SMTP worker processes.

With ``[smtp] processes = 2`` the operators' port belongs to ``caducee serve``'s SMTP worker
process; IMAP runs only in the main process. A delivery the worker accepts must wake the
patient's IDLE at commit, and not only at the main process's next folder poll (SQLite: every
0.25 s). On SQLite the main process commits the worker's deliveries (one writer) and wakes
IDLE itself; on PostgreSQL the worker commits and sends the wake-up on its channel.

The main process here runs with that poll slowed to an hour (``[imap] change_poll_seconds``
and, on PostgreSQL, ``change_safety_poll_seconds``), so nothing but the wake-up of the process
that committed can bring the EXISTS while the test waits. Which process took each connection
is read from ``/proc`` (the owner of the server side of the TCP connection), not guessed.

A worker whose main process is gone stops; a worker that dies is started again, since the
operators' port has no other listener.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caducee.gateway.worker_wakeups import WAKE_IDS_PER_LINE, WAKE_MAX_PENDING, WakeSender
from tests.gateway.imap.transcript import ImapTranscript
from tests.harness.processes import child_pids, running
from tests.harness.served import Account, ServedGateway, prepare_demo
from tests.harness.waiting import wait_until

SLOW_POLL = 3600
"""The main process's folder poll (``[imap] change_poll_seconds``, and the PostgreSQL safety
poll): far beyond any wait of this test."""

MESSAGES = 3
WORKER = "smtp-worker"
"""The ``role`` an SMTP worker process logs (``caducee serve --role smtp-worker``)."""


@pytest.fixture(scope="module")
def two_smtp_processes(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[ServedGateway]:
    """A served demo home with ``[smtp] processes = 2`` and a main process polling hourly."""
    home = tmp_path_factory.mktemp("smtp-workers") / "home"
    database_url = pg_schemas.new() if pg_schemas is not None else None
    served = prepare_demo(
        home,
        database_url,
        extra_env={
            "CADUCEE_SMTP__PROCESSES": "2",
            "CADUCEE_IMAP__CHANGE_POLL_SECONDS": str(SLOW_POLL),
            "CADUCEE_IMAP__CHANGE_SAFETY_POLL_SECONDS": str(SLOW_POLL),
        },
    )
    served.start()
    try:
        yield served
    finally:
        served.stop_all()


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback TCP connection ``client_port → server_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return int(inode)
    return None


def _owner(pids: list[int], inode: int) -> int | None:
    """Which of ``pids`` holds the socket ``inode``."""
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except FileNotFoundError:  # closed while we looked
                continue
    return None


def _workers_listening(gateway: ServedGateway) -> int:
    """How many SMTP worker processes logged that they started (their listeners are bound)."""
    started = 0
    for line in gateway.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            started += entry.get("message") == "gateway started" and entry.get("role") == WORKER
    return started


def _wait_exists(watcher: ImapTranscript, count: int) -> None:
    """Read IDLE's responses until ``* <count> EXISTS`` (the socket's timeout bounds the wait)."""
    while True:
        try:
            line = watcher.line()
        except TimeoutError:
            raise AssertionError(f"no EXISTS for message {count}: {watcher.dump()}") from None
        match = re.match(rb"\* (\d+) EXISTS\r\n", line)
        if match and int(match.group(1)) >= count:
            assert int(match.group(1)) == count, watcher.dump()
            return


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_k2_mail_an_smtp_worker_accepts_wakes_idle_in_the_main_process(
    two_smtp_processes: ServedGateway,
) -> None:
    gateway = two_smtp_processes
    assert gateway.process is not None
    main_pid = gateway.process.pid
    workers = wait_until(lambda: child_pids(main_pid), message="no SMTP worker process started")
    assert len(workers) == 1
    # The harness waits for the main process only; the worker binds the ports a moment later.
    wait_until(lambda: _workers_listening(gateway), message=gateway.log)
    account: Account = gateway.new_patient()
    gateway.imap(account).logout()  # the first login creates the standard folders
    # The socket timeout bounds each wait for EXISTS: an hour's poll cannot answer within it.
    watcher = ImapTranscript(
        gateway.host, gateway.ports["imaps"], implicit_tls=gateway.tls_context(), timeout=20
    )
    taken_by: dict[int, int] = {main_pid: 0, workers[0]: 0}
    try:
        watcher.line()
        watcher.ok(f'LOGIN "{account.address}" "{account.password}"')
        assert b"* 0 EXISTS\r\n" in watcher.ok("SELECT INBOX")
        watcher.send(b"i IDLE\r\n")
        assert watcher.line().startswith(b"+ ")
        for sent in range(MESSAGES):
            raw = gateway.message(to=account.address, subject=f"Résultat {sent}")
            with gateway.smtp() as client:
                assert client.sock is not None
                inode = _socket_inode(gateway.ports["smtp"], client.sock.getsockname()[1])
                assert inode is not None, "the server side of the SMTP connection is not listed"
                owner = _owner([main_pid, *workers], inode)
                assert owner is not None, "no gateway process holds the SMTP connection"
                assert not client.sendmail(gateway.peer["professional"], [account.address], raw)
            taken_by[owner] += 1
            _wait_exists(watcher, sent + 1)  # before the next message: each EXISTS has one cause
        # The main process leaves the operators' port to its worker.
        assert taken_by == {main_pid: 0, workers[0]: MESSAGES}, taken_by
        watcher.send(b"DONE\r\n")
        while not (line := watcher.line()).startswith(b"i "):
            pass  # the untagged RECENT/EXISTS of the last wake-up
        assert line.startswith(b"i OK"), watcher.dump()
    finally:
        watcher.close()
    print(f"messages accepted per process: {taken_by}")


def test_k3_the_smtp_worker_stops_with_the_main_process(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> None:
    """SIGTERM to ``caducee serve``: it exits 0 and its worker (and the channel) are gone."""
    home = tmp_path_factory.mktemp("smtp-workers-stop") / "home"
    database_url = pg_schemas.new() if pg_schemas is not None else None
    served = prepare_demo(home, database_url, extra_env={"CADUCEE_SMTP__PROCESSES": "2"})
    served.start()
    assert served.process is not None
    workers = wait_until(lambda: child_pids(served.process.pid) if served.process else [])
    served.stop_all()  # asserts exit code 0
    assert not [pid for pid in workers if running(pid)]


def test_k3_a_killed_worker_is_replaced_and_a_killed_main_process_takes_its_worker_along(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> None:
    """The operators' port has no listener but the worker: one that dies is started again and
    mail flows once more; a worker whose main process died stops instead of serving alone."""
    home = tmp_path_factory.mktemp("smtp-workers-kill") / "home"
    database_url = pg_schemas.new() if pg_schemas is not None else None
    served = prepare_demo(home, database_url, extra_env={"CADUCEE_SMTP__PROCESSES": "2"})
    served.start()
    seen: list[int] = []
    try:
        assert served.process is not None
        main_pid = served.process.pid
        wait_until(lambda: _workers_listening(served) == 1, message=served.log)
        seen += child_pids(main_pid)
        os.kill(seen[0], signal.SIGKILL)
        replacement = wait_until(
            lambda: [pid for pid in child_pids(main_pid) if pid not in seen],
            message="no SMTP worker process started in place of the killed one",
        )
        seen += replacement
        wait_until(lambda: _workers_listening(served) == 2, message=served.log)
        assert "SMTP worker process exited; starting another" in served.log()
        account = served.new_patient()
        with served.smtp() as client:
            raw = served.message(to=account.address, subject="Après le redémarrage")
            assert not client.sendmail(served.peer["professional"], [account.address], raw)
        assert served.stop("serve", signal.SIGKILL) == -signal.SIGKILL
        wait_until(
            lambda: not running(replacement[0]),
            timeout=30,
            message="the SMTP worker kept running without its main process",
        )
    finally:
        for pid in seen:  # only if the test failed: no orphan left on the port
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if served.processes:
            served.stop_all()


def test_k2_a_main_process_that_does_not_read_never_blocks_the_worker() -> None:
    """The channel is bounded: with nobody reading, ``send`` returns, ids are coalesced up to a
    bound and the rest dropped (the main process's poll finds them); once read, the channel
    carries only account ids."""

    async def scenario() -> bytes:
        read_fd, write_fd = os.pipe()
        loop = asyncio.get_running_loop()
        sender = WakeSender(loop)
        await loop.connect_write_pipe(lambda: sender, os.fdopen(write_fd, "wb", buffering=0))
        for batch in range(2_000):  # 100 000 accounts, ~600 KB: beyond the pipe and the buffer
            sender.send(range(batch * 50, batch * 50 + 50))
            await asyncio.sleep(0)  # the transport's writes run on the loop
        assert sender.paused
        assert len(sender.pending) == WAKE_MAX_PENDING
        reader = asyncio.create_task(asyncio.to_thread(_read_all, read_fd))
        sender.close()  # sends what is pending once the pipe drains, then end of file
        return await reader

    received = asyncio.run(scenario())
    lines = received.decode("ascii").splitlines()
    ids = [int(word) for line in lines for word in line.split(" ")]
    assert all(0 < len(line.split(" ")) <= WAKE_IDS_PER_LINE for line in lines)
    assert ids[0] == 0 and max(ids) < 100_000
    assert WAKE_MAX_PENDING < len(set(ids)) < 100_000  # the pending set came; some were dropped


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()
