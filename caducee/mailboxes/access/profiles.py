"""The profiles a patient account may act for in the webmail: their own, and each minor they
legally represent (F3, issue 17).

A parent switches to a child's profile to read the child's documents. Whether they may is
the access table's decision (:func:`caducee.policies.access.access_verdict`, rules ``F3-*``:
a registered delegation, the child's birth date known and the child not yet 18), asked with
the same facts the FHIR API gathers for a representative — so the profile disappears on the
18th birthday without anyone touching it, exactly when the API stops answering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.access.rights import (
    birth_date_of,
    record_is_open,
    representation,
    represented_by,
)
from caducee.mailboxes.accounts.store import Patient
from caducee.policies.access import AccessFacts, AccessVerdict, Actor, access_verdict


def representative_verdict(
    session: Session, minor_id: int, representative_id: int, today: date
) -> AccessVerdict:
    """May ``representative_id`` act for ``minor_id`` on ``today`` (the date in France, the
    caller's clock)? The access table decides."""
    return access_verdict(
        AccessFacts(
            actor=Actor.REPRESENTATIVE,
            record_open=record_is_open(session, minor_id),
            delegated=representation(session, minor_id, representative_id) is not None,
            subject_birth_date=birth_date_of(session, minor_id),
            today=today,
        )
    )


@dataclass(frozen=True)
class Profile:
    """A minor the patient represents, with the access table's verdict for today."""

    account_id: int
    name: str
    allowed: bool
    rule: str


def represented_profiles(session: Session, representative_id: int, today: date) -> list[Profile]:
    """Every minor registered for this account, allowed today or not (and why)."""
    found: list[Profile] = []
    for item in represented_by(session, representative_id):
        names = session.execute(
            select(Patient.given_name, Patient.birth_name).where(
                Patient.account_id == item.minor_account_id
            )
        ).first()
        name = " ".join(part for part in (names or ()) if part) or item.minor_address
        verdict = representative_verdict(session, item.minor_account_id, representative_id, today)
        found.append(Profile(item.minor_account_id, name, verdict.allowed, verdict.rule))
    return found
