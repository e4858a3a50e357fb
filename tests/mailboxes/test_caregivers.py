"""Caregivers (aidants, F3, issue 17): invitation, answer, revocation, limits, expiry, adults
only, the access table's verdict, and an audit event and a notification for every change.

Real database (SQLite, or PostgreSQL with ``CADUCEE_TEST_DATABASE_URL``), real patient
accounts with sealed names; the clock is passed in (``now``, ``today``) where expiry and age
are judged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text, update

from caducee.mailboxes.access.caregivers import (
    ALREADY,
    CAREGIVERS_LIMIT,
    HELPED_LIMIT,
    HELPED_NOT_ADULT,
    INVITATION_DAYS,
    MAX_CAREGIVERS,
    MAX_HELPED,
    NOT_FOUND,
    SEARCH_LIMIT,
    SEARCH_LIMIT_REACHED,
    CaregivingDelegation,
    Lookup,
    answer,
    caregiver_profiles,
    caregiver_verdict,
    caregivers_of,
    helped_by,
    invite,
    purge_lapsed,
    revoke,
)
from caducee.mailboxes.access.rights import Actor, RightsError
from caducee.mailboxes.accounts.store import Account, AccountState, Patient
from caducee.mailboxes.notifications.centre import CentreNotification
from caducee.storage import schema
from caducee.storage.audit import AuditEvent, verify_chain
from caducee.storage.db import Base, Database
from tests.harness.identities import Identity, add_patient, valid_ins
from tests.harness.waiting import wait_until

TODAY = date(2026, 12, 7)
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ADULT = date(1960, 4, 2)


class People:
    """Patient accounts made on demand: ``people.new(...)`` gives (account id, INS)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.count = 0

    def new(
        self,
        *,
        birth_date: date = ADULT,
        birth_name: str | None = None,
        given_name: str = "JEAN PAUL",
        state: str = AccountState.ACTIVE.value,
    ) -> tuple[int, str]:
        self.count += 1
        ins = valid_ins()
        made = add_patient(
            self.database,
            Identity(
                ins=ins,
                birth_name=birth_name or f"AIDANT-{self.count}",
                given_name=given_name,
                birth_date=birth_date,
            ),
            state=state,
        )
        return made.account_id, ins


@pytest.fixture
def people(database: Database) -> Iterator[People]:
    yield People(database)


def _invite(database: Database, helped: int, lookup: Lookup) -> RightsError | int:
    """Invite in one transaction; a refusal is committed (its audit event stays) and returned."""
    with database.transaction() as session:
        try:
            made = invite(session, helped, lookup, Actor.patient(helped, "test"), TODAY, now=NOW)
        except RightsError as error:
            return error
        return made.id


def _rule(result: RightsError | int) -> str:
    assert isinstance(result, RightsError), result
    return result.rule


def _answer(
    database: Database, caregiver: int, delegation: int, accept: bool, now: datetime = NOW
) -> RightsError | None:
    with database.transaction() as session:
        try:
            answer(
                session,
                caregiver,
                delegation,
                accept,
                Actor.patient(caregiver, "test"),
                TODAY,
                now=now,
            )
        except RightsError as error:
            return error
    return None


def _events(database: Database, helped: int) -> list[tuple[str, str, str, str | None]]:
    with database.reading() as session:
        return [
            (event.actor_id, event.action, event.result, event.rule)
            for event in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.subject_account_id == helped)
                .order_by(AuditEvent.position)
            )
        ]


def _centre(database: Database, account: int) -> list[str]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(CentreNotification.kind)
                .where(CentreNotification.account_id == account)
                .order_by(CentreNotification.id)
            )
        )


def _allowed(database: Database, helped: int, caregiver: int) -> str:
    with database.reading() as session:
        verdict = caregiver_verdict(session, helped, caregiver, TODAY)
    return ("allow " if verdict.allowed else "deny ") + verdict.rule


