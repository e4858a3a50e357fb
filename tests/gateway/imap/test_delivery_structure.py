"""H1, issue 15: a message stored over SMTP has its IMAP structure before any IMAP access.

The first listing of new mail must not decrypt, parse, re-encrypt and commit each
message (the "cold listing" of bench/imap): delivery records the encrypted structure
in the transaction that stores the message. A one-message FETCH (read on the event
loop on SQLite) still returns exactly the stored bytes.
"""

from __future__ import annotations

from caducee.mailboxes.imap_store import ImapStore, Principal
from tests.harness.served import ServedGateway


def test_h1_smtp_delivery_stores_the_imap_structure(imap_gateway: ServedGateway) -> None:
    patient = imap_gateway.new_patient()
    raw = imap_gateway.message(to=patient.address, subject="Bilan thyroïdien")
    imap_gateway.send(raw, patient.address)
    components = imap_gateway.components()
    try:
        store = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        owner = Principal(patient.account_id, patient.address, "patient")
        inbox = store.folder(owner, "INBOX")
        uids = [entry.uid for entry in store.changes(owner, inbox.id, None).entries]
        assert len(uids) == 1
        cached = store.structures(owner, inbox.id, uids, build=False)  # nothing built here
        assert list(cached) == uids
        assert cached[uids[0]].size == len(store.contents(owner, inbox.id, uids)[uids[0]])
        stored = store.contents(owner, inbox.id, uids)[uids[0]]
    finally:
        components.close()
    client = imap_gateway.imap(patient)
    try:
        assert client.select("INBOX")[0] == "OK"
        status, data = client.uid("FETCH", str(uids[0]), "(BODY.PEEK[] FLAGS)")
        assert status == "OK"
        assert isinstance(data[0], tuple) and data[0][1] == stored
        status, data = client.uid("FETCH", str(uids[0]), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK" and isinstance(data[0], tuple)
        assert data[0][1].lower().startswith(b"subject:")
    finally:
        client.logout()
