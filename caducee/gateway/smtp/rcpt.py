"""RCPT stage (A1, B2, B3): is the recipient hosted here, open, and may this sender write to it?"""

from __future__ import annotations

from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.directory.identifiers import ins_key_valid
from caducee.directory.lookup import bal_type_of
from caducee.directory.trust_models import DomainError, to_ascii_domain
from caducee.gateway.smtp.mail import split_address
from caducee.mailboxes.accounts.lifecycle import door_state
from caducee.mailboxes.accounts.store import recipient_account
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
