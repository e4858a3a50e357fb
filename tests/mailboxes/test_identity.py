"""The identity service below the doors (C1, C2, F4): the failure limiter, the verified-credential
cache keyed on the sign-in fingerprint, login auditing that survives a busy database, the
argon2id parameters, delegation and its migration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pymap.parsing import Params
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError

import caducee.mailboxes.accounts.delegation
from caducee.config import Settings
from caducee.gateway.imap.commands import caducee_commands
from caducee.gateway.imap.fetch import reads_body
from caducee.mailboxes.accounts.delegation import DelegationError, delegate, delegated_principal
from caducee.mailboxes.accounts.identity import (
    FailureLimiter,
    IdentityService,
    LimiterPolicy,
    Principal,
)
from caducee.mailboxes.accounts.identity.audit import LoginAudit, LoginFact
from caducee.mailboxes.accounts.identity.service import source_key
from caducee.mailboxes.accounts.passwords import (
    MEMORY_COST_KIB,
    PARALLELISM,
    TIME_COST,
    hash_password,
    needs_rehash,
)
from caducee.mailboxes.accounts.store import (
    AccountKind,
    AccountState,
    AppPassword,
    add_app_password,
    create_account,
    find_account,
)
from caducee.storage import schema
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Base, Database
from tests.harness.identities import add_patient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the limiter -------------------------------------------------------------------------------


def _limiter(clock: Clock, **policy: float) -> FailureLimiter:
    defaults: dict[str, float] = {
        "free_failures_per_account_ip": 3,
        "free_failures_per_ip": 10,
        "base_delay_seconds": 1.0,
        "max_delay_seconds": 60.0,
    }
    defaults.update(policy)
    return FailureLimiter(LimiterPolicy(**defaults), clock=clock)  # type: ignore[arg-type]


def test_c1_delays_grow_per_account_and_address_and_never_reach_other_addresses() -> None:
    clock = Clock()
    limiter = _limiter(clock)
    for _ in range(3):  # three free failures
        assert limiter.check("A@x.fr", "10.0.0.1").allowed
        limiter.failed("a@x.fr", "10.0.0.1")
    delays = []
    for _ in range(5):
        decision = limiter.check("a@x.fr", "10.0.0.1")
        assert not decision.allowed and decision.scope == "account-ip"
        delays.append(decision.retry_after)
        clock.now += decision.retry_after
        assert limiter.check("a@x.fr", "10.0.0.1").allowed
        limiter.failed("a@x.fr", "10.0.0.1")
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert limiter.check("a@x.fr", "10.0.0.2").allowed, "another address is never delayed"
    assert limiter.check("b@x.fr", "10.0.0.1").allowed, "another account from there neither"
    limiter.succeeded("a@x.fr", "10.0.0.1")
    assert limiter.check("a@x.fr", "10.0.0.1").allowed


def test_c1_delays_are_capped_and_fade() -> None:
    clock = Clock()
    limiter = _limiter(clock, forget_seconds=3600)
    for _ in range(20):
        clock.now += 100
        limiter.failed("a@x.fr", "10.0.0.1")
    assert limiter.check("a@x.fr", "10.0.0.1").retry_after == 60.0
    clock.now += 3601
    limiter.failed("a@x.fr", "10.0.0.1")
    assert limiter.check("a@x.fr", "10.0.0.1").allowed  # counting started again


def test_c1_an_address_full_of_failures_spares_its_known_users() -> None:
    clock = Clock()
    limiter = _limiter(clock)
    limiter.succeeded("colleague@x.fr", "10.0.0.9")
    for number in range(11):
        limiter.failed(f"guess{number}@x.fr", "10.0.0.9")
    refused = limiter.check("newcomer@x.fr", "10.0.0.9")
    assert not refused.allowed and refused.scope == "ip"
    assert limiter.check("colleague@x.fr", "10.0.0.9").allowed
    assert limiter.check("newcomer@x.fr", "10.0.0.10").allowed


def test_c1_ipv6_clients_are_counted_per_64() -> None:
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::1")
    assert source_key("2001:db8:1:3::5") != source_key("2001:db8:1:2::5")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("192.0.2.1") == "192.0.2.1"


# -- the service: one check, one cache keyed on the fingerprint --------------------------------


@pytest.fixture
def service(database: Database) -> Iterator[IdentityService]:
    identity = IdentityService(Settings(), database)
    yield identity
    identity.close()


def _sign_in(service: IdentityService, user: str, password: str, ip: str = "10.1.1.1") -> object:
    return asyncio.run(service.sign_in(user, password, ip=ip, channel="imap"))


def test_c1_cache_answers_without_argon2_until_a_password_is_revoked(
    service: IdentityService, database: Database
) -> None:
    patient = add_patient(database, with_password=True)
    first = asyncio.run(service.sign_in(patient.address, patient.password, ip="a", channel="imap"))
    again = asyncio.run(service.sign_in(patient.address, patient.password, ip="a", channel="imap"))
    assert first.principal == again.principal
    assert first.principal is not None and first.principal.kind == AccountKind.PATIENT.value
    assert first.fresh and not again.fresh and service.checks == 1
    with database.transaction() as session:
        session.execute(delete(AppPassword).where(AppPassword.account_id == patient.account_id))
    refused = asyncio.run(
        service.sign_in(patient.address, patient.password, ip="a", channel="imap")
    )
    assert refused.principal is None and service.checks == 2


def test_c1_cache_never_serves_a_suspended_account_nor_after_a_new_password(
    service: IdentityService, database: Database
) -> None:
    patient = add_patient(database, with_password=True)
    assert asyncio.run(
        service.sign_in(patient.address, patient.password, ip="a", channel="imap")
    ).ok
    with database.transaction() as session:
        account = find_account(session, patient.address)
        assert account is not None
        account.state = AccountState.SUSPENDED.value
    assert not asyncio.run(
        service.sign_in(patient.address, patient.password, ip="a", channel="imap")
    ).ok
    with database.transaction() as session:
        account = find_account(session, patient.address)
        assert account is not None
        account.state = AccountState.ACTIVE.value
        add_app_password(session, account, "second client")  # changes the fingerprint
    checks = service.checks
    assert asyncio.run(
        service.sign_in(patient.address, patient.password, ip="a", channel="imap")
    ).ok
    assert service.checks == checks + 1, "checked again, not taken from the cache"


def test_f4_every_attempt_is_a_login_event_in_one_vocabulary(
    service: IdentityService, database: Database
) -> None:
    patient = add_patient(database, with_password=True)
    asyncio.run(service.sign_in(patient.address, "wrong", ip="b", channel="smtp"))
    asyncio.run(service.sign_in(patient.address, patient.password, ip="b", channel="smtp"))
    asyncio.run(
        service.sign_in(
            patient.address, patient.password, ip="b", channel="http", audit_cached=False
        )
    )
    with database.reading() as session:
        events = [
            (e.action, e.channel, e.result, e.rule, e.actor_kind)
            for e in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.subject_account_id == patient.account_id)
                .order_by(AuditEvent.position)
            )
        ]
    assert events == [
        ("login", "smtp", "failed", "C1.app-password", "unknown"),
        ("login", "smtp", "ok", "C1.app-password", "patient"),
    ], "the cached HTTP success is no new login"


def test_f4_login_audit_waits_out_a_busy_database(database: Database) -> None:
    audit = LoginAudit(database, pauses=(0.0, 0.0), sleep=lambda _: None)
    failures = iter([True, True])
    original = audit._try

    def flaky(fact: LoginFact) -> Exception | None:
        if next(failures, False):
            return OperationalError("INSERT", {}, Exception("database is locked"))
        return original(fact)

    audit._try = flaky  # type: ignore[method-assign]
    audit.record(LoginFact("http", "app-password", False, named="nobody@x.fr"))
    assert audit.written == 1 and audit.deferred == 0
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 1


def test_c1_argon2id_parameters_are_the_documented_budget() -> None:
    stored = hash_password("kq7vd-3hxfa-mmmmm-22222")
    assert stored.startswith("$argon2id$")
    assert f"m={MEMORY_COST_KIB},t={TIME_COST},p={PARALLELISM}" in stored
    assert not needs_rehash(stored)
    old = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
    assert needs_rehash(old)


# -- delegation (C2) -------------------------------------------------------------------------


def test_c2_a_delegate_may_act_as_the_mailbox_and_nobody_else(database: Database) -> None:
    with database.transaction() as session:
        secretariat = create_account(session, "secretariat@hopital.fr", AccountKind.ORGANISATION)
        doctor = create_account(session, "doctor@hopital.fr", AccountKind.PROFESSIONAL)
        other = create_account(session, "other@hopital.fr", AccountKind.PROFESSIONAL)
        delegate(session, "doctor@hopital.fr", "secretariat@hopital.fr")
        with pytest.raises(DelegationError):
            delegate(session, "doctor@hopital.fr", "doctor@hopital.fr")
        ids = secretariat.id, doctor.id, other.id
    proof = Principal(ids[0], "secretariat@hopital.fr", AccountKind.ORGANISATION.value)
    with database.reading() as session:
        acting = delegated_principal(session, proof, "Doctor@hopital.fr")
        assert acting is not None
        assert (acting.account_id, acting.address, acting.acting_account_id) == (
            ids[1],
            "doctor@hopital.fr",
            ids[0],
        )
        assert delegated_principal(session, proof, "other@hopital.fr") is None


def test_c2_delegation_migration_matches_the_model(database: Database) -> None:
    assert (
        caducee.mailboxes.accounts.delegation.MailboxDelegation.__tablename__
        == "mailbox_delegations"
    )
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if "mailbox_delegations" in repr(d)] == []


def test_c2_delegation_migration_steps_down_and_up(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0010_delegation")
        schema.downgrade(database, "0009_lifecycle")
        with database.engine.connect() as connection:
            assert "mailbox_delegations" not in connection.dialect.get_table_names(connection)
        schema.upgrade(database, "0010_delegation")
    finally:
        database.dispose()


# -- what an IMAP read is (F4) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "read"),
    [
        ("BODY[]", True),
        ("BODY.PEEK[]", True),
        ("BODY[TEXT]", True),
        ("BODY.PEEK[1]", True),
        ("RFC822", True),
        ("RFC822.TEXT", True),
        ("BINARY[1]", True),
        ("BODY.PEEK[HEADER]", False),
        ("BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]", False),
        ("BODY[1.MIME]", False),
        ("RFC822.HEADER", False),
        ("(FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE UID)", False),
        ("BODY", False),
    ],
)
def test_f4_which_fetches_read_a_body(items: str, read: bool) -> None:
    line = f"t1 FETCH 1:* ({items.strip('()')})\r\n".encode()
    command, _ = caducee_commands().parse(memoryview(line), Params())
    assert reads_body(list(command.attributes)) is read
