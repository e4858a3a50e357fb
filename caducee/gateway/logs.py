"""JSON log lines on stderr (K3), with no message content (I5, J2).

Log calls pass facts as ``extra`` fields (ids, codes, counts); the formatter
writes only those and the message text, which by convention never holds
addresses' content, subjects or bodies.

Libraries do not follow that convention: aiosmtpd (logger ``mail.log``) logs client
lines, the words of unknown commands (``unrecognised: <word>``: the first word of every
body line a client streams after a refused transaction), envelope addresses and AUTH
exchanges. :class:`ClientTextFilter` keeps such records but replaces every argument
other than the peer's address by ``[redacted]``: the event stays visible, the text the
client sent does not.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised; never the text, which may quote content.
            entry["exception"] = record.exc_info[0].__name__
            traceback = record.exc_info[2]
            while traceback is not None and traceback.tb_next is not None:
                traceback = traceback.tb_next
            if traceback is not None:
                code = traceback.tb_frame.f_code
                entry["raised_at"] = f"{code.co_filename}:{traceback.tb_lineno} in {code.co_name}"
        return json.dumps(entry, ensure_ascii=False)


REDACTED = "[redacted]"
CLIENT_TEXT_LOGGERS = ("mail.log",)
"""Loggers of libraries whose records quote what the client sent (aiosmtpd)."""


def _peer(value: object) -> bool:
    return isinstance(value, tuple) and len(value) in (2, 4) and isinstance(value[0], str)


class ClientTextFilter(logging.Filter):
    """Redacts client-supplied text from a library's log records (J2); keeps peer addresses."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(arg if _peer(arg) else REDACTED for arg in args)
        elif isinstance(args, dict) and args:
            record.args = {key: REDACTED for key in args}
        elif not args and not isinstance(record.msg, str):
            record.msg = REDACTED
        elif isinstance(record.msg, str) and record.name in CLIENT_TEXT_LOGGERS and not args:
            # Pre-formatted text (f-strings): keep its first word (the event), drop the rest.
            words = record.msg.split(":", 1)
            record.msg = words[0] if len(words) == 1 else f"{words[0]}: {REDACTED}"
        return True


def redact_client_text() -> None:
    """Install :class:`ClientTextFilter` on the loggers of :data:`CLIENT_TEXT_LOGGERS`."""
    for name in CLIENT_TEXT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientTextFilter) for f in logger.filters):
            logger.addFilter(ClientTextFilter())


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings become JSON lines too
    for noisy in ("uvicorn.access", "mail.log", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_client_text()
    logging.getLogger("uvicorn.error").handlers.clear()
    logging.getLogger("uvicorn").handlers.clear()
    logging.getLogger("uvicorn").propagate = True
