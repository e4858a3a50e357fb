"""Which accounts' folders just changed, seen from one process: PostgreSQL NOTIFY or polling (K2).

IMAP IDLE must show a new message within a second, also when the SMTP server
that stored it runs in another process or on another host. On PostgreSQL the
``0005_imap`` trigger sends ``NOTIFY caducee_mailbox, '<schema>:<account>'``
whenever a folder's ``uid_next`` or ``highest_modseq`` moves, delivered at
commit; :class:`ChangeFeed` LISTENs on a dedicated connection and calls back
with the account id. On SQLite (one host, a file) it polls a fingerprint of the
watched accounts' folders (``uid_next``, ``highest_modseq``): one indexed query
per interval for all sessions of the process, not one per session.

Polling also runs on PostgreSQL, slowly, as a safety net: a notification sent
while the listening connection was being re-established is not replayed, so
after a reconnect every account is reported changed and the poll catches
anything else. A spurious report only makes a session look for changes and
find none.

The feed knows nothing of sessions: it calls ``on_change(account_id)`` (or
``on_change(None)`` for "assume everything changed") from its own threads;
the IMAP layer turns that into wake-ups on its event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import psycopg
from sqlalchemy.engine import make_url

from caducee.mailboxes.imap_store import ImapStore
from caducee.storage.db import Database

log = logging.getLogger("caducee.imap.changes")

CHANNEL = "caducee_mailbox"


class ChangeFeed:
    """Reports account ids whose folders changed, to ``on_change``, from background threads."""

    def __init__(
        self,
        database: Database,
        store: ImapStore,
        on_change: Callable[[int | None], None],
        watched: Callable[[], Collection[int]],
        *,
        poll_interval: float = 0.25,
        safety_poll_interval: float = 5.0,
        listen: bool | None = None,
    ) -> None:
        self.database = database
        self.store = store
        self.on_change = on_change
        self.watched = watched
        self.listen = database.dialect == "postgresql" if listen is None else listen
        self.poll_interval = safety_poll_interval if self.listen else poll_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._versions: dict[int, tuple[tuple[int, ...], ...]] = {}
        self.listening = threading.Event()

    def start(self) -> None:
        """Start the poller and, on PostgreSQL, the listener."""
        self._stop.clear()
        targets: list[tuple[str, Callable[[], None]]] = [("imap-poll", self._poll_loop)]
        if self.listen:
            targets.append(("imap-listen", self._listen_loop))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads (they notice within a second)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def poll_once(self) -> None:
        """Compare the watched accounts' folder fingerprints with the last ones seen."""
        accounts = sorted(set(self.watched()))
        if not accounts:
            self._versions.clear()
            return
        current = self.store.folder_versions(accounts)
        for account, version in current.items():
            previous = self._versions.get(account)
            if previous != version:
                self.on_change(account)
        self._versions = current

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
            except Exception:  # a database hiccup must not end IDLE for good
                log.warning("imap change poll failed", exc_info=True)

    def _conninfo(self) -> str:
        url = make_url(self.database.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True) as connection:
                    schema = connection.execute("SELECT current_schema()").fetchone()
                    prefix = f"{schema[0] if schema else 'public'}:"
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self.on_change(None)  # whatever happened while we were not listening
                    delay = 0.5
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=0.5):
                            payload = notice.payload
                            if payload.startswith(prefix) and payload[len(prefix) :].isdigit():
                                self.on_change(int(payload[len(prefix) :]))
            except Exception:
                self.listening.clear()
                if self._stop.is_set():
                    break
                log.warning("imap LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.listening.clear()
