"""The operators' port on a served home, run in the test's own process (its loop in a thread).

For tests that need what a separate ``serve`` process hides: the hooks the listener calls
(``on_delivered``) or the listener's own settings (``[smtp] processes``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from caducee.gateway.smtp.context import SmtpContext, TrustCache
from caducee.gateway.smtp.listener import OperatorListener
from caducee.mailboxes.delivery import MailDelivery
from caducee.storage.group_commit import GroupCommitter
from tests.harness.served import ServedGateway, free_port


class InProcessOperators:
    """The operators' port on the served home, in this process, its loop in a thread."""

    def __init__(self, gateway: ServedGateway) -> None:
        self.components = gateway.components()
        self.told: list[list[int]] = []
        self.committer = GroupCommitter(self.components.database)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.context = SmtpContext(
            settings=self.components.settings,
            database=self.components.database,
            blobs=self.components.blobs,
            queue=self.components.queue,
            trust=TrustCache(self.components.database),
            committer=self.committer,
            delivery=MailDelivery(self.components.blobs, self.components.queue),
            on_delivered=self._record,
        )
        self.listener = OperatorListener(self.context, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _record(self, accounts: Iterable[int]) -> None:
        self.told.append(sorted(accounts))

    def start(self) -> None:
        self.committer.start()
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(5), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.committer.stop()
        self.components.close()
