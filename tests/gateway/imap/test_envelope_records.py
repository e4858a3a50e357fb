"""H1, J1, issue 15: delivery seals each message's rendered ENVELOPE apart for listings.

A cold ``FETCH 1:* (FLAGS ENVELOPE)`` decrypts these small records instead of
parsing every structure. The records are sealed like any blob (J1), a listing gives
the same ENVELOPE as the structure path, and mail stored without a record (before
migration 0027) still lists through its structure.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from caducee.mailboxes.imap_models import StructureCache
from caducee.mailboxes.imap_store import ImapStore, Principal
from caducee.mailboxes.imap_structure import wire_envelope
from caducee.mailboxes.models import MailboxEntry
from caducee.storage.blobs import BlobRow
from tests.harness.served import ServedGateway

SUBJECT = 'Bilan "thyroïdien" de contrôle'
_ENVELOPE = re.compile(rb"ENVELOPE (\(.*\))")


def _envelope_of(client: imaplib.IMAP4_SSL, uid: int, items: str) -> bytes:
    status, data = client.uid("FETCH", str(uid), items)
    assert status == "OK"
    line = b"".join(
        part if isinstance(part, bytes) else b"".join(part) for part in data if part is not None
    )
    found = _ENVELOPE.search(line)
    assert found is not None, line
    rendered = found.group(1)
    # BODYSTRUCTURE may follow the ENVELOPE: cut at the ENVELOPE's own closing parenthesis.
    depth = 0
    quoted = False
    for index, char in enumerate(rendered):
        if char == ord('"') and (index == 0 or rendered[index - 1] != ord("\\")):
            quoted = not quoted
        elif not quoted and char == ord("("):
            depth += 1
        elif not quoted and char == ord(")"):
            depth -= 1
            if depth == 0:
                return rendered[: index + 1]
    raise AssertionError(line)


def test_h1_j1_delivery_seals_the_envelope_apart(imap_gateway: ServedGateway) -> None:
    patient = imap_gateway.new_patient()
    raw = imap_gateway.message(to=patient.address, subject=SUBJECT)
    imap_gateway.send(raw, patient.address)
    components = imap_gateway.components()
    try:
        store = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        owner = Principal(patient.account_id, patient.address, "patient")
        inbox = store.folder(owner, "INBOX")
        (uid,) = [entry.uid for entry in store.changes(owner, inbox.id, None).entries]
        structure = store.structures(owner, inbox.id, [uid], build=False)[uid]
        expected = wire_envelope(structure.envelope)
        with components.database.reading() as session:
            cache = session.scalars(select(StructureCache)).all()
            envelope_ids = [c.envelope_blob_id for c in cache if c.envelope_blob_id is not None]
            assert envelope_ids, "delivery sealed no ENVELOPE record"
            for blob_id in envelope_ids:
                row = session.get(BlobRow, blob_id)
                assert row is not None and row.data is not None
                assert expected[1:24] not in row.data and b"thyro" not in row.data
        fresh = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        assert fresh.envelopes(owner, inbox.id, [uid], build=False) == {uid: expected}
        assert len(fresh.structure_cache) == 0  # the listing parsed no structure
    finally:
        components.close()
    client = imap_gateway.imap(patient)
    try:
        assert client.select("INBOX")[0] == "OK"
        listed = _envelope_of(client, uid, "(FLAGS ENVELOPE)")
        assert listed == expected
        assert _envelope_of(client, uid, "(BODYSTRUCTURE ENVELOPE)") == listed
    finally:
        client.logout()


def test_h1_mail_without_an_envelope_record_lists_through_its_structure(
    imap_gateway: ServedGateway,
) -> None:
    patient = imap_gateway.new_patient()
    for n in range(3):
        raw = imap_gateway.message(to=patient.address, subject=f"{SUBJECT} {n}")
        imap_gateway.send(raw, patient.address)
    components = imap_gateway.components()
    try:
        store = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        owner = Principal(patient.account_id, patient.address, "patient")
        inbox = store.folder(owner, "INBOX")
        uids = [entry.uid for entry in store.changes(owner, inbox.id, None).entries]
        assert len(uids) == 3
        structures = store.structures(owner, inbox.id, uids, build=False)
        expected = {uid: wire_envelope(structures[uid].envelope) for uid in uids}
        with components.database.transaction() as session:
            # As stored before migration 0027: the second message has no record.
            second = select(MailboxEntry.message_id).where(
                MailboxEntry.folder_id == inbox.id, MailboxEntry.uid == uids[1]
            )
            changed = session.execute(
                update(StructureCache)
                .where(StructureCache.message_id.in_(second.scalar_subquery()))
                .values(envelope_blob_id=None)
            )
            assert cast(CursorResult[Any], changed).rowcount == 1
    finally:
        components.close()
    client = imap_gateway.imap(patient)
    try:
        assert client.select("INBOX")[0] == "OK"
        for uid in uids:
            assert _envelope_of(client, uid, "(FLAGS ENVELOPE)") == expected[uid]
        status, data = client.fetch("1:*", "(FLAGS ENVELOPE)")
        assert status == "OK" and len([d for d in data if d is not None]) >= 3
    finally:
        client.logout()


def test_h1_a_structure_built_at_first_access_gets_its_envelope_record(
    imap_gateway: ServedGateway,
) -> None:
    patient = imap_gateway.new_patient()
    raw = imap_gateway.message(to=patient.address, subject=f"{SUBJECT} (APPEND)")
    client = imap_gateway.imap(patient)
    try:
        assert client.append("INBOX", None, None, raw)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        status, data = client.uid("SEARCH", "ALL")
        assert status == "OK" and data[0] is not None
        (uid,) = [int(n) for n in data[0].split()]
        listed = _envelope_of(client, uid, "(FLAGS ENVELOPE)")
    finally:
        client.logout()
    components = imap_gateway.components()
    try:
        store = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        owner = Principal(patient.account_id, patient.address, "patient")
        inbox = store.folder(owner, "INBOX")
        assert store.envelopes(owner, inbox.id, [uid], build=False) == {uid: listed}
        assert len(store.structure_cache) == 0  # read from the record built with the structure
    finally:
        components.close()