def test_f3_caregiver_invited_by_ins_accepts_acts_then_is_revoked(
    database: Database, people: People
) -> None:
    helped, _ = people.new(birth_name="AIDE")
    caregiver, ins = people.new()
    assert _allowed(database, helped, caregiver) == "deny F3.caregiver-no-delegation"

    delegation = _invite(database, helped, Lookup(ins=ins))
    assert isinstance(delegation, int)
    with database.reading() as session:
        mine = caregivers_of(session, helped, now=NOW)
        theirs = helped_by(session, caregiver, now=NOW)
    assert [(d.id, d.state, d.other_account_id) for d in mine] == [
        (delegation, "pending", caregiver)
    ]
    assert mine[0].expires_at == NOW + timedelta(days=INVITATION_DAYS)
    assert mine[0].other_name == "JEAN AIDANT-2"  # first given name and birth name
    assert [(d.id, d.other_account_id, d.other_name) for d in theirs] == [
        (delegation, helped, "JEAN AIDE")
    ]
    # pending is not enough
    assert _allowed(database, helped, caregiver) == "deny F3.caregiver-no-delegation"
    assert _centre(database, caregiver) == ["caregiver-invitation"]

    assert _answer(database, caregiver, delegation, accept=True) is None
    assert _allowed(database, helped, caregiver) == "allow F3.caregiver"
    with database.reading() as session:
        profiles = caregiver_profiles(session, caregiver, TODAY)
    assert [(p.account_id, p.name, p.allowed) for p in profiles] == [(helped, "JEAN AIDE", True)]
    assert _centre(database, helped) == ["caregiver-accepted"]
    with database.reading() as session:
        assert [d.active for d in caregivers_of(session, helped, now=NOW)] == [True]
    # a second answer: no such invitation any more
    assert _rule(_answer(database, caregiver, delegation, accept=False) or 0) == NOT_FOUND

    # the helped person's space closes: the caregiver's access ends with it (I2)
    with database.transaction() as session:
        session.execute(
            update(Account).where(Account.id == helped).values(state=AccountState.CLOSED.value)
        )
    assert _allowed(database, helped, caregiver) == "deny I2.record-closed"
    with database.transaction() as session:
        session.execute(
            update(Account).where(Account.id == helped).values(state=AccountState.ACTIVE.value)
        )

    # the caregiver revokes; the helped person is told
    with database.transaction() as session:
        revoke(session, caregiver, delegation, Actor.patient(caregiver, "test"))
    assert _allowed(database, helped, caregiver) == "deny F3.caregiver-no-delegation"
    assert _centre(database, helped) == ["caregiver-accepted", "caregiver-revoked"]
    with database.reading() as session:
        assert caregivers_of(session, helped, now=NOW) == []
        assert helped_by(session, caregiver, now=NOW) == []

    events = _events(database, helped)
    assert [(actor, action, result) for actor, action, result, _ in events] == [
        (f"account:{helped}", "caregiver.invite", "ok"),
        (f"account:{caregiver}", "caregiver.accept", "ok"),
        (f"account:{caregiver}", "caregiver.revoke", "ok"),
    ]
    with database.reading() as session:
        assert verify_chain(session).intact


def test_f3_caregiver_found_by_name_and_birth_date_only_on_an_exact_single_match(
    database: Database, people: People
) -> None:
    helped, _ = people.new(birth_name="AIDE")
    caregiver, _ = people.new(birth_name="Martin-Durand", given_name="Claire Anne")
    born = ADULT
    for near_miss in (
        Lookup(family_name="MARTIN", first_given_name="Claire", birth_date=born),
        Lookup(family_name="Martin-Durand", first_given_name="Anne", birth_date=born),
        Lookup(family_name="Martin-Durand", first_given_name="Claire", birth_date=date(1960, 4, 3)),
        Lookup(family_name="Martin-Durand", first_given_name="", birth_date=born),
        Lookup(ins="12345"),
    ):
        assert _rule(_invite(database, helped, near_miss)) == NOT_FOUND, near_miss
    found = _invite(
        database,
        helped,
        Lookup(family_name=" martin-durand ", first_given_name="CLAIRE", birth_date=born),
    )
    assert isinstance(found, int)
    # two people with the same traits: neither is chosen
    people.new(birth_name="JUMEAU", given_name="LEO")
    people.new(birth_name="JUMEAU", given_name="LEO")
    twins = Lookup(family_name="JUMEAU", first_given_name="LEO", birth_date=born)
    assert _rule(_invite(database, helped, twins)) == NOT_FOUND
    with database.reading() as session:
        assert [d.other_account_id for d in caregivers_of(session, helped, now=NOW)] == [caregiver]


