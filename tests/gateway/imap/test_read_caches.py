"""H1, J1, issue 15 (speed): the per-process caches of decrypted IMAP data.

A warm listing or a message opened again is answered from a byte-bounded LRU of
decrypted structures and small message bytes, with no query (``ImapStore.cached``),
and SEARCH decodes quoted-printable text with ``binascii``. These tests hold the
guarantees around that: the caches stay within their byte bound, nothing they hold
is answered for a message another session expunged or changed in a way the client
would not see from the store, both sessions see the same bytes, and the fast
quoted-printable decoder gives exactly the bytes of the line-by-line rules.
"""

from __future__ import annotations

import imaplib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from caducee.gateway.runtime import Gateway
from caducee.mailboxes.imap_cache import ByteLRU
from caducee.mailboxes.imap_store import ImapStore, Principal
from caducee.mailboxes.imap_structure import _decode_qp_lines, decode_quoted_printable
from tests.harness.served import Account, ServedGateway


def test_h1_byte_lru_keeps_within_its_byte_bound() -> None:
    cache: ByteLRU[int, bytes] = ByteLRU(1000, max_item_bytes=400)
    for key in range(50):
        cache.put(key, bytes(300), 300)
        assert cache.bytes <= 1000
    assert cache.bytes == 900 and len(cache) == 3
    assert cache.get_many(range(50)) == {47: bytes(300), 48: bytes(300), 49: bytes(300)}
    cache.put(99, bytes(401), 401)  # above the item bound: not kept
    assert cache.get(99) is None and cache.bytes == 900
    assert cache.get(47) is not None  # 47 is now the most recent
    cache.put(100, bytes(300), 300)
    assert cache.get(48) is None and cache.get(47) is not None
    cache.put(47, bytes(10), 10)  # replacing an entry charges its new size only
    assert cache.bytes == 610


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"=", b"\r", b"\n", b"\r\n", b"=\r\n", b" ", b"\t", b"=C3", b"=a9", b"==", b"x", b"_"]
        ),
        max_size=20,
    ).map(b"".join)
)
def test_h1_fast_quoted_printable_equals_the_line_rules(body: bytes) -> None:
    assert decode_quoted_printable(body) == _decode_qp_lines(body)


def test_h1_quoted_printable_french_text_decodes() -> None:
    expected = "Résultats de la TSH \r\nnormale, thyroïdienne.\r\n"
    body = b"R=C3=A9sultats de la TSH=20\r\nnormale, thyro=C3=AF=\r\ndienne.\r\n"
    assert decode_quoted_printable(body).decode() == expected  # binascii path
    padded = b"R=C3=A9sultats de la TSH=20\r\nnormale, thyro=C3=AF=  \r\ndienne. \t\r\n"
    assert decode_quoted_printable(padded).decode() == expected  # line-by-line path


def _store(gateway: ServedGateway, **bounds: int) -> tuple[ImapStore, Gateway]:
    components = gateway.components()
    store = ImapStore(
        components.database,
        components.blobs,
        components.queue,
        reporting_host="test",
        **bounds,
    )
    return store, components


def test_j1_content_cache_is_byte_bounded_and_answers_the_stored_bytes(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    for n in range(6):
        raw = imap_gateway.message(to=patient.address, subject=f"Résultat {n}")
        imap_gateway.send(raw, patient.address)
    store, components = _store(
        imap_gateway,
        content_cache_bytes=12_000,
        content_cache_item_bytes=6_000,
        structure_cache_bytes=20_000,
    )
    try:
        owner = Principal(patient.account_id, patient.address, "patient")
        inbox = store.folder(owner, "INBOX")
        entries = store.changes(owner, inbox.id, None).entries
        assert len(entries) == 6
        uids = [entry.uid for entry in entries]
        first = store.contents(owner, inbox.id, uids)
        store.structures(owner, inbox.id, uids)
        assert 0 < store.content_cache.bytes <= 12_000
        assert 0 < store.structure_cache.bytes <= 20_000
        held = store.cached(
            [(e.message_id, e.blob_id) for e in entries], structure=False, content=True
        )
        assert held  # the most recent ones
        for entry in entries:
            if entry.message_id in held:
                assert held[entry.message_id][1] == first[entry.uid]
        # A second read gives the same bytes, from the cache or the store.
        assert store.contents(owner, inbox.id, uids) == first
        # Another account's folder id gives nothing, whatever this process holds.
        stranger = Principal(patient.account_id + 10_000, "x@example.org", "patient")
        assert store.contents(stranger, inbox.id, uids) == {}
    finally:
        components.close()


def _fetch_body(client: imaplib.IMAP4_SSL, uid: str) -> bytes | None:
    status, data = client.uid("FETCH", uid, "(BODY.PEEK[] FLAGS)")
    assert status == "OK"
    for item in data:
        if isinstance(item, tuple) and isinstance(item[1], bytes):
            return item[1]
    return None


def _envelopes(client: imaplib.IMAP4_SSL) -> dict[str, bytes]:
    status, data = client.fetch("1:*", "(UID ENVELOPE)")
    assert status == "OK"
    found: dict[str, bytes] = {}
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        assert isinstance(line, bytes)
        match = re.search(rb"UID (\d+)", line)
        if match:
            found[match.group(1).decode()] = line
    return found


def test_h1_cached_reads_follow_another_sessions_expunge_and_flags(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    for subject in ("Bilan un", "Bilan deux", "Bilan trois"):
        imap_gateway.send(
            imap_gateway.message(to=patient.address, subject=subject), patient.address
        )
    reader = imap_gateway.imap(patient)
    writer = imap_gateway.imap(patient)
    try:
        assert reader.select("INBOX")[0] == "OK"
        assert writer.select("INBOX")[0] == "OK"
        status, data = reader.uid("SEARCH", "ALL")
        uids = data[0].split()
        assert status == "OK" and len(uids) == 3
        bodies = {uid.decode(): _fetch_body(reader, uid.decode()) for uid in uids}
        listing = _envelopes(reader)  # fills the caches of the server process
        assert _envelopes(reader) == listing  # warm: the same bytes
        # The other session flags the second message and expunges the first.
        first, second, third = (uid.decode() for uid in uids)
        assert writer.uid("STORE", second, "+FLAGS", r"(\Flagged)")[0] == "OK"
        assert writer.uid("STORE", first, "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert writer.expunge()[0] == "OK"
        assert reader.noop()[0] == "OK"
        # The reader's view follows: two messages, sequence 1 is now the second.
        after = _envelopes(reader)
        assert sorted(after) == sorted([second, third])
        assert after[second].startswith(b"1 (")
        status, data = reader.fetch("1", "(UID FLAGS)")
        line = data[0]
        assert status == "OK" and isinstance(line, bytes)
        assert f"UID {second}".encode() in line and b"\\Flagged" in line
        # Cached bytes are still the stored bytes; the expunged UID answers nothing.
        assert _fetch_body(reader, second) == bodies[second]
        assert _fetch_body(writer, third) == bodies[third]
        assert _fetch_body(reader, first) is None
        # A message appended by the other session is read in full, not from a cache.
        new = imap_gateway.message(to=patient.address, subject="Bilan quatre")
        assert writer.append("INBOX", None, None, new)[0] == "OK"
        assert reader.noop()[0] == "OK"
        status, data = reader.uid("SEARCH", "ALL")
        newest = data[0].split()[-1].decode()
        assert newest not in bodies
        fetched = _fetch_body(reader, newest)
        assert fetched is not None and b"Bilan quatre" in fetched
    finally:
        reader.logout()
        writer.logout()
