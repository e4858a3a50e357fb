"""Seeded identities: valid INS numbers and patient spaces made directly in a database.

There is no command that creates a patient space yet (the lifecycle issue adds one),
so tests write the rows the way enrolment will: an account of kind patient and its
qualified identity (A2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date
from typing import NamedTuple

from caducee.mailboxes.accounts.store import AccountKind, Patient, add_app_password, create_account
from caducee.storage.db import Database

PATIENT_DOMAIN = "patient.mssante.fr"
TEST_OID = "1.2.250.1.213.1.4.10"
"""The INS OID of test identities (A2): the ANS examples use it."""

DEMO_INS = "279035121518989"
"""The INS of the ANS examples and of the demo patient."""


def valid_ins(nir13: str | None = None) -> str:
    """A 15-character INS with the right key; a random one (a woman born in Paris) if no NIR."""
    if nir13 is None:
        year, month = random.randint(30, 99), random.randint(1, 12)
        nir13 = f"2{year:02d}{month:02d}75{random.randint(0, 999_999):06d}"
    return nir13 + f"{97 - int(nir13) % 97:02d}"


OTHER_INS = valid_ins("1800175123456")
"""A second valid INS, for 'a report about another patient' (E3)."""


@dataclass(frozen=True)
class Identity:
    """A qualified identity as the INS service returns it (A2)."""

    ins: str = DEMO_INS
    oid: str = TEST_OID
    birth_name: str = "PAT-TROIS"
    given_name: str = "DOMINIQUE"
    birth_date: date = date(1979, 3, 28)
    sex: str = "F"
    birthplace: str | None = "51215"


class NewPatient(NamedTuple):
    """What :func:`add_patient` made."""

    account_id: int
    address: str
    password: str


def add_patient(
    database: Database,
    identity: Identity | None = None,
    *,
    state: str = "active",
    with_patient_row: bool = True,
    with_password: bool = False,
    **traits: object,
) -> NewPatient:
    """A patient space (account + qualified identity); an app password only when asked for.

    ``traits`` replace fields of ``identity`` (the demo identity by default), for example
    ``ins=OTHER_INS`` or ``birthplace=None``. Hashing an app password (argon2id) costs
    about a third of a second, hence opt-in.
    """
    identity = replace(identity or Identity(), **traits)  # type: ignore[arg-type]
    address = f"{identity.ins}@{PATIENT_DOMAIN}"
    with database.transaction() as session:
        account = create_account(session, address, AccountKind.PATIENT)
        account.state = state
        if with_patient_row:
            session.add(
                Patient(
                    account_id=account.id,
                    ins=identity.ins,
                    ins_oid=identity.oid,
                    birth_name=identity.birth_name,
                    given_name=identity.given_name,
                    birth_date=identity.birth_date,
                    sex=identity.sex,
                    birthplace=identity.birthplace,
                )
            )
        password = add_app_password(session, account, "tests") if with_password else ""
        return NewPatient(account.id, address, password)
