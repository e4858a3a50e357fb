"""SMS senders for patient notifications (G1): the interface's development implementation.

A real SMS gateway is an operator's choice (an HTTP API of a telecom provider); it plugs in
as any object with ``send(phone, text)``
(:class:`caducee.mailboxes.notifications.patients.SmsSender`)
passed to :func:`caducee.gateway.notify.notify_handler`. For development and tests,
:class:`FileSmsSender` appends one JSON line per SMS to a file readable by its owner only, so
one can see what a patient would receive without a provider.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from caducee.storage.db import utcnow


class FileSmsSender:
    """Writes each SMS as ``{"at", "to", "text"}`` on one line of ``path`` (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, phone: str, text: str) -> None:
        line = json.dumps(
            {"at": utcnow().isoformat(), "to": phone, "text": text}, ensure_ascii=False
        )
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def sent(self) -> list[dict[str, str]]:
        """What was written so far (development and tests)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
