"""H1: strict per-account isolation: one account never sees nor touches another's mail."""

from __future__ import annotations

import pytest

from caducee.mailboxes.imap_store import FolderNotFound, ImapStore, Principal
from tests.harness.served import ServedGateway

SECRET = b"Subject: Bilan confidentiel\r\nFrom: lab@labo-demo.mssante.fr\r\n\r\nTSH 12 mUI/L\r\n"


def test_h1_accounts_are_isolated_over_imap(imap_gateway: ServedGateway) -> None:
    alice = imap_gateway.new_patient()
    bob = imap_gateway.new_patient()
    first = imap_gateway.imap(alice)
    second = imap_gateway.imap(bob)
    try:
        assert first.create("Dossier-Alice")[0] == "OK"
        assert first.append("INBOX", None, None, SECRET)[0] == "OK"
        assert first.append("Dossier-Alice", None, None, SECRET)[0] == "OK"

        listing = b" ".join(item for item in second.list()[1] if isinstance(item, bytes))
        assert b"Dossier-Alice" not in listing
        assert second.select("Dossier-Alice")[0] == "NO"
        assert second.status("Dossier-Alice", "(MESSAGES)")[0] == "NO"
        assert second.select("INBOX") == ("OK", [b"0"])
        assert second.uid("FETCH", "1:*", "(BODY.PEEK[])")[1] == [None]
        assert second.uid("SEARCH", None, 'TEXT "TSH"')[1] == [b""]
        assert second.append("Dossier-Alice", None, None, SECRET)[0] == "NO"
        assert second.delete("Dossier-Alice")[0] == "NO"
        assert second.rename("Dossier-Alice", "Pris")[0] == "NO"
        for name in (f"../{alice.address}/INBOX", f"{alice.address}/INBOX", "#shared/INBOX"):
            assert second.select(name)[0] == "NO"

        assert first.select("Dossier-Alice") == ("OK", [b"1"])
        assert first.uid("COPY", "1", "INBOX")[0] == "OK"
        assert first.select("INBOX") == ("OK", [b"2"])
    finally:
        first.logout()
        second.logout()


def test_h1_the_store_refuses_another_accounts_folder_ids_and_messages(
    imap_gateway: ServedGateway,
) -> None:
    """Isolation is enforced by the store itself, whatever ids a buggy caller passes."""
    alice = imap_gateway.new_patient()
    bob = imap_gateway.new_patient()
    client = imap_gateway.imap(alice)
    client.append("INBOX", None, None, SECRET)
    client.create("Dossier-Alice")
    client.logout()
    imap_gateway.imap(bob).logout()  # bob's standard folders exist from his first login
    components = imap_gateway.components()
    try:
        store = ImapStore(
            components.database, components.blobs, components.queue, reporting_host="test"
        )
        owner = Principal(alice.account_id, alice.address, "patient")
        intruder = Principal(bob.account_id, bob.address, "patient")
        inbox = store.folder(owner, "INBOX")
        entries = store.changes(owner, inbox.id, None).entries
        assert len(entries) == 1
        uids = [entry.uid for entry in entries]
        assert store.contents(owner, inbox.id, uids)
        assert store.contents(intruder, inbox.id, uids) == {}
        assert store.structures(intruder, inbox.id, uids) == {}
        theirs = store.folder(intruder, "INBOX")
        assert store.contents(intruder, theirs.id, uids) == {}
        with pytest.raises(FolderNotFound):
            store.changes(intruder, inbox.id, None)
        with pytest.raises(FolderNotFound):
            store.store_flags(intruder, inbox.id, [1], frozenset({"\\Deleted"}), "add")
        with pytest.raises(FolderNotFound):
            store.expunge(intruder, inbox.id, None)
        with pytest.raises(FolderNotFound):
            store.copy(intruder, inbox.id, [1], "INBOX")
        with pytest.raises(FolderNotFound):  # another account's folder name is unknown here
            store.copy(intruder, store.folder(intruder, "INBOX").id, [1], "Dossier-Alice")
        assert store.changes(owner, inbox.id, None).entries == entries
    finally:
        components.close()