def test_f3_caregiving_is_between_adults_and_answers_like_not_found(
    database: Database, people: People
) -> None:
    adult, adult_ins = people.new()
    minor, minor_ins = people.new(birth_date=date(2010, 1, 1))
    _closed, closed_ins = people.new(state=AccountState.CLOSED.value)
    _eighteen_tomorrow, tomorrow_ins = people.new(birth_date=date(2008, 12, 8))
    # a minor cannot invite (legal representation is their way, F3)
    assert _rule(_invite(database, minor, Lookup(ins=adult_ins))) == HELPED_NOT_ADULT
    # nobody may name a minor, a closed space, or themselves: "no matching profile"
    for ins in (minor_ins, closed_ins, adult_ins, tomorrow_ins):
        assert _rule(_invite(database, adult, Lookup(ins=ins))) == NOT_FOUND
    # and the access table refuses a caregiver for a minor, whatever the rows say
    with database.transaction() as session:
        session.add(
            CaregivingDelegation(
                helped_account_id=minor,
                caregiver_account_id=adult,
                state="active",
                created_at=NOW,
                expires_at=NOW,
            )
        )
    assert _allowed(database, minor, adult) == "deny F3.caregiver-not-adult"


def test_f3_three_caregivers_per_person_five_people_per_caregiver(
    database: Database, people: People
) -> None:
    helped, _ = people.new()
    invited = []
    for _ in range(MAX_CAREGIVERS):
        _caregiver, ins = people.new()
        made = _invite(database, helped, Lookup(ins=ins))
        assert isinstance(made, int)
        invited.append(made)
    _fourth, fourth_ins = people.new()
    assert _rule(_invite(database, helped, Lookup(ins=fourth_ins))) == CAREGIVERS_LIMIT
    # the same person twice; a withdrawn invitation frees its place
    _c, other_ins = people.new()
    with database.reading() as session:
        first = caregivers_of(session, helped, now=NOW)[0]
    assert (
        _rule(_invite(database, helped, Lookup(ins=_ins_of(database, first.other_account_id))))
        == ALREADY
    )
    with database.transaction() as session:
        revoke(session, helped, invited[-1], Actor.patient(helped, "test"))
    assert isinstance(_invite(database, helped, Lookup(ins=other_ins)), int)

    # a caregiver who helps five people: a sixth invitation and a sixth acceptance refused
    caregiver, caregiver_ins = people.new()
    pending = []
    for number in range(MAX_HELPED + 1):
        someone, _ = people.new()
        made = _invite(database, someone, Lookup(ins=caregiver_ins))
        assert isinstance(made, int), number  # invitations do not count for the caregiver
        pending.append(made)
    for made in pending[:MAX_HELPED]:
        assert _answer(database, caregiver, made, accept=True) is None
    assert _rule(_answer(database, caregiver, pending[-1], accept=True) or 0) == HELPED_LIMIT
    late, _ = people.new()
    assert _rule(_invite(database, late, Lookup(ins=caregiver_ins))) == HELPED_LIMIT
    denied = [event for event in _events(database, late) if event[2] == "denied"]
    assert [(action, rule) for _a, action, _r, rule in denied] == [
        ("caregiver.invite", HELPED_LIMIT)
    ]


def _ins_of(database: Database, account_id: int) -> str:
    with database.reading() as session:
        value = session.scalar(select(Patient.ins).where(Patient.account_id == account_id))
    assert value is not None
    return value


def test_f3_an_invitation_lapses_after_30_days_and_a_refusal_is_told(
    database: Database, people: People
) -> None:
    helped, _ = people.new()
    caregiver, ins = people.new()
    made = _invite(database, helped, Lookup(ins=ins))
    assert isinstance(made, int)
    lapsed = NOW + timedelta(days=INVITATION_DAYS)
    with database.reading() as session:
        assert len(caregivers_of(session, helped, now=lapsed - timedelta(seconds=1))) == 1
        assert caregivers_of(session, helped, now=lapsed) == []
        assert helped_by(session, caregiver, now=lapsed) == []
    assert _rule(_answer(database, caregiver, made, accept=True, now=lapsed) or 0) == NOT_FOUND
    # the lapsed invitation no longer blocks a new one
    with database.transaction() as session:
        again = invite(
            session, helped, Lookup(ins=ins), Actor.patient(helped, "t"), TODAY, now=lapsed
        )
    assert again.expires_at == lapsed + timedelta(days=INVITATION_DAYS)
    # the caregiver refuses: the helped person is told; nothing stays
    assert _answer(database, caregiver, again.id, accept=False, now=lapsed) is None
    assert _centre(database, helped) == ["caregiver-refused"]
    assert _allowed(database, helped, caregiver) == "deny F3.caregiver-no-delegation"
    with database.transaction() as session:
        session.add(
            CaregivingDelegation(
                helped_account_id=helped,
                caregiver_account_id=caregiver,
                state="pending",
                created_at=NOW,
                expires_at=NOW,
            )
        )
    with database.transaction() as session:
        assert purge_lapsed(session, now=lapsed) == 1
    assert [action for _a, action, _r, _rule in _events(database, helped)] == [
        "caregiver.invite",
        "caregiver.invite",
        "caregiver.refuse",
    ]


