"""Our adapter over aiosmtpd's protocol: enhanced codes everywhere, strict DATA, our state.

aiosmtpd parses commands and runs STARTTLS and AUTH well; three things are ours:

* every reply carries an enhanced status code (RFC 2034/3463) — aiosmtpd's own
  replies ("503 Error: need RCPT command") get the standard one for their code;
* DATA is read by :mod:`caducee.gateway.smtp.dotreader` (CRLF only, big chunks),
  and a bare CR or LF ends the session after the data (B4);
* the session and envelope carry the facts our stages gather;
* bounded resources (issue 12): connections per process and per client address
  (``421 4.7.0`` when over, before any TLS on the ports that speak in clear first),
  a total session time (``421 4.4.2``), and the DATA bytes all sessions hold in
  memory (``451 4.3.1`` when a message would go over).

Every one of these refusals is a row of :mod:`caducee.policies.limits` (its id goes into
the log line and the transaction line).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email._header_value_parser import AddrSpec, AngleAddr, get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from caducee.gateway.limits import ConnectionLimiter, DataBudget, Held, client_key
from caducee.gateway.smtp.dotreader import ConnectionClosedDuringData, read_data
from caducee.gateway.tls import handshake_failure
from caducee.mailboxes.accounts.identity import Principal
from caducee.mailboxes.delivery import Recipient
from caducee.policies.limits import (
    CONNECTION_CHAIN,
    DATA_READ_CHAIN,
    ConnectionCap,
    ConnectionFacts,
    DataReadFacts,
)
from caducee.policies.verdict import Verdict, first_refusal

log = logging.getLogger("caducee.smtp")

_HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}( |$)")
DEFAULT_ENHANCED = {
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.0.0",
    421: "4.3.2",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.5.3",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}
_NO_ENHANCED = {220, 334, 354}


def with_enhanced_code(reply: str) -> str:
    """Insert the standard enhanced status code into a reply that lacks one."""
    if len(reply) < 3 or not reply[:3].isdigit() or _HAS_ENHANCED.match(reply):
        return reply
    code = int(reply[:3])
    enhanced = DEFAULT_ENHANCED.get(code)
    if code in _NO_ENHANCED or enhanced is None:
        return reply
    separator = reply[3:4] or " "
    return f"{reply[:3]}{separator}{enhanced} {reply[4:]}".rstrip()


@dataclass
class PeerIdentity:
    """Who is at the other end of the connection, established at TLS time."""

    tls: bool = False
    client_certificate: bool = False
    certificate_domains: tuple[str, ...] = ()
    subject: str | None = None
    cipher: str | None = None
    tls_version: str | None = None


class CaduceeSession(Session):
    """aiosmtpd's session plus the peer's identity."""

    def __init__(self, loop: Any) -> None:
        super().__init__(loop)
        self.identity = PeerIdentity()


class CaduceeEnvelope(Envelope):
    """aiosmtpd's envelope plus the recipients our RCPT stage resolved.

    It also carries what the transaction's log line needs: the queue id (chosen
    up front, so that refused transactions have one too), the last refusal's rule
    and how many recipients were refused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resolved: list[Recipient] = []
        self.outgoing: list[str] = []
        self.size_hint: int | None = None
        self.sender: Principal | None = None  # submission: the mailbox MAIL FROM sends as
        self.queue_id = secrets.token_hex(8)
        self.rule: str | None = None
        self.refused_recipients = 0
        self.logged = False

    def refused(self, stage: str, rule: str) -> None:
        """Record a refusal of this transaction (its rule goes into the transaction line)."""
        self.rule = rule
        if stage == "RCPT":
            self.refused_recipients += 1


AUTH_LINE_LIMIT = 12288  # RFC 4954 §4: an AUTH line may carry a long token (XOAUTH2, OAUTHBEARER)

CLOSING_CODE = 521
"""RFC 7504: the server closes the session after this reply."""


def _limit(verdict: Verdict | None) -> Verdict:
    """The verdict of a limit the caller already knows is reached (its row's facts hold)."""
    assert verdict is not None
    return verdict


