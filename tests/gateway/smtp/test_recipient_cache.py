"""B2 at speed: accepted RCPT lookups are reused for a bounded time, refusals never (issue 19).

The operators' port remembers an accepted recipient for ``RECIPIENT_CACHE_SECONDS``; a change
made elsewhere (here: another process's connection, as the CLI would) must show at RCPT
within that bound, and a refusal must not outlive its cause at all.
"""

from __future__ import annotations

import time

from sqlalchemy import update

from caducee.directory.identifiers import ins_key
from caducee.gateway.smtp.rcpt import RECIPIENT_CACHE_SECONDS, AcceptedRecipients
from caducee.mailboxes.accounts.store import Account as AccountRow
from caducee.mailboxes.delivery import Recipient, RecipientRole
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until
from tests.policies.test_smtp_rules_table import TO_PATIENT

from .transcript import Transcript

FACTS = TO_PATIENT  # an accepted patient recipient, as the rule table's tests build it
RECIPIENT = Recipient("p@patient.example", 7, RecipientRole.PATIENT)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_b2_cached_acceptance_expires_after_its_bound() -> None:
    clock = _Clock()
    cache = AcceptedRecipients(ttl=1.0, clock=clock)
    cache.put("P@patient.example", "Doc@labo.example", FACTS, RECIPIENT)
    clock.now += 0.9
    assert cache.get("p@patient.example", "doc@labo.example") == (FACTS, RECIPIENT)
    assert cache.get("p@patient.example", "other@labo.example") is None  # keyed by sender too
    clock.now += 0.1
    assert cache.get("p@patient.example", "doc@labo.example") is None


def test_b2_cache_keeps_the_most_recent_entries_only() -> None:
    cache = AcceptedRecipients(max_entries=2, clock=_Clock())
    for name in ("a", "b", "c"):
        cache.put(f"{name}@patient.example", "doc@labo.example", FACTS, RECIPIENT)
    assert cache.get("a@patient.example", "doc@labo.example") is None
    assert cache.get("c@patient.example", "doc@labo.example") is not None
    cache.clear()
    assert cache.get("c@patient.example", "doc@labo.example") is None


def _session(gateway: ServedGateway) -> Transcript:
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    assert t.reply().startswith("220 ")
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.starttls(gateway.tls_context(client_cert=True))
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    return t


def _rcpt(t: Transcript, gateway: ServedGateway, address: str) -> str:
    """One transaction's RCPT reply (the transaction is reset after it)."""
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.send(f"RCPT TO:<{address}>\r\n")
    reply = t.reply()
    t.command("RSET", r"250 ")
    return reply


def _set_state(gateway: ServedGateway, address: str, state: str) -> None:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(AccountRow).where(AccountRow.address == address).values(state=state)
            )
    finally:
        components.close()


def test_b2_suspension_seen_at_rcpt_within_the_cache_bound(gateway: ServedGateway) -> None:
    address = gateway.add_patient("1770375123459" + ins_key("1770375123459"))
    t = _session(gateway)
    try:
        assert _rcpt(t, gateway, address).startswith("250 ")
        assert _rcpt(t, gateway, address).startswith("250 ")  # from the cache now
        _set_state(gateway, address, "suspended")
        changed = time.monotonic()
        wait_until(
            lambda: _rcpt(t, gateway, address).startswith("450 4.2.1"),
            timeout=RECIPIENT_CACHE_SECONDS + 10,
            message="the suspended space was never refused at RCPT",
        )
        assert time.monotonic() - changed <= RECIPIENT_CACHE_SECONDS + 1.0
    finally:
        t.close()


def test_b2_refusal_not_remembered_new_space_accepted_at_once(gateway: ServedGateway) -> None:
    nir = "2660475123461"
    address = f"{nir}{ins_key(nir)}@{gateway.credentials['patient']['address'].split('@')[1]}"
    t = _session(gateway)
    try:
        assert _rcpt(t, gateway, address).startswith("550 5.1.1")
        assert gateway.add_patient(nir + ins_key(nir)) == address
        assert _rcpt(t, gateway, address).startswith("250 ")
        _set_state(gateway, address, "suspended")
        # a suspended space answers 450; once active again, at once (the 450 was not kept)
        wait_until(lambda: _rcpt(t, gateway, address).startswith("450 4.2.1"), timeout=10)
        _set_state(gateway, address, "active")
        assert _rcpt(t, gateway, address).startswith("250 ")
    finally:
        t.close()
