"""Parse a mail message as :mod:`email` does, without reading its large bodies line by line.

Filing parses every message it is given (the whole MIME tree: headers, receipts, attachments).
:mod:`email`'s parser reads a message one line at a time in Python: a 1 MiB report with a
750 KiB PDF in base64 is ~14,000 lines and ~24 ms of CPU, more than everything else the
gateway does with that message (issue 19). The tree it builds is what filing, the receipts and
the patient's copy (:mod:`caducee.records.withheld`) agree on, so it stays the reference.

How: a large body that contains no ``-`` cannot hold a MIME boundary (every delimiter line
starts with ``--``), so nothing in it can change where :mod:`email` splits the message. Each
such body — it follows a blank line and runs up to a line that starts with ``--`` — is
replaced by a short random token, the smaller message is parsed by :mod:`email` itself, and
the original text is put back in the part whose whole payload is that token. The tree is then
the one the full parse gives: same parts, same headers, same payloads. Whenever the check does
not hold — a token is not the whole payload of exactly one leaf part (a blank line inside a
text body, a boundary :mod:`email` does not take for one, a body inside an attached message
that :mod:`email` reads as headers) — the whole message is parsed the slow way instead.
"""

from __future__ import annotations

import secrets
from email import message_from_bytes, policy
from email.message import Message
from typing import cast

MIN_BODY = 4096
"""Bodies shorter than this are left in place: parsing them costs less than the check."""
MAX_BODIES = 1000
"""At most this many bodies are set aside (bounded work on a hostile message)."""
MAX_PARTS = 5000
"""The check visits at most this many parts; past that, the slow parse."""

_BLANK_LINES = (b"\n\r\n", b"\n\n")


def parse_mail(raw: bytes) -> Message:
    """``email.message_from_bytes(raw, policy=policy.default)``, faster on large bodies."""
    token = b"caduceebody" + secrets.token_hex(16).encode("ascii")
    reduced, bodies = _set_aside(raw, token)
    if not bodies:
        return message_from_bytes(raw, policy=policy.default)
    message = message_from_bytes(reduced, policy=policy.default)
    if _restore(message, token, bodies):
        return message
    return message_from_bytes(raw, policy=policy.default)


class _BlankLines:
    """The blank lines of ``raw`` in order, each pattern searched forward once (linear)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.found = {blank: -1 for blank in _BLANK_LINES}
        """Per pattern, its last occurrence found; ``len(raw)``: there is no more."""

    def after(self, start: int) -> int:
        """Where the text after the first blank line at or after ``start`` begins; -1: none."""
        best = -1
        for blank in _BLANK_LINES:
            at = self.found[blank]
            if at < start:
                at = self.raw.find(blank, start)
                at = self.found[blank] = len(self.raw) if at < 0 else at
            if at < len(self.raw) and (best < 0 or at + len(blank) < best):
                best = at + len(blank)
        return best


def _set_aside(raw: bytes, token: bytes) -> tuple[bytes, list[bytes]]:
    """``raw`` with each long ``-``-free body after a blank line replaced by ``token`` + index.

    A candidate body starts after a blank line and ends at the line ending before the first
    ``-`` that follows, which must begin a line with ``--``. The payload :mod:`email` would
    give such a part is the body without that one line ending (RFC 2046: it belongs to the
    delimiter), which is what is kept. Linear: each step moves past the ``-`` it looked at.
    """
    pieces: list[bytes] = []
    bodies: list[bytes] = []
    copied = 0
    blank_lines = _BlankLines(raw)
    position = blank_lines.after(0)
    while position >= 0 and len(bodies) < MAX_BODIES:
        dash = raw.find(b"-", position)
        if dash < 0:
            break
        delimiter = raw[dash - 1 : dash + 2] == b"\n--"
        if delimiter and dash - position >= MIN_BODY:
            ending = 2 if raw[dash - 2 : dash] == b"\r\n" else 1
            number = str(len(bodies)).encode("ascii")
            bodies.append(raw[position : dash - ending])
            pieces += [raw[copied:position], token, number, raw[dash - ending : dash]]
            copied = dash
        position = blank_lines.after(dash + 1)
    if not bodies:
        return raw, []
    pieces.append(raw[copied:])
    return b"".join(pieces), bodies


def _restore(message: Message, token: bytes, bodies: list[bytes]) -> bool:
    """Put each body back in the leaf whose whole payload is its token; False if any is amiss."""
    prefix = token.decode("ascii")
    restored = [False] * len(bodies)
    stack = [message]
    visited = 0
    while stack:
        visited += 1
        if visited > MAX_PARTS:
            return False
        part = stack.pop()
        payload = part.get_payload()  # not decoded: the text the parser stored
        if isinstance(payload, list):
            stack.extend(cast(list[Message], payload))
            continue
        if not isinstance(payload, str) or prefix not in payload:
            continue
        index = payload[len(prefix) :]
        if not payload.startswith(prefix) or not index.isdigit() or int(index) >= len(bodies):
            return False
        number = int(index)
        if restored[number]:
            return False
        # As the parser decodes the bytes it is given (ASCII, undecodable bytes kept).
        part.set_payload(bodies[number].decode("ascii", "surrogateescape"))
        restored[number] = True
    return all(restored)