def _closing_reply(verdict: Verdict, hostname: str) -> bytes:
    """A ``421`` said before closing: RFC 5321 puts the server's name after the codes."""
    refusal = verdict.refusal
    return f"{refusal.code} {refusal.enhanced} {hostname} {refusal.text}\r\n".encode()


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)


def transaction_status(code: int | None, rule: str | None) -> str:
    """``accepted``, ``temp``, ``refused`` from the final reply; without one, ``refused`` when
    something was refused and ``abandoned`` otherwise (RSET, QUIT or a lost connection)."""
    if code is None:
        return "refused" if rule else "abandoned"
    if code < 400:
        return "accepted"
    return "temp" if code < 500 else "refused"


def declared_size(options: list[str]) -> int | None:
    """The ``SIZE=`` a MAIL command declared (RFC 1870), if any."""
    for option in options:
        if option.upper().startswith("SIZE="):
            value = option[5:]
            return int(value) if value.isdigit() and len(value) <= 15 else None
    return None


_AIOSMTPD_PREFIXES = ("smtp_", "auth_", "handle_")


class CheapAiosmtpdSetup:
    """Makes aiosmtpd's per-connection set-up cheap for the protocol and the handlers.

    For every connection, aiosmtpd's ``SMTP.__init__`` finds its command methods, AUTH
    mechanisms and handler hooks with ``dir()`` and ``inspect.getmembers()`` over the protocol
    and the handler, and reads ``handle_EHLO``'s signature: it listed, sorted and fetched some
    200 attributes to keep a dozen and parsed a signature, 160 µs a connection and 15 % of an
    SMTP worker process's CPU at 4 KiB (issue 19, py-spy). Here ``dir()`` of an instance
    lists only the ``smtp_``, ``auth_`` and ``handle_`` attributes, found once per class, and
    ``handle_EHLO`` carries its signature (``__signature__``, which ``inspect`` reads first).
    ``dir()`` serves introspection only, and nothing else of ours calls it on these objects.
    """

    _aiosmtpd_names: ClassVar[list[str]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._aiosmtpd_names = [name for name in dir(cls) if name.startswith(_AIOSMTPD_PREFIXES)]
        hook = cls.__dict__.get("handle_EHLO")
        if hook is not None:
            setattr(hook, "__signature__", inspect.signature(hook))  # noqa: B010

    def __dir__(self) -> list[str]:
        return list(self._aiosmtpd_names)


class CaduceeSMTP(CheapAiosmtpdSetup, SMTP):
    """The SMTP protocol of every Caducée listener."""

    # The command reader's line limit; other commands keep aiosmtpd's 512 (below).
    line_length_limit = AUTH_LINE_LIMIT

    def __init__(
        self,
        handler: Any,
        *,
        max_message_bytes: int,
        connections: ConnectionLimiter | None = None,
        data_budget: DataBudget | None = None,
        max_session_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        # SIZE is advertised and enforced by our handler (with enhanced codes), so
        # aiosmtpd's own data_size_limit is off.
        super().__init__(handler, data_size_limit=None, **kwargs)
        self.command_size_limits = collections.defaultdict(
            lambda: self.command_size_limit, {"AUTH": AUTH_LINE_LIMIT}
        )
        self.max_message_bytes = max_message_bytes
        self._raw_replies = False
        self.on_close: Callable[[CaduceeSMTP], None] | None = None
        self.connections = connections
        self.data_budget = data_budget
        self.max_session_seconds = max_session_seconds
        self._client: str | None = None  # the key counted in ``connections``
        self._refused = False
        self._session_timer: asyncio.TimerHandle | None = None
        self._in_data = False
        self._expired = False
        self.listener: str | None = None  # the port's name, set by its listener
        self._last_code: int | None = None  # the code of the last reply sent
        self._continued: list[str] = []  # lines of a multi-line reply not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._client is None and self._original_transport is None
        if first and self.connections is not None:
            key = client_key(transport.get_extra_info("peername"))
            refusal = self.connections.admit(key)
            if refusal is not None:
                # Refused before any command (and on ports in clear first, before any TLS).
                self._refused = True
                verdict = _limit(
                    first_refusal(CONNECTION_CHAIN, ConnectionFacts(ConnectionCap(refusal)))
                )
                log.info("smtp connection refused", extra={"rule": verdict.rule})
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(_closing_reply(verdict, self.hostname))
                transport.close()
                return
            self._client = key
        super().connection_made(transport)
        if first and self.max_session_seconds:
            self._session_timer = self.loop.call_later(
                self.max_session_seconds, self._session_expired
            )

    def connection_lost(self, error: Exception | None) -> None:
        if not self._refused:
            if self._session_timer is not None:
                self._session_timer.cancel()
            if self._client is not None and self.connections is not None:
                self.connections.release(self._client)
                self._client = None
            self.log_transaction(self.envelope, None)
            super().connection_lost(error)
        if self.on_close is not None:
            self.on_close(self)

    def _session_expired(self) -> None:
        """The total session time is over: close now, or after the message being received."""
        if self._in_data:
            self._expired = True
        else:
            self._close_expired()

    def _close_expired(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        verdict = _limit(first_refusal(CONNECTION_CHAIN, ConnectionFacts(session_expired=True)))
        log.info("smtp session closed", extra={"rule": verdict.rule})
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write(_closing_reply(verdict, self.hostname))
        self.transport.close()

    def client_address(self) -> str | None:
        """The client's IP address (no port), for log lines."""
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    def local_port(self) -> int | None:
        """The port this session came in on."""
        transport = self._original_transport or self.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A failed STARTTLS handshake: one line with who and why, not a "session error".
            # aiosmtpd closes the connection; the reply below is never sent.
            log.warning(
                "tls handshake failed",
                extra={
                    "client": self.client_address(),
                    "port": self.local_port(),
                    **handshake_failure(error.__cause__),
                },
            )
            return "454 4.7.0 TLS not available"
        status: str = await super().handle_exception(error)
        return status

    def _create_session(self) -> Session:
        return CaduceeSession(self.loop)

    def _create_envelope(self) -> Envelope:
        # The envelope is replaced on RSET, EHLO, STARTTLS and after DATA: a transaction
        # that ends there without a final DATA reply gets its line now.
        if not self._in_data:
            self.log_transaction(getattr(self, "envelope", None), None)
        return CaduceeEnvelope()

    def peer_domain(self) -> str | None:
        """The client's domain: the first its certificate names, else a well-formed EHLO name."""
        session = self.session
        if isinstance(session, CaduceeSession) and session.identity.certificate_domains:
            return session.identity.certificate_domains[0]
        name = session.host_name if session is not None else None
        if isinstance(name, str) and _HOSTNAME.match(name):
            return name.lower()
        return "[invalid]" if name else None

    def log_transaction(self, envelope: Envelope | None, code: int | None) -> None:
        """The transaction's one log line (issue 12, J2): ids, counts, domains, status, rule.

        Never an address (a patient's holds the INS), a subject or any content: the sender
        appears by its domain only, recipients by their count.
        """
        if not isinstance(envelope, CaduceeEnvelope) or envelope.logged:
            return
        if envelope.mail_from is None and envelope.rule is None:
            return  # no transaction was attempted
        envelope.logged = True
        status = transaction_status(code, envelope.rule)
        sender = str(envelope.mail_from or "")
        extra: dict[str, Any] = {
            "queue_id": envelope.queue_id,
            "listener": self.listener,
            "client": self.client_address(),
            "peer_domain": self.peer_domain(),
            "sender_domain": sender.rpartition("@")[2].lower() or None,
            "recipients": len(envelope.rcpt_tos),
            "refused_recipients": envelope.refused_recipients,
            "size": envelope.size_hint,
            "status": status,
            "code": code,
        }
        if status != "accepted" and envelope.rule is not None:
            extra["rule"] = envelope.rule
        log.info("smtp transaction", extra=extra)

    async def push(self, status: Any) -> None:
        """Send a reply line; the lines of a multi-line reply go out in one write.

        aiosmtpd writes each EHLO line on its own: eight ``send`` calls per session, each
        giving up the GIL and waiting to take it back from the group committer and the job
        workers (issue 19: ``transport.write`` was 31 % of the event loop's busy samples).
        A continuation line (``250-``) is held until the reply's last line.
        """
        if isinstance(status, str) and not self._raw_replies:
            status = with_enhanced_code(status)
        if isinstance(status, str) and status[:3].isdigit():
            self._last_code = int(status[:3])
            if status[3:4] == "-":
                self._continued.append(status)
                return
        if self._continued:
            lines, self._continued = self._continued, []
            if isinstance(status, str):
                status = "\r\n".join([*lines, status])
            else:
                encoding = "utf-8" if self.enable_SMTPUTF8 else "ascii"
                status = "\r\n".join(lines).encode(encoding) + b"\r\n" + status
        await super().push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL FROM or RCPT TO and the rest of the line, parsed as aiosmtpd does.

        aiosmtpd 1.4's own ``_getaddr`` declares a ``typing.Protocol`` class inside the method
        for its type checker: a new class, with its ABC machinery, at every MAIL and RCPT, seen
        in the event loop's profile of the 4 KiB bench (issue 19; 57 → 40 µs a call here).
        Same parser, same limits, no class.
        """
        if not arg:
            return "", ""
        address: AngleAddr | AddrSpec
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        path: str = address.addr_spec
        local_part = path.rpartition("@")[0]
        if self.local_part_limit and len(local_part) > self.local_part_limit:
            return None, None
        return path, rest

    async def smtp_MAIL(self, arg: str | None) -> None:
        await super().smtp_MAIL(arg)
        envelope = self.envelope
        if isinstance(envelope, CaduceeEnvelope) and envelope.rule and not envelope.mail_from:
            # MAIL refused by a rule: the transaction ends here; the next MAIL starts afresh.
            self.log_transaction(envelope, self._last_code)
            self.envelope = CaduceeEnvelope()

    async def smtp_EHLO(self, hostname: str) -> None:
        # Replies to EHLO carry no enhanced codes (RFC 2034 §3).
        self._raw_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._raw_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Need RCPT command first")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self._in_data = True
        envelope = self.envelope
        self._last_code = None
        code: int | None = None
        held = self.data_budget.hold() if self.data_budget is not None else None
        try:
            await self._data(held)
            code = self._last_code if self._last_code != 354 else None
        except Exception:
            code = 451  # the handler failed: aiosmtpd answers with handle_exception's 451
            raise
        finally:
            if held is not None:
                held.release()
            self._in_data = False
            self.log_transaction(envelope, code)
            if self._expired:
                self._close_expired()

    async def _refuse_data(self, facts: DataReadFacts) -> Verdict | None:
        """Answer the DATA reader's refusal, if its table has one for ``facts``."""
        verdict = first_refusal(DATA_READ_CHAIN, facts)
        if verdict is None:
            return None
        log.info("message refused", extra={"rule": verdict.rule})
        assert isinstance(self.envelope, CaduceeEnvelope)
        self.envelope.refused("DATA", verdict.rule)
        await self.push(verdict.smtp_reply())
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        return verdict

    async def _data(self, held: Held | None) -> None:
        assert self.envelope is not None
        declared = declared_size(self.envelope.mail_options)
        if held is not None and declared and not held.take(min(declared, self.max_message_bytes)):
            # The declared size does not fit in the DATA budget: not a byte is read.
            await self._refuse_data(DataReadFacts(over_budget=True))
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            received = await read_data(self._reader, self.max_message_bytes, held)
        except ConnectionClosedDuringData:
            log.info("connection closed during DATA")
            return
        assert isinstance(self.envelope, CaduceeEnvelope)
        self.envelope.size_hint = received.size
        facts = DataReadFacts(
            over_budget=received.over_budget, bare_line_ending=received.bare_line_ending
        )
        refused = await self._refuse_data(facts)
        if refused is not None:
            if refused.refusal.code == CLOSING_CODE and self.transport is not None:
                # A bare line ending: nothing the client sent after it is read as a command.
                self.transport.close()
            return
        self.envelope.content = received.content
        self.envelope.original_content = received.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
