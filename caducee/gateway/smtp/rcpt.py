"""RCPT stage (A1, B2, B3): is the recipient hosted here, open, and may this sender write to it?"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.directory.identifiers import ins_key_valid
from caducee.directory.lookup import bal_type_of
from caducee.directory.trust_models import DomainError, to_ascii_domain
from caducee.gateway.smtp.mail import split_address
from caducee.mailboxes.accounts.lifecycle import door_state
from caducee.mailboxes.accounts.store import normalise_address, recipient_account
from caducee.mailboxes.delivery import Recipient, RecipientRole
from caducee.policies.inbound import (
    RCPT_CHAIN,
    PatientState,
    RecipientFacts,
    RecipientKind,
)
from caducee.policies.verdict import Verdict, first_refusal


def _domain(text: str) -> str:
    try:
        return to_ascii_domain(text)
    except DomainError:
        return text.lower()


def is_patient_address(settings: Settings, address: str) -> bool:
    """True when ``address`` is in the patient domain (A1)."""
    parts = split_address(address)
    return parts is not None and parts[1] == _domain(settings.gateway.patient_domain)


def resolve_recipient(
    session: Session, settings: Settings, address: str, sender: str
) -> tuple[RecipientFacts, Recipient | None]:
    """Classify ``address`` and gather what the RCPT chain needs."""
    parts = split_address(address)
    patient_domain = _domain(settings.gateway.patient_domain)
    hosted = {_domain(domain) for domain in settings.gateway.hosted_domains}
    kind = RecipientKind.FOREIGN
    ins_ok = True
    state = PatientState.UNKNOWN
    recipient: Recipient | None = None
    if parts is not None:
        local, domain = parts
        if domain == patient_domain:
            kind = RecipientKind.PATIENT
            ins_ok = ins_key_valid(local)
            account = recipient_account(session, address, patient=True)
            if account is not None:
                state = door_state(
                    session, account.id, account.state, test_mode=settings.gateway.test_mode
                )
                recipient = Recipient(account.address, account.id, RecipientRole.PATIENT)
        elif domain in hosted:
            account = recipient_account(session, address, patient=False)
            kind = RecipientKind.HOSTED if account is not None else RecipientKind.UNKNOWN
            if account is not None:
                recipient = Recipient(account.address, account.id, RecipientRole.PROFESSIONAL)
    facts = RecipientFacts(
        kind=kind,
        ins_key_valid=ins_ok,
        patient_state=state,
        null_sender=sender == "",
        sender_is_patient=bool(sender) and is_patient_address(settings, sender),
        sender_bal_type=bal_type_of(session, sender)
        if sender and kind is RecipientKind.PATIENT
        else None,
    )
    return facts, recipient


def judge_recipient(facts: RecipientFacts) -> Verdict | None:
    """The RCPT chain's verdict (None: accept this recipient)."""
    return first_refusal(RCPT_CHAIN, facts)


RECIPIENT_CACHE_SECONDS = 1.0
"""How long an accepted RCPT lookup is reused: the bound on how late a change is seen.

A patient space closed, suspended or opposed, an account removed, a sender's directory
entry changed (its BAL type) — made by any process, the CLI included — is seen by RCPT at
most this long after its commit. A refusal is never remembered, so a space opened or
reopened, or a new account, is accepted at once."""

RECIPIENT_CACHE_ENTRIES = 10_000
"""(recipient, sender) pairs one process remembers at most (least recently used go first)."""


@dataclass
class AcceptedRecipients:
    """RCPT lookups that ended in acceptance, reused for :data:`RECIPIENT_CACHE_SECONDS`.

    Why: the lookup (account, space status, the sender's BAL type: three queries in their own
    read transaction, on a worker thread) ran for every message, and one professional often
    sends a patient several messages in a row (a laboratory's results, each its own
    message). The cache lives on the event loop's thread only (no lock); a reload (SIGHUP)
    clears it, since the facts depend on the patient domain, the hosted domains and the
    test mode.
    """

    ttl: float = RECIPIENT_CACHE_SECONDS
    max_entries: int = RECIPIENT_CACHE_ENTRIES
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[tuple[str, str], tuple[float, RecipientFacts, Recipient]] = field(
        default_factory=OrderedDict
    )

    @staticmethod
    def _key(address: str, sender: str) -> tuple[str, str]:
        return normalise_address(address), normalise_address(sender)

    def get(self, address: str, sender: str) -> tuple[RecipientFacts, Recipient] | None:
        """The facts and recipient of an acceptance younger than ``ttl``, else None."""
        key = self._key(address, sender)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, facts, recipient = entry
        if self.clock() - stored_at >= self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return facts, recipient

    def put(self, address: str, sender: str, facts: RecipientFacts, recipient: Recipient) -> None:
        """Remember an acceptance (call only when the RCPT chain accepted ``facts``)."""
        key = self._key(address, sender)
        self._entries[key] = (self.clock(), facts, recipient)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
