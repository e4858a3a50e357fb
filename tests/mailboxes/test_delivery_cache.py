"""K2 (bounded resources): the delivery path keeps the INBOX ids of the most recently
delivered-to accounts only, and delivers correctly to accounts it has forgotten."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from caducee.mailboxes import delivery as delivery_module
from caducee.mailboxes.delivery import MailDelivery
from caducee.mailboxes.models import INBOX, Folder, MailboxEntry
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue
from tests.harness.envelopes import professional_mail
from tests.harness.identities import add_patient, valid_ins


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
                delivery.deliver(session, professional_mail(address, account_id, n))
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
