"""K2 (bounded resources): the delivery path keeps the INBOX ids of the most recently
delivered-to accounts only, and delivers correctly to accounts it has forgotten."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from caducee.mailboxes import delivery as delivery_module
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole
from caducee.mailboxes.models import INBOX, Folder, MailboxEntry
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue
from tests.harness.identities import add_patient, valid_ins

PROFESSIONAL = "dr.martin@cabinet.mssante.fr"


def _envelope(address: str, account_id: int, n: int) -> Envelope:
    message_id = f"<cache-{n}@cabinet.mssante.fr>"
    content = (
        f"From: {PROFESSIONAL}\r\nTo: {address}\r\nSubject: Consultation\r\n"
        f"Message-ID: {message_id}\r\n\r\nBonjour\r\n"
    ).encode()
    return Envelope(
        content=content,
        direction="inbound",
        envelope_from=PROFESSIONAL,
        header_from=PROFESSIONAL,
        message_id=message_id,
        thread_ids=(),
        reply_to=None,
        ends_exchange=False,
        sender_is_professional=True,
        has_attachments=False,
        recipients=(Recipient(address, account_id, RecipientRole.PATIENT),),
    )


def test_k2_inbox_cache_is_bounded_and_forgotten_accounts_still_receive(
    database: Database, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "INBOX_CACHE_ENTRIES", 2)
    delivery = MailDelivery(blobs, JobQueue(database))
    patients = [add_patient(database, ins=valid_ins())[:2] for _ in range(4)]
    rounds = 2
    n = 0
    for _ in range(rounds):  # the second round meets accounts the cache has dropped
        for account_id, address in patients:
            with database.transaction() as session:
                delivery.deliver(session, _envelope(address, account_id, n))
            n += 1
            assert len(delivery._inbox) <= 2
    with database.reading() as session:
        for account_id, _address in patients:
            count = session.scalar(
                select(func.count())
                .select_from(MailboxEntry)
                .join(Folder, Folder.id == MailboxEntry.folder_id)
                .where(Folder.account_id == account_id, Folder.name == INBOX)
            )
            assert count == rounds
