"""The mailbox's patient identity, and the facts the E3 identity check is judged on.

The rules themselves live in :mod:`caducee.policies.identity` (a pure table); this module
gathers their facts: the qualified identity behind a patient mailbox (a plain value the jobs
layer builds from the ``mailboxes`` account, :func:`caducee.jobs.mail.mailbox_patient`) and
what a document's reader found about the patient it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from caducee.policies.identity import (
    IdentityFacts,
    Traits,
    differing_traits,
    ins_oid_allowed,
)
from caducee.records.model import Document, SourceFormat
from caducee.records.readers.cda import ins_key_is_valid

STRUCTURED_FORMATS = frozenset({SourceFormat.XDM, SourceFormat.CDA, SourceFormat.HL7V2})
"""Formats whose documents name their patient by INS (CI-SIS), hence checked by E3."""


@dataclass(frozen=True)
class MailboxPatient:
    """A patient mailbox: its address and, when it has one, its qualified identity (A2)."""

    account_id: int
    address: str = field(repr=False)
    is_patient: bool
    ins: str | None = field(default=None, repr=False)
    ins_oid: str | None = None
    traits: Traits = field(default_factory=Traits)


def is_structured(source_format: SourceFormat) -> bool:
    """Whether documents read as ``source_format`` go through the INS check on their own."""
    return source_format in STRUCTURED_FORMATS


def identity_facts(
    mailbox: MailboxPatient | None,
    document: Document,
    source_format: SourceFormat,
    *,
    test_mode: bool,
) -> IdentityFacts:
    """The facts of the E3 check for one document delivered to ``mailbox``."""
    mailbox_is_patient = mailbox is not None and mailbox.is_patient
    structured = is_structured(source_format)
    named = document.metadata.patient
    if mailbox is None or not structured or named is None or not named.ins:
        return IdentityFacts(mailbox_is_patient=mailbox_is_patient, structured=structured)
    named_ins = named.ins.strip().upper()
    envelope_agrees = all(
        other.ins is not None
        and other.ins.strip().upper() == named_ins
        and (other.ins_oid is None or named.ins_oid is None or other.ins_oid == named.ins_oid)
        for other in document.metadata.envelope_patients
    )
    document_traits = Traits(
        birth_name=named.birth_family_name,
        given_name=named.given_name,
        birth_date=named.birth_date,
        sex=named.sex,
        birthplace=named.birthplace_code,
    )
    return IdentityFacts(
        mailbox_is_patient=mailbox_is_patient,
        structured=True,
        has_ins=True,
        ins_key_valid=ins_key_is_valid(named.ins),
        ins_oid_allowed=ins_oid_allowed(named.ins_oid, test_mode=test_mode),
        matricule_matches=named.ins.upper() == (mailbox.ins or "").upper(),
        oid_matches=named.ins_oid == mailbox.ins_oid,
        missing_traits=named.missing_traits(),
        differing_traits=differing_traits(mailbox.traits, document_traits),
        envelope_agrees=envelope_agrees,
    )