def test_f3_only_the_two_sides_may_answer_or_revoke(database: Database, people: People) -> None:
    helped, _ = people.new()
    caregiver, ins = people.new()
    stranger, _ = people.new()
    made = _invite(database, helped, Lookup(ins=ins))
    assert isinstance(made, int)
    # the helped person cannot accept their own invitation, a stranger neither
    for who in (helped, stranger):
        assert _rule(_answer(database, who, made, accept=True) or 0) == NOT_FOUND
    with database.transaction() as session, pytest.raises(RightsError) as refused:
        revoke(session, stranger, made, Actor.patient(stranger, "test"))
    assert refused.value.rule == NOT_FOUND
    assert _centre(database, helped) == [] and _centre(database, stranger) == []
    # the helped person withdraws the invitation: the caregiver is told
    with database.transaction() as session:
        revoke(session, helped, made, Actor.patient(helped, "test"))
    assert _centre(database, caregiver) == ["caregiver-invitation", "caregiver-revoked"]


def test_f3_searches_are_limited_per_day_found_or_not(database: Database, people: People) -> None:
    helped, _ = people.new()
    _caregiver, ins = people.new()
    # one invitation found (then withdrawn: showing a name and withdrawing is no free oracle)
    made = _invite(database, helped, Lookup(ins=ins))
    assert isinstance(made, int)
    with database.transaction() as session:
        revoke(session, helped, made, Actor.patient(helped, "test"))
    for number in range(SEARCH_LIMIT - 1):
        wrong = Lookup(family_name=f"NOBODY{number}", first_given_name="X", birth_date=ADULT)
        assert _rule(_invite(database, helped, wrong)) == NOT_FOUND
    # even a right one is refused now, and the refusal names the limit
    assert _rule(_invite(database, helped, Lookup(ins=ins))) == SEARCH_LIMIT_REACHED
    with database.transaction() as session:
        again = invite(
            session,
            helped,
            Lookup(ins=ins),
            Actor.patient(helped, "test"),
            TODAY,
            now=NOW + timedelta(hours=25),
        )
    assert again.state == "pending"


def test_k2_caregivers_migration_matches_the_model_and_steps_down(
    database: Database, fresh_database_url: str
) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if "caregiving_delegations" in repr(d)] == []
    fresh = Database(fresh_database_url)
    try:
        schema.upgrade(fresh, "0025_caregivers")
        assert "caregiving_delegations" in inspect(fresh.engine).get_table_names()
        schema.downgrade(fresh, "-1")
        assert "caregiving_delegations" not in inspect(fresh.engine).get_table_names()
        schema.upgrade(fresh)
    finally:
        fresh.dispose()


def _waiting_on_the_audit_head(database: Database) -> bool:
    with database.reading() as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%audit_head%' AND datname = current_database()"
            )
        )
    return bool(waiting)


def test_f3_an_acceptance_waits_for_one_in_flight_and_the_limit_holds(
    database: Database, people: People
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: there is no race to show")
    caregiver, caregiver_ins = people.new()
    invitations = []
    for _ in range(MAX_HELPED + 1):
        someone, _ = people.new()
        made = _invite(database, someone, Lookup(ins=caregiver_ins))
        assert isinstance(made, int)
        invitations.append(made)
    for made in invitations[: MAX_HELPED - 1]:
        assert _answer(database, caregiver, made, accept=True) is None
    fifth, sixth = invitations[MAX_HELPED - 1 :]
    outcomes: list[str] = []

    def accept_the_sixth() -> None:
        refused = _answer(database, caregiver, sixth, accept=True)
        outcomes.append("ok" if refused is None else refused.rule)

    worker = threading.Thread(target=accept_the_sixth)
    with database.transaction() as session:
        answer(session, caregiver, fifth, True, Actor.patient(caregiver, "test"), TODAY, now=NOW)
        worker.start()  # while the fifth acceptance is not committed
        wait_until(
            lambda: not worker.is_alive() or _waiting_on_the_audit_head(database),
            timeout=30,
            message="the sixth acceptance neither waited nor ended",
        )
    worker.join(timeout=30)
    assert outcomes == [HELPED_LIMIT]
    with database.reading() as session:
        assert sum(item.active for item in helped_by(session, caregiver, now=NOW)) == MAX_HELPED
