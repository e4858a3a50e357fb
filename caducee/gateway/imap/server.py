"""The IMAP sockets (H1): STARTTLS port and implicit-TLS port, what ``serve`` starts and stops.

:class:`ImapListeners` is the one object the rest of the gateway sees: build it
from the :class:`~caducee.gateway.runtime.Gateway`, ``await start()``, give its
:meth:`~ImapListeners.notify_new_mail` to the SMTP server as the post-commit
hook, ``await stop()`` at shutdown.

The connection is pymap's :class:`~pymap.imap.IMAPConnection` with these changes:

* protocol lines are never logged (pymap prints every line, passwords and
  message content included, at DEBUG level; J2);
* STARTTLS refuses to start TLS when the client already sent more bytes in
  clear after the command (the STARTTLS command-injection attack, as
  CVE-2011-0411 for Postfix); pymap would run them as if they came over TLS;
* an inactivity timeout: 2 minutes before login, 30 minutes after (RFC 3501
  §5.4), the same for IDLE (RFC 2177 asks clients to re-IDLE within 29);
* untagged responses are drained to the socket as they are written, so a
  ``FETCH 1:* BODY[]`` does not queue a whole mailbox in memory first;
* connection limits (``[imap] max_connections`` for both ports of a process,
  ``max_connections_per_ip`` per client address): one more gets
  ``* BYE [UNAVAILABLE]`` and is closed (on the STARTTLS port before any TLS, on
  the implicit-TLS port after the handshake, the first moment it can be told);
  a total session time (``max_session_seconds``): ``BYE`` at the next command
  boundary or at the end of an IDLE; a graceful stop: commands in progress
  finish, everyone else gets ``BYE``;
* literals are bounded before a byte of them is read (issue 12): pymap reads a
  non-synchronising literal ``{n+}`` whole, of any size, before parsing, and
  sends ``+`` for a synchronising APPEND literal of any size before login. Here
  each literal is checked against the budget of the command when announced:
  before login ``[imap] max_literal_before_login`` for the whole command; after
  login APPENDLIMIT per message and ``[imap] max_command_bytes`` per APPEND,
  pymap's own 4096 bytes per literal (1 MiB per command) elsewhere. Over budget,
  a synchronising literal is answered ``NO [TOOBIG]`` instead of ``+`` and the
  session goes on; a non-synchronising one gets ``BAD [TOOBIG]`` and the
  connection is closed (RFC 7888 §4: its bytes are on their way). A line longer
  than the stream limit (1 MiB) is answered the same way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import uuid
from collections.abc import Awaitable, Iterable
from contextlib import AsyncExitStack, closing
from typing import TypeVar

from proxyprotocol.sock import SocketInfoLocal
from pymap.context import connection_exit, current_command
from pymap.imap import IMAPConnection
from pymap.parsing.command import Command
from pymap.parsing.command.select import IdleCommand
from pymap.parsing.commands import Commands
from pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseNo,
)

from caducee.gateway.imap.config import CaduceeImapConfig
from caducee.gateway.imap.events import MailboxEvents
from caducee.gateway.imap.session import ImapBackend, Login
from caducee.gateway.imap.state import CaduceeConnectionState
from caducee.gateway.limits import ConnectionLimiter, client_key
from caducee.gateway.runtime import Gateway
from caducee.gateway.tls import handshake_failure, server_context
from caducee.mailboxes.imap_changes import ChangeFeed
from caducee.mailboxes.imap_store import ImapStore

log = logging.getLogger("caducee.imap")

T = TypeVar("T")

LOGIN_TIMEOUT = 120.0
IDLE_TIMEOUT = 30 * 60.0
FLUSH_BYTES = 64 * 1024
MAX_CONNECTIONS = 2000
LINE_LIMIT = 1024 * 1024
#: pymap's parser refuses longer strings outside APPEND (``String._MAX_LEN``).
OTHER_LITERAL_BYTES = 4096
OTHER_COMMAND_BYTES = 1024 * 1024
TOO_MANY_CONNECTIONS = {
    "total": b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n",
    "per-ip": b"* BYE [UNAVAILABLE] Too many connections from your address.\r\n",
}

# A literal announced at the end of a line: ``{n}`` (synchronising), ``{n+}``, ``~{n}``.
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)(\+?)\}\r?\n\Z")
# RFC 3501 tag (ASTRING-CHAR but "+") and command name, at the start of a command.
_COMMAND_START = re.compile(rb"([\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+) ([A-Za-z]+)")


class _LiteralRefused(Exception):
    """A synchronising literal over budget: answer ``NO [TOOBIG]``, read the next command."""

    def __init__(self, tag: bytes) -> None:
        super().__init__()
        self.tag = tag


class _Budget:
    """What the literals of one command may still take (set from its first line)."""

    __slots__ = ("per_literal", "remaining", "tag")

    def __init__(self, tag: bytes, per_literal: int, total: int) -> None:
        self.tag = tag
        self.per_literal = per_literal
        self.remaining = total

    def take(self, digits: bytes) -> bool:
        """Count a literal of ``digits`` octets; False if it does not fit."""
        if len(digits) > 12:  # and never int() of a client's thousand digits
            return False
        length = int(digits)
        if length > self.per_literal or length > self.remaining:
            return False
        self.remaining -= length
        return True


class CaduceeImapConnection(IMAPConnection):
    """One client connection (pymap's, hardened; see the module docstring)."""

    __slots__ = [
        "authenticated",
        "budget",
        "busy",
        "bye_sent",
        "deadline",
        "idle_timeout",
        "idling",
        "in_command",
        "limits",
        "login_timeout",
    ]

    def __init__(
        self,
        commands: Commands,
        config: CaduceeImapConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sock_info: SocketInfoLocal,
        *,
        login_timeout: float = LOGIN_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_session_seconds: float | None = None,
    ) -> None:
        super().__init__(commands, config, reader, writer, sock_info)
        self.login_timeout = login_timeout
        self.idle_timeout = idle_timeout
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + max_session_seconds if max_session_seconds else None
        self.busy = 0
        self.idling = False
        self.bye_sent = False
        self.limits = config
        self.authenticated = False
        self.in_command = False
        self.budget: _Budget | None = None

    @classmethod
    def _print(cls, log_format: str, output: str | bytes) -> None:
        """Never log protocol lines: they carry passwords and health content."""

    def _exec(self, future: Awaitable[T]) -> Awaitable[T]:
        return self._tracked(future)

    async def _tracked(self, future: Awaitable[T]) -> T:
        self.idling = isinstance(current_command.get(None), IdleCommand)
        self.busy += 1
        try:
            return await future
        finally:
            self.busy -= 1

    async def _bye(self, text: bytes, code: bytes | None = None) -> None:
        self.bye_sent = True
        await self.write_response(ResponseBye(text, ResponseCode.of(code) if code else None))

    def _session_left(self) -> float | None:
        """Seconds left of the total session time (None: no limit)."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    async def _session_over(self) -> None:
        await self._bye(b"Session time limit reached.")
        raise EOFError()

    async def read_command(self, state: CaduceeConnectionState) -> Command:  # type: ignore[override]
        self.authenticated = state._session is not None
        idle = self.idle_timeout if self.authenticated else self.login_timeout
        while True:
            left = self._session_left()
            if left is not None and left <= 0:
                await self._session_over()
            timeout = idle if left is None else min(idle, left)
            self.in_command = True
            self.budget = None
            try:
                async with asyncio.timeout(timeout):  # no task per command, unlike wait_for
                    return await super().read_command(state)
            except TimeoutError:
                if timeout < idle:
                    await self._session_over()
                await self._bye(b"Autologout: no command for too long.")
                raise EOFError() from None
            except _LiteralRefused as refused:
                # The client waits for "+" and sends nothing more of this command.
                code = ResponseCode.of(b"TOOBIG")
                await self.write_response(ResponseNo(refused.tag, b"Literal too large.", code))
            finally:
                self.in_command = False
                self.budget = None

    def _budget_for(self, first_line: bytes) -> _Budget:
        match = _COMMAND_START.match(first_line)
        tag = match.group(1) if match else b"*"
        if not self.in_command or not self.authenticated:
            # Before login, and in SASL exchanges and IDLE (no literal belongs there).
            limit = self.limits.max_literal_before_login
            return _Budget(tag, limit, limit)
        if match and match.group(2).upper() == b"APPEND":
            return _Budget(tag, self.limits.append_limit, self.limits.max_command_bytes)
        return _Budget(tag, OTHER_LITERAL_BYTES, OTHER_COMMAND_BYTES)

    async def _physical_line(self, budget: _Budget | None) -> bytes:
        try:
            return await self.reader.readline()
        except ValueError:  # over the stream limit; asyncio dropped what it buffered
            tag = budget.tag if budget is not None else b"*"
            await self._refuse_and_close(tag, b"Line too long.")
            raise EOFError() from None

    async def _refuse_and_close(self, tag: bytes, text: bytes) -> None:
        response = ResponseBad(tag, text, ResponseCode.of(b"TOOBIG"))
        response.add_untagged(ResponseBye(b"Closing: data refused."))
        self.bye_sent = True
        await self.write_response(response)

    async def readline(self) -> memoryview:
        """pymap's ``readline`` with every literal checked before it is read (module doc)."""
        line = await self._physical_line(self.budget)
        buf = bytearray(line)
        while True:
            if not line.endswith(b"\n"):
                raise EOFError()
            match = _LITERAL_AT_END.search(line)
            if match is None:
                return memoryview(buf)
            budget = self.budget
            if budget is None:
                budget = self._budget_for(bytes(buf))
                if self.in_command:
                    self.budget = budget
            synchronising = not match.group(2)
            if synchronising and not self.in_command:
                return memoryview(buf)  # not a literal here; pymap will not send "+"
            if not budget.take(match.group(1)):
                if synchronising:
                    raise _LiteralRefused(budget.tag)
                await self._refuse_and_close(budget.tag, b"Literal too large.")
                raise EOFError()
            if synchronising:
                return memoryview(buf)  # pymap sends "+" and reads the literal
            buf += await self.reader.readexactly(int(match.group(1)))
            line = await self._physical_line(budget)
            buf += line

    async def read_idle_done(self, cmd: IdleCommand) -> bool:
        left = self._session_left()
        timeout = self.idle_timeout if left is None else max(0.0, min(self.idle_timeout, left))
        try:
            async with asyncio.timeout(timeout):
                return await super().read_idle_done(cmd)
        except TimeoutError:
            if timeout < self.idle_timeout:
                await self._session_over()
            await self._bye(b"Autologout: IDLE for too long.")
            raise EOFError() from None

    async def start_tls(self) -> None:
        if getattr(self.reader, "_buffer", b""):  # asyncio: bytes received, not yet read
            # Commands sent in clear after STARTTLS must not run as if they came over TLS.
            raise ConnectionError("data received after STARTTLS, before the TLS handshake")
        try:
            await super().start_tls()
        except (ssl.SSLError, ConnectionError, TimeoutError) as error:
            # One line with who and why (J2: OpenSSL's reason, nothing the client sent).
            peer = self.writer.get_extra_info("peername")
            sockname = self.writer.get_extra_info("sockname")
            log.warning(
                "tls handshake failed",
                extra={
                    "client": str(peer[0]) if isinstance(peer, tuple) and peer else None,
                    "port": int(sockname[1]) if isinstance(sockname, tuple) else None,
                    **handshake_failure(error),
                },
            )
            raise

    async def send_error_disconnect(self) -> None:
        if not self.bye_sent:
            self.bye_sent = True
            await super().send_error_disconnect()

    async def write_response(self, resp: Response) -> None:
        buffer = _Buffer()
        try:
            if isinstance(resp, CommandResponse):
                for untagged in resp._untagged:  # pymap 0.36.7: the untagged responses
                    await untagged.async_write(buffer)
                    if len(buffer.data) >= FLUSH_BYTES:
                        self.writer.write(buffer.take())
                        await self.writer.drain()
                Response.write(resp, buffer)
            else:
                await resp.async_write(buffer)
            self.writer.write(buffer.take())
            await self.writer.drain()
        except ConnectionError:
            pass


class _Buffer:
    """Collects the many small writes of pymap's response objects into few socket writes.

    Every ``StreamWriter.write`` on a TLS transport is one TLS record and one
    ``send`` system call; pymap writes a FETCH response in several pieces.
    """

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def take(self) -> bytes:
        taken = bytes(self.data)
        self.data.clear()
        return taken


class ImapListener:
    """One IMAP port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        implicit_tls: bool,
        config: CaduceeImapConfig,
        login: Login,
        tls: ssl.SSLContext,
        max_connections: int = MAX_CONNECTIONS,
        login_timeout: float = LOGIN_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        limiter: ConnectionLimiter | None = None,
        max_session_seconds: float | None = None,
    ) -> None:
        self.login_timeout = login_timeout
        self.idle_timeout = idle_timeout
        self.max_session_seconds = max_session_seconds
        # Shared by the ports of a process when given; else this port's own, total only.
        self.limiter = limiter or ConnectionLimiter(total=max_connections, per_ip=max_connections)
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls
        self.config = config
        self.login = login
        self.tls = tls
        self.max_connections = max_connections
        self.server: asyncio.Server | None = None
        self.connections: dict[asyncio.Task[None], CaduceeImapConnection] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=self.tls if self.implicit_tls else None,
            ssl_handshake_timeout=30 if self.implicit_tls else None,
            reuse_address=True,
            limit=LINE_LIMIT,
        )
        log.info(
            "imap listening",
            extra={"port": self.port, "listener": "imaps" if self.implicit_tls else "imap"},
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        key = client_key(writer.get_extra_info("peername"))
        refusal = self.limiter.admit(key)
        if refusal is not None:
            log.info("imap connection refused", extra={"reason": f"connections.{refusal}"})
            writer.write(TOO_MANY_CONNECTIONS[refusal])
            writer.close()
            return
        try:
            await self._serve(task, reader, writer)
        finally:
            self.limiter.release(key)

    async def _serve(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        connection = CaduceeImapConnection(
            self.config.commands,
            self.config,
            reader,
            writer,
            SocketInfoLocal(writer, unique_id=uuid.uuid4().bytes),
            login_timeout=self.login_timeout,
            idle_timeout=self.idle_timeout,
            max_session_seconds=self.max_session_seconds,
        )
        state = CaduceeConnectionState(self.login, self.config, implicit_tls=self.implicit_tls)
        self.connections[task] = connection
        try:
            async with AsyncExitStack() as stack:
                connection_exit.set(stack)
                stack.enter_context(closing(connection))
                await connection.run(state)
        except Exception:
            log.warning("imap connection ended with an error", exc_info=True)
        finally:
            self.connections.pop(task, None)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; let running commands finish; BYE to everyone else."""
        if self.server is None:
            return
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and any(
            c.busy and not c.idling for c in self.connections.values()
        ):
            await asyncio.sleep(0.05)
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        self.server = None


class ImapListeners:
    """Both IMAP ports of a gateway process, their shared backend and wake-up feed."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        workers: int = 8,
    ) -> None:
        settings = gateway.settings
        self.events = MailboxEvents()
        self.store = ImapStore(
            gateway.database,
            gateway.blobs,
            gateway.queue,
            reporting_host=settings.gateway.hostname,
        )
        self.backend = ImapBackend(self.store, self.events, gateway.identity, workers=workers)
        self.feed = ChangeFeed(
            gateway.database,
            self.store,
            self.events.notify,
            self.events.watched,
            poll_interval=settings.imap.change_poll_seconds,
            safety_poll_interval=settings.imap.change_safety_poll_seconds,
        )
        tls = server_context(settings)
        host = settings.listeners.host
        login = Login(self.backend)
        limits = settings.imap
        limiter = ConnectionLimiter(
            total=limits.max_connections, per_ip=limits.max_connections_per_ip
        )
        gateway.metrics.watch_connections("imap", limiter)
        self.limiter = limiter
        """The IMAP ports' connection caps (changed in place by a reload)."""
        self.listeners: list[ImapListener] = []
        for port, implicit in ((settings.listeners.imap, False), (settings.listeners.imaps, True)):
            if not port:
                continue
            config = CaduceeImapConfig(
                host=host,
                port=port,
                hostname=settings.gateway.hostname,
                ssl_context=tls,
                max_append_len=settings.smtp.max_message_bytes,
                max_literal_before_login=settings.imap.max_literal_before_login,
                max_command_bytes=settings.imap.max_command_bytes,
            )
            self.listeners.append(
                ImapListener(
                    host=host,
                    port=port,
                    implicit_tls=implicit,
                    config=config,
                    login=login,
                    tls=tls,
                    login_timeout=limits.login_timeout_seconds,
                    idle_timeout=limits.idle_timeout_seconds,
                    limiter=limiter,
                    max_session_seconds=limits.max_session_seconds,
                )
            )

    @property
    def ports(self) -> list[tuple[str, int]]:
        """``("imap", port)`` and ``("imaps", port)`` for the enabled listeners."""
        return [("imaps" if item.implicit_tls else "imap", item.port) for item in self.listeners]

    async def start(self) -> None:
        """Open the sockets and start watching for changes made elsewhere."""
        self.events.bind(asyncio.get_running_loop())
        self.feed.start()
        for listener in self.listeners:
            await listener.start()

    async def stop(self, grace: float = 30.0) -> None:
        """Close the sockets, finish running commands, stop the feed and the thread pool."""
        await asyncio.gather(*(listener.stop(grace) for listener in self.listeners))
        await asyncio.to_thread(self.feed.stop)
        self.backend.close()

    def notify_new_mail(self, account_ids: Iterable[int]) -> None:
        """Post-commit hook of SMTP delivery: wake these accounts' IDLE sessions (thread-safe)."""
        self.events.notify_new_mail(account_ids)
