"""The parts of a mail message as filing counts them: leaves, and which leaves are attachments.

Filing numbers the attachments of a message (``record_attachments.position``); the patient's
copy of the message (:mod:`caducee.records.withheld`) must find the same attachment at the
same number, so both walk the message with these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import Message
from typing import cast

MAX_DEPTH = 20
MAX_PARTS = 1000

_BODY_TYPES = frozenset({"text/plain", "text/html"})


def leaves(message: Message) -> Iterator[Message]:
    """Leaf parts in order, without descending into attached messages (``message/*``).

    Iterative and bounded: a hostile message may nest multiparts without end.
    """
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            if depth < MAX_DEPTH:
                children = cast(list[Message], part.get_payload())
                stack.extend((child, depth + 1) for child in reversed(children))
        else:
            yield part


def is_attachment(part: Message) -> bool:
    """An attachment is named or declared so; unnamed inline parts are the body's own."""
    try:
        disposition = part.get_content_disposition()
        file_name = part.get_filename()
    except (ValueError, TypeError, IndexError):
        disposition, file_name = None, None
    if disposition == "attachment" or file_name:
        return True
    if disposition == "inline" or part.get("Content-ID") is not None:
        return False
    return part.get_content_type() not in _BODY_TYPES
