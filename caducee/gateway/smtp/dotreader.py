"""The strict DATA reader: CRLF only, dot-unstuffing, size cap (B4, SMTP smuggling).

Data ends at the first ``CRLF . CRLF``; the CRLF that ended the ``DATA``
command line counts, so an empty message is just ``.CRLF``. Any CR or LF that
is not part of a CRLF pair makes the whole message refused — whatever a
receiver downstream might make of ``LF . LF`` or ``CR . CR``, we never read
anything sent after a bare line ending as a command (chasquid's dotreader).
Reading stays in big chunks (no per-line await), which matters for 25 MB
messages; bytes the client pipelined after the end of data are handed back to
the command reader.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from caducee.gateway.limits import Held

END_OF_DATA = b"\r\n.\r\n"
CHUNK = 256 * 1024


class ConnectionClosedDuringData(Exception):
    """The client went away before the end of data."""


@dataclass(frozen=True)
class DataRead:
    """The message as received: content is None when it was too large (then discarded).

    ``over_budget``: the bytes in flight of all sessions would have gone over the DATA
    budget, so the rest of this message was read and discarded (content is None).
    """

    content: bytes | None
    size: int
    bare_line_ending: bool
    over_budget: bool = False

    @property
    def too_large(self) -> bool:
        return self.content is None


def has_bare_line_ending(data: bytes) -> bool:
    """True when some CR or LF in ``data`` is not part of a CRLF pair."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def unstuff(framed: bytes) -> bytes:
    """Remove the dot that the client doubled at the start of lines (RFC 5321 §4.5.2).

    ``framed`` starts with the CRLF that preceded the first line.
    """
    return framed.replace(b"\r\n.", b"\r\n")[2:]


async def read_data(reader: asyncio.StreamReader, limit: int, held: Held | None = None) -> DataRead:
    """Read one message's data from ``reader`` after the ``354`` reply.

    With ``held``, the buffered bytes are counted against the process's DATA budget
    as they arrive; once they do not fit, the rest is read and discarded.
    """
    cap = limit + limit // 50 + 64 * 1024  # room for dot-stuffing before calling it too large
    keep = len(END_OF_DATA) - 1  # what may hold the start of a split end-of-data mark
    buffer = bytearray(b"\r\n")
    search_from = 0
    discarded = 0
    over_budget = False
    while True:
        end = buffer.find(END_OF_DATA, max(0, search_from - keep))
        if end >= 0:
            break
        if discarded or over_budget or len(buffer) > cap:
            # Too large: count and drop what was searched, keep reading to the end of data.
            discarded += len(buffer) - keep
            del buffer[:-keep]
        search_from = len(buffer)
        chunk = await reader.read(CHUNK)
        if not chunk:
            raise ConnectionClosedDuringData
        buffer += chunk
        if held is not None and not over_budget and not held.grow_to(len(buffer)):
            over_budget = True
    leftover = bytes(buffer[end + len(END_OF_DATA) :])
    if leftover:
        # Pipelined commands after the data go back to the command reader. StreamReader
        # has no public unread; its buffer is a bytearray (aiosmtpd clears it the same way).
        reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
    if over_budget:
        return DataRead(
            content=None, size=discarded + end, bare_line_ending=False, over_budget=True
        )
    if discarded:
        return DataRead(content=None, size=discarded + end, bare_line_ending=False)
    framed = bytes(buffer[: end + 2])
    if has_bare_line_ending(framed):
        return DataRead(content=b"", size=len(framed) - 2, bare_line_ending=True)
    content = unstuff(framed)
    if len(content) > limit:
        return DataRead(content=None, size=len(content), bare_line_ending=False)
    return DataRead(content=content, size=len(content), bare_line_ending=False)
