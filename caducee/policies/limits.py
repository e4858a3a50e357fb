"""Limits every SMTP port enforces the same way (B4, K4), as rule tables.

The caps bound what one client, or all of them, may make a process hold: connections,
session time, recipients, declared and received size, DATA bytes in flight. Each is a line
of a table like every other refusal, so its id is what the transaction log line, the
refusal metric and the operator's documentation name.

Facts are gathered where the limit is known: connection caps at the socket (before any TLS
on ports that speak in clear first), the session clock by its timer, SIZE at MAIL, the
recipient count at RCPT, the DATA reader's findings at the end of the data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from caducee.policies.verdict import Refusal, Rule, SmtpRule


class ConnectionCap(enum.StrEnum):
    """Which connection limiter refused (the limiter's own names)."""

    TOTAL = "total"
    PER_ADDRESS = "per-ip"


@dataclass(frozen=True)
class ConnectionFacts:
    """What a connection is judged on when it opens, and while it lasts."""

    refused_by: ConnectionCap | None = None
    """The cap the connection limiter says the new connection is over, if any."""
    session_expired: bool = False
    """The total session time of the listener is over."""


CONNECTION_CHAIN: tuple[SmtpRule[ConnectionFacts], ...] = (
    Rule(
        "K4.connections-total",
        lambda f: f.refused_by is ConnectionCap.TOTAL,
        Refusal(421, "4.7.0", "Too many connections, try again later"),
        "The process holds at most the configured number of SMTP connections.",
    ),
    Rule(
        "K4.connections-per-address",
        lambda f: f.refused_by is ConnectionCap.PER_ADDRESS,
        Refusal(421, "4.7.0", "Too many connections from your address, try again later"),
        "One client address holds at most the configured number of connections.",
    ),
    Rule(
        "K4.session-time",
        lambda f: f.session_expired,
        Refusal(421, "4.4.2", "Session time limit reached, closing"),
        "A session ends after the configured total time (after the message being received).",
    ),
)


@dataclass(frozen=True)
class EnvelopeLimitFacts:
    """What MAIL (declared SIZE) and RCPT (recipient count) are judged on."""

    declared_size: int | None = None
    """The ``SIZE=`` of MAIL (RFC 1870), when given as digits."""
    size_limit: int = 0
    recipients: int = 0
    """Recipients accepted so far in this transaction."""
    recipient_limit: int = 0


ENVELOPE_LIMIT_CHAIN: tuple[SmtpRule[EnvelopeLimitFacts], ...] = (
    Rule(
        "B4.declared-size",
        lambda f: f.declared_size is not None and f.declared_size > f.size_limit,
        Refusal(552, "5.3.4", "Message size exceeds the maximum accepted here"),
        "A MAIL whose SIZE is over the limit is refused before any byte of data.",
    ),
    Rule(
        "K4.recipients",
        lambda f: f.recipient_limit > 0 and f.recipients >= f.recipient_limit,
        Refusal(452, "4.5.3", "Too many recipients"),
        "A transaction has at most the configured number of recipients (RFC 5321 4.5.3.1.8).",
    ),
)


@dataclass(frozen=True)
class DataReadFacts:
    """What the DATA reader found while reading the message (before any handler runs)."""

    over_budget: bool = False
    """The message (declared or received) does not fit in the process's DATA budget."""
    bare_line_ending: bool = False
    """A bare CR or LF was read (B4, SMTP smuggling)."""
    too_big: bool = False
    """The reader stopped keeping the data at the size limit."""


DATA_READ_CHAIN: tuple[SmtpRule[DataReadFacts], ...] = (
    Rule(
        "K4.data-in-flight",
        lambda f: f.over_budget,
        Refusal(451, "4.3.1", "Too much mail being received right now, try again later"),
        "All sessions of a process hold at most the configured DATA bytes in memory.",
    ),
    Rule(
        "B4.crlf-only",
        lambda f: f.bare_line_ending,
        Refusal(
            521, "5.5.2", "Bare CR or LF in message data: refused (lines must end in CRLF); closing"
        ),
        "Lines end in CRLF only (SMTP smuggling); the session closes after the data.",
    ),
    Rule(
        "B4.data-too-big",
        lambda f: f.too_big,
        Refusal(552, "5.3.4", "Message too big"),
        "The data is over the size limit (advertised with SIZE).",
    ),
)
