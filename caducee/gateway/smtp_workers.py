"""``serve``'s SMTP worker processes: started, watched, restarted and stopped by the main process.

With ``[smtp] processes = N`` above 1, N - 1 worker processes (``serve --role smtp-worker``)
share the SMTP ports with SO_REUSEPORT, and the operators' port is theirs alone (the main
process keeps the job workers, IMAP and HTTP). A worker that dies is therefore started again
at once, or the operators' port would stay closed: its connections in flight get no reply,
so their senders retry, and nothing it acknowledged is lost (its ``250`` came after the
commit). Each worker's stdout carries its wake-ups (:mod:`caducee.gateway.worker_wakeups`);
on SQLite a socket pair carries its deliveries to commit (:mod:`caducee.gateway.commit_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from caducee.gateway.commit_relay import Deliver, commit_for_worker
from caducee.gateway.worker_wakeups import NewMailListener, relay_wake_ups

log = logging.getLogger("caducee.smtp_workers")

ROLE_SMTP_WORKER = "smtp-worker"
RESTART_DELAY_SECONDS = 1.0
"""Pause before starting a worker again: a worker that cannot start does not spin a core."""


class SmtpWorkers:
    """The worker processes of one ``serve``, each slot kept filled until :meth:`stop`.

    ``deliver`` commits the deliveries the workers hand over (SQLite); ``None`` lets them
    commit themselves (PostgreSQL). ``max_frame`` bounds what a worker may send at once.
    """

    def __init__(
        self,
        home: Path,
        count: int,
        imap: NewMailListener | None,
        deliver: Deliver | None,
        max_frame: Callable[[], int],
    ) -> None:
        self.home = home
        self.count = count
        self.imap = imap
        self.deliver = deliver
        self.max_frame = max_frame
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self._slots: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start every slot's first worker (in the background)."""
        self._slots = [
            asyncio.create_task(self._keep(slot), name=f"smtp-worker-{slot}")
            for slot in range(self.count)
        ]

    def hang_up(self) -> None:
        """Pass a reload (SIGHUP) on to the running workers."""
        self._signal_all(signal.SIGHUP)

    async def stop(self) -> None:
        """SIGTERM to every worker; return once they exited (each finishes its sessions)."""
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        await asyncio.gather(*self._slots)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    process.send_signal(signum)

    async def _keep(self, slot: int) -> None:
        while not self._stopping.is_set():
            try:
                process, channel = await self._spawn()
            except OSError as error:  # no process, no descriptor left: try again shortly
                log.error("SMTP worker process could not start", exc_info=error)
            else:
                self.processes[slot] = process
                if self._stopping.is_set():  # stop() came while it was starting
                    self._signal_all(signal.SIGTERM)
                await self._serve(process, channel)
                if self._stopping.is_set():
                    return
                log.error(
                    "SMTP worker process exited; starting another",
                    extra={"exit_code": process.returncode, "slot": slot},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RESTART_DELAY_SECONDS)

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, socket.socket | None]:
        ours, theirs = socket.socketpair() if self.deliver is not None else (None, None)
        relay_arguments = [] if theirs is None else ["--commit-fd", str(theirs.fileno())]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "caducee.gateway.cli",
                "serve",
                "--home",
                str(self.home),
                "--role",
                ROLE_SMTP_WORKER,
                *relay_arguments,
                stdout=asyncio.subprocess.PIPE,
                pass_fds=() if theirs is None else (theirs.fileno(),),
            )
        except BaseException:
            if ours is not None:
                ours.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()
        return process, ours

    async def _serve(
        self, process: asyncio.subprocess.Process, channel: socket.socket | None
    ) -> None:
        """Relay the worker's wake-ups and commit its deliveries until it exits."""
        channels = [relay_wake_ups(process, self.imap)]
        if channel is not None and self.deliver is not None:
            channels.append(commit_for_worker(channel, self.deliver, self.max_frame))
        for outcome in await asyncio.gather(process.wait(), *channels, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("SMTP worker channel failed", exc_info=outcome)
