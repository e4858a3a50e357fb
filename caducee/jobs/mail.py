"""The mail side of a job, read and written through ``mailboxes`` and handed on as plain values.

``records`` names no mail table: what filing needs of a message (its bytes and envelope) and
of a mailbox (the patient's qualified identity) is read here, from the models ``mailboxes``
declares, and passed to :mod:`caducee.records` as :class:`~caducee.records.filing.StoredMail`
and :class:`~caducee.records.identity.MailboxPatient`; what filing found about the message
(the D4 header codes) is written back here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState, Patient
from caducee.mailboxes.models import StoredMessage
from caducee.policies.identity import Traits
from caducee.records.filing import StoredMail
from caducee.records.identity import MailboxPatient
from caducee.storage.blobs import BlobStore


def stored_mail(session: Session, blobs: BlobStore, message_id: int) -> StoredMail | None:
    """The stored message ``message_id`` with its decrypted bytes, or None when it is gone."""
    row = session.get(StoredMessage, message_id)
    if row is None:
        return None
    return StoredMail(
        message_id=message_id,
        raw=blobs.read(session, row.blob_id),
        received_at=row.received_at,
        envelope_from=row.envelope_from,
        header_from=row.header_from,
        message_id_header=row.message_id_header,
    )


def mailbox_patient(session: Session, account_id: int) -> MailboxPatient | None:
    """The mailbox of ``account_id`` with its qualified identity, or None when it is gone.

    ``is_patient`` holds for an open patient account with an INS (A2): only such a mailbox
    has a record, and the E3 check compares documents against it.
    """
    row = session.execute(
        select(Account, Patient)
        .outerjoin(Patient, Patient.account_id == Account.id)
        .where(Account.id == account_id)
    ).one_or_none()
    if row is None:
        return None
    account, patient = row
    if patient is None:
        return MailboxPatient(account_id=account_id, address=account.address, is_patient=False)
    return MailboxPatient(
        account_id=account_id,
        address=account.address,
        is_patient=(
            account.kind == AccountKind.PATIENT.value
            and account.state != AccountState.CLOSED.value
            and bool(patient.ins)
            and bool(patient.ins_oid)
        ),
        ins=patient.ins,
        ins_oid=patient.ins_oid,
        traits=Traits(
            birth_name=patient.birth_name,
            given_name=patient.given_name,
            birth_date=patient.birth_date,
            sex=patient.sex,
            birthplace=patient.birthplace,
        ),
    )


record_owner = mailbox_patient
"""The patient whose record ``account_id`` is (their INS is each document's ``subject``)."""


def record_mss_problems(session: Session, message_id: int, codes: Sequence[str]) -> None:
    """Merge D4 codes into ``messages.mss_problems`` (a JSON list; other jobs may add)."""
    if not codes:
        return
    row = session.get(StoredMessage, message_id)
    if row is None:
        return
    merged: list[str] = []
    if row.mss_problems:
        try:
            loaded = json.loads(row.mss_problems)
        except ValueError:
            loaded = []
        if isinstance(loaded, list):
            merged = [str(code) for code in loaded]
    row.mss_problems = json.dumps(sorted(set(merged) | set(codes)))
    session.flush()
