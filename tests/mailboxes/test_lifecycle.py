"""Patient spaces from enrolment to deletion, in process (A2, I1, I2, I3, F3).

The service (:mod:`caducee.mailboxes.accounts.lifecycle`) with the gateway's jobs, delivery of the
activation code through the file SMS sender, and the export zip, on the engine under test.
"""

from __future__ import annotations

import base64
import io
import json
import mailbox
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from caducee.config import Settings
from caducee.config.settings import (
    DatabaseSettings,
    GatewaySettings,
    LifecycleSettings,
    NotificationsSettings,
)
from caducee.gateway.export import export_space
from caducee.gateway.lifecycle import (
    deliver_activation_code,
    purge_if_due,
    run_due,
    schedule_opening,
    set_contact,
)
from caducee.gateway.notify.sms import FileSmsSender
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.mailboxes.access.rights import representatives_of
from caducee.mailboxes.accounts.lifecycle import (
    OPEN_SPACE_JOB,
    AccountCredentials,
    ActivationCode,
    Actor,
    LifecycleError,
    LifecyclePolicy,
    PatientSpace,
    QualifiedIdentity,
    SpaceStatus,
    TotpEnrolment,
    check_credentials,
    close_space,
    complete_activation,
    create_space,
    new_activation_code,
    oppose,
    opposition_proof,
    reopen_space,
    show_space,
    start_activation,
    totp_now,
)
from caducee.mailboxes.accounts.store import (
    Account,
    AccountState,
    add_app_password,
    check_app_password,
    find_account,
    may_sign_in,
)
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole
from caducee.storage.audit import AuditEvent, record_event, verify_chain
from caducee.storage.blobs import BlobRow
from caducee.storage.db import Database
from caducee.storage.jobs import JobRow
from caducee.storage.keyring import Keyring
from tests.harness.identities import valid_ins

NIR_OID = "1.2.250.1.213.1.4.8"
PASSWORD = "Correct-Horse-9"
BIRTH = date(1980, 5, 17)


@pytest.fixture
def gateway(database: Database, database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    Keyring.create(tmp_path / "keys" / "kek")
    settings = Settings(
        home=tmp_path,
        gateway=GatewaySettings(test_mode=False, hostname="mx.caducee.test"),
        database=DatabaseSettings(url=database_url),
        notifications=NotificationsSettings(sms_sender="file"),
        lifecycle=LifecycleSettings(open_after_days=42, archive_years=10),
    )
    built = build_gateway(settings)
    yield built
    built.close()


def _identity(ins: str | None = None, birth: date = BIRTH) -> QualifiedIdentity:
    return QualifiedIdentity(
        ins=ins or valid_ins(), oid=NIR_OID, birth_name="Dupont", given_name="Marie",
        birth_date=birth, sex="F", birthplace="75056",
    )  # fmt: skip


def _policy(gateway: Gateway) -> LifecyclePolicy:
    return LifecyclePolicy.from_settings(gateway.settings)


def _create(gateway: Gateway, identity: QualifiedIdentity | None = None) -> tuple[str, str]:
    """A new space with a phone; the address and the code the SMS carried."""
    with gateway.database.transaction() as session:
        created = create_space(session, identity or _identity(), _policy(gateway), Actor.operator())
        set_contact(session, created.account_id, email=None, phone="+33612345678")
        schedule_opening(gateway, session, created.account_id, created.opens_at)
    channels = deliver_activation_code(
        gateway, created.account_id, created.code, created.code_expires_at
    )
    assert channels == ["sms"]
    sent = FileSmsSender(gateway.settings.home / "notifications" / "sms.jsonl").sent()
    assert created.code in sent[-1]["text"]
    return created.address, created.code


def _activate(gateway: Gateway, address: str, code: str) -> int:
    with gateway.database.transaction() as session:
        enrolment = start_activation(session, gateway.blobs, address, code, BIRTH, _policy(gateway))
    assert isinstance(enrolment, TotpEnrolment)
    assert enrolment.uri.startswith("otpauth://totp/")
    secret = base64.b32decode(enrolment.secret_base32 + "=" * (-len(enrolment.secret_base32) % 8))
    with gateway.database.transaction() as session:
        result = complete_activation(
            session, gateway.blobs, address, code, BIRTH, PASSWORD, totp_now(secret),
            _policy(gateway),
        )  # fmt: skip
    assert isinstance(result, int), result
    with gateway.database.transaction() as session:
        assert check_credentials(session, gateway.blobs, address, PASSWORD, totp_now(secret))
    return result


def _deliver(gateway: Gateway, address: str, account_id: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "dr@peer.test"
    message["To"] = address
    message["Subject"] = subject
    message.set_content("From the lab\nbody\n")
    with gateway.database.transaction() as session:
        MailDelivery(gateway.blobs, gateway.queue).deliver(
            session,
            Envelope(
                content=message.as_bytes(), direction="inbound", envelope_from="dr@peer.test",
                header_from="dr@peer.test", message_id=None, thread_ids=(), reply_to=None,
                ends_exchange=False, sender_is_professional=True, has_attachments=False,
                recipients=(Recipient(address, account_id, RecipientRole.PATIENT),),
            ),
        )  # fmt: skip


def _state(gateway: Gateway, address: str) -> tuple[str, str]:
    with gateway.database.reading() as session:
        view = show_space(session, address)
    return view.status, view.account_state


def test_a2_i1_create_activate_close_reopen(gateway: Gateway) -> None:
    address, code = _create(gateway)
    assert _state(gateway, address) == (SpaceStatus.CREATED, AccountState.CLOSED)
    assert not may_sign_in(AccountState.CLOSED)
    account_id = _activate(gateway, address, code)
    assert _state(gateway, address) == (SpaceStatus.ACTIVE, AccountState.ACTIVE)
    # secrets are stored hashed or encrypted only
    with gateway.database.reading() as session:
        stored = session.get(AccountCredentials, account_id)
        assert stored is not None and stored.password_hash.startswith("$argon2id$")
        assert stored.totp_blob_id is not None
        assert session.get(BlobRow, stored.totp_blob_id) is not None
        codes = list(session.scalars(select(ActivationCode.code_hash)))
        assert codes and all(h.startswith("$argon2id$") and code not in h for h in codes)
    # the code served once
    with gateway.database.transaction() as session:
        again = start_activation(session, gateway.blobs, address, code, BIRTH, _policy(gateway))
    assert isinstance(again, LifecycleError) and again.code == "not-awaiting-activation"

    _deliver(gateway, address, account_id, "first")
    with gateway.database.transaction() as session:
        account = find_account(session, address)
        assert account is not None
        app_password = add_app_password(session, account, "mail client")
    with gateway.database.transaction() as session:
        assert check_app_password(session, address, app_password) is not None

    # a patient closes with their own password
    with gateway.database.transaction() as session, pytest.raises(LifecycleError):
        close_space(session, address, Actor.patient(account_id), _policy(gateway), password="wrong")
    with gateway.database.transaction() as session:
        space = close_space(
            session, address, Actor.patient(account_id), _policy(gateway), password=PASSWORD
        )
        assert space.purge_after is not None
        assert space.purge_after - space.closed_at > timedelta(days=3650)  # type: ignore[operator]
    assert _state(gateway, address) == (SpaceStatus.CLOSED, AccountState.CLOSED)
    with gateway.database.transaction() as session:
        assert check_app_password(session, address, app_password) is None
        assert purge_if_due(gateway, session, account_id) is None  # archived, not deleted

    with gateway.database.transaction() as session:
        reopen_space(session, address, Actor.operator())
    assert _state(gateway, address) == (SpaceStatus.ACTIVE, AccountState.ACTIVE)
    with gateway.database.transaction() as session:
        assert check_app_password(session, address, app_password) is not None
    buffer = io.BytesIO()
    summary = export_space(
        gateway.database, gateway.blobs, account_id, buffer, base_url="https://x.test/fhir/"
    )
    assert summary.messages == 1  # the old mail is back
    with gateway.database.reading() as session:
        actions = [
            row.action
            for row in session.scalars(
                select(AuditEvent).where(AuditEvent.subject_account_id == account_id)
            )
        ]
        assert verify_chain(session).intact
    for action in ("space.create", "space.activate", "space.close", "space.reopen"):
        assert action in actions


def test_a2_identity_rules(gateway: Gateway) -> None:
    policy = _policy(gateway)
    ins = valid_ins()
    bad_key = ins[:13] + f"{(int(ins[13:]) + 1) % 97:02d}"
    for identity, code in (
        (_identity(bad_key), "invalid-ins"),
        (QualifiedIdentity(ins, "1.2.250.1.213.1.4.10", "A", "B", BIRTH, "F", "75056"),
         "invalid-oid"),
        (QualifiedIdentity(ins, NIR_OID, "A", "B", BIRTH, "X", "75056"), "invalid-sex"),
        (QualifiedIdentity(ins, NIR_OID, "A", "B", BIRTH, "F", "7"), "invalid-birthplace"),
    ):  # fmt: skip
        with gateway.database.transaction() as session, pytest.raises(LifecycleError) as caught:
            create_space(session, identity, policy, Actor.operator())
        assert caught.value.code == code
    with gateway.database.transaction() as session:
        create_space(session, _identity(ins), policy, Actor.operator())
    with gateway.database.transaction() as session, pytest.raises(LifecycleError) as caught:
        create_space(session, _identity(ins), policy, Actor.operator())
    assert caught.value.code == "ins-exists"


def test_i1_wrong_code_or_birth_date_counts_and_voids(gateway: Gateway) -> None:
    address, code = _create(gateway)
    policy = _policy(gateway)
    for _ in range(policy.max_attempts):
        with gateway.database.transaction() as session:
            refused = start_activation(
                session, gateway.blobs, address, code, date(1999, 1, 1), policy
            )
        assert isinstance(refused, LifecycleError) and refused.code == "code-refused"
    with gateway.database.transaction() as session:  # the right answer comes too late
        refused = start_activation(session, gateway.blobs, address, code, BIRTH, policy)
    assert isinstance(refused, LifecycleError)
    with gateway.database.transaction() as session:
        _id, fresh, _expires = new_activation_code(session, address, policy, Actor.operator())
    with gateway.database.transaction() as session:
        assert isinstance(
            start_activation(session, gateway.blobs, address, fresh, BIRTH, policy),
            TotpEnrolment,
        )


def test_i1_weak_password_and_wrong_totp_refused(gateway: Gateway) -> None:
    address, code = _create(gateway)
    policy = _policy(gateway)
    with gateway.database.transaction() as session:
        assert isinstance(
            start_activation(session, gateway.blobs, address, code, BIRTH, policy), TotpEnrolment
        )
    with gateway.database.transaction() as session:
        weak = complete_activation(
            session, gateway.blobs, address, code, BIRTH, "short", "000000", policy
        )
        assert isinstance(weak, LifecycleError) and weak.code == "weak-password"
        wrong = complete_activation(
            session, gateway.blobs, address, code, BIRTH, PASSWORD, "abc", policy
        )
        assert isinstance(wrong, LifecycleError) and wrong.code == "totp-refused"
    assert _state(gateway, address)[0] == SpaceStatus.CREATED


def test_i1_opposition_never_opens_and_has_a_proof(gateway: Gateway) -> None:
    address, code = _create(gateway)
    with gateway.database.transaction() as session:
        reference = oppose(
            session, address, Actor("patient", "-", "http"), _policy(gateway),
            code=code, birth_date=BIRTH,
        )  # fmt: skip
    assert isinstance(reference, str) and reference.startswith("OPP-")
    with gateway.database.transaction() as session:
        space = session.scalar(select(PatientSpace).where(PatientSpace.status == "opposed"))
        assert space is not None
        space.opens_at = None
        proof = opposition_proof(session, address)
    assert proof.startswith(b"%PDF-1.4") and proof.rstrip().endswith(b"%%EOF")
    assert reference.encode() in proof
    assert run_due(gateway) == (0, 0)
    assert _state(gateway, address) == (SpaceStatus.OPPOSED, AccountState.CLOSED)


def test_i1_opens_automatically_when_the_delay_ran_out(gateway: Gateway) -> None:
    address, _code = _create(gateway)
    with gateway.database.transaction() as session:
        account = find_account(session, address)
        assert account is not None
        space = session.get(PatientSpace, account.id)
        assert space is not None and space.opens_at is not None
        space.opens_at = space.opens_at - timedelta(days=43)  # the delay ran out
        jobs = session.scalar(
            select(func.count()).select_from(JobRow).where(JobRow.kind == OPEN_SPACE_JOB)
        )
        assert jobs == 1
        session.execute(
            JobRow.__table__.update()  # type: ignore[attr-defined]
            .where(JobRow.kind == OPEN_SPACE_JOB)
            .values(next_attempt_at=space.opens_at)
        )
    pool = gateway.worker_pool()
    assert pool.run_once("test-worker") == 1
    assert _state(gateway, address) == (SpaceStatus.ACTIVE, AccountState.ACTIVE)
    with gateway.database.reading() as session:
        assert show_space(session, address).opened_by == "automatic"


def test_f3_minor_needs_a_representative(gateway: Gateway) -> None:
    policy = _policy(gateway)
    child = _identity(birth=date.today() - timedelta(days=365 * 5))
    with gateway.database.transaction() as session, pytest.raises(LifecycleError) as caught:
        create_space(session, child, policy, Actor.operator())
    assert caught.value.code == "F3.representative-required"
    parent_address, _ = _create(gateway)
    with gateway.database.transaction() as session:
        parent = find_account(session, parent_address)
        assert parent is not None
        created = create_space(
            session, child, policy, Actor.operator(), representatives=(parent.id,)
        )
        from caducee.mailboxes.access.rights import Actor as RightsActor
        from caducee.mailboxes.access.rights import add_representative

        add_representative(session, created.account_id, parent.id, RightsActor.operator())
    with gateway.database.reading() as session:
        assert [
            r.representative_account_id for r in representatives_of(session, created.account_id)
        ] == [parent.id]


def test_i2_deletion_request_purges_everything(gateway: Gateway) -> None:
    address, code = _create(gateway)
    account_id = _activate(gateway, address, code)
    _deliver(gateway, address, account_id, "to be deleted")
    with gateway.database.transaction() as session:
        space = close_space(
            session, address, Actor.operator(), _policy(gateway), deletion_requested=True
        )
        assert space.purge_after is not None and space.deletion_requested_at is not None
        assert space.purge_after - space.deletion_requested_at == timedelta(days=90)
        space.purge_after = space.deletion_requested_at - timedelta(seconds=1)
    assert run_due(gateway) == (0, 1)
    with gateway.database.reading() as session:
        assert session.get(Account, account_id) is None
        assert session.get(AccountCredentials, account_id) is None
    with gateway.database.transaction() as session:  # the INS may be enrolled again
        assert find_account(session, address) is None


def test_i3_export_is_a_zip_with_mbox_manifest_and_bundle(gateway: Gateway) -> None:
    address, code = _create(gateway)
    account_id = _activate(gateway, address, code)
    for number in range(3):
        _deliver(gateway, address, account_id, f"message {number}")
    seen: list[tuple[int, int]] = []
    buffer = io.BytesIO()
    summary = export_space(
        gateway.database, gateway.blobs, account_id, buffer,
        base_url="https://x.test/fhir/", progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    assert summary.messages == 3 and seen[-1] == (3, 3)
    with zipfile.ZipFile(buffer) as archive:
        names = set(archive.namelist())
        assert {"manifest.json", "fhir/bundle.json", "mail/INBOX.mbox"} <= names
        manifest = json.loads(archive.read("manifest.json"))
        bundle = json.loads(archive.read("fhir/bundle.json"))
        mbox_path = Path(str(gateway.settings.home)) / "INBOX.mbox"
        mbox_path.write_bytes(archive.read("mail/INBOX.mbox"))
    assert manifest["address"] == address
    assert {f["name"]: f["messages"] for f in manifest["folders"]}["INBOX"] == 3
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    subjects = [message["Subject"] for message in mailbox.mbox(str(mbox_path))]
    assert subjects == ["message 0", "message 1", "message 2"]


def test_i4_dormant_professional_mailbox_flagged_told_then_disabled(gateway: Gateway) -> None:
    from caducee.mailboxes.accounts.dormant import AccountIdle, IdlePolicy, sweep_idle
    from caducee.mailboxes.accounts.store import AccountKind, create_account
    from caducee.mailboxes.listing import list_messages

    policy = IdlePolicy(flag_after=timedelta(days=365), disable_after=timedelta(days=30))
    delivery = MailDelivery(gateway.blobs, gateway.queue)
    with gateway.database.transaction() as session:
        account = create_account(session, "dr.idle@hopital.test", AccountKind.PROFESSIONAL)
        account_id = account.id
        busy = create_account(session, "dr.busy@hopital.test", AccountKind.PROFESSIONAL)
        busy_id = busy.id
    start = account.created_at
    with gateway.database.transaction() as session:  # a year minus a day: nothing yet
        report = sweep_idle(session, delivery, policy, now=start + timedelta(days=364))
    assert report.flagged == []
    later = start + timedelta(days=366)
    with gateway.database.transaction() as session:
        report = sweep_idle(session, delivery, policy, now=later)
    assert sorted(report.flagged) == sorted([account_id, busy_id])
    with gateway.database.transaction() as session:  # the busy one signs in after the notice
        record_event(
            session, actor_kind="professional", actor_id=f"account:{busy_id}", action="login",
            object_type="account", object_id=str(busy_id), result="ok",
            subject_account_id=busy_id, channel="imap", at=later + timedelta(days=1),
        )  # fmt: skip
    assert account_id in report.flagged
    with gateway.database.reading() as session:
        notices = list_messages(session, gateway.blobs, "dr.idle@hopital.test")
        assert [m.subject for m in notices] == ["Boîte aux lettres inutilisée / Unused mailbox"]
        assert session.get(AccountIdle, account_id) is not None
    with gateway.database.transaction() as session:  # told once, not disabled before 30 days
        report = sweep_idle(session, delivery, policy, now=later + timedelta(days=29))
    assert report.flagged == [] and report.disabled == [] and report.cleared == [busy_id]
    with gateway.database.transaction() as session:
        report = sweep_idle(session, delivery, policy, now=later + timedelta(days=30))
    assert report.disabled == [account_id] and report.flagged == []
    with gateway.database.reading() as session:
        row = session.get(Account, account_id)
        assert row is not None and row.state == AccountState.SUSPENDED
        actions = set(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.subject_account_id == account_id)
            )
        )
    assert {"account.idle-flag", "account.idle-disable"} <= actions


def test_i5_traces_purged_and_the_audit_chain_stays_verifiable(gateway: Gateway) -> None:
    from sqlalchemy import delete, update

    from caducee.storage.audit import AuditCheckpoint
    from caducee.storage.traces import purge_audit, purge_traces, verify_checkpoints

    now = datetime.now(UTC)
    with gateway.database.transaction() as session:
        for days in (400, 300, 200, 10, 1):
            record_event(
                session, actor_kind="operator", actor_id="cli", action="test.event",
                object_type="test", object_id=str(days), result="ok",
                at=now - timedelta(days=days),
            )  # fmt: skip
        job_id = gateway.queue.enqueue(session, "test-kind", {})
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(state="done", finished_at=now - timedelta(days=200))
        )
    with gateway.database.transaction() as session:
        assert purge_traces(session, now - timedelta(days=183)).jobs == 1
        assert purge_audit(session, gateway.keyring, now - timedelta(days=183)) == 3
    with gateway.database.reading() as session:
        report = verify_chain(session)
        assert report.intact, report.problem
        assert report.events == 3  # two kept, plus the purge's own event
        assert verify_checkpoints(session, gateway.keyring) is None
    with gateway.database.transaction() as session:  # forging a checkpoint is seen
        session.execute(update(AuditCheckpoint).values(signature="0" * 64))
    with gateway.database.reading() as session:
        assert verify_checkpoints(session, gateway.keyring) is not None
    with gateway.database.transaction() as session:  # deleting past the checkpoint is seen
        first = session.scalar(select(func.min(AuditEvent.position)))
        session.execute(delete(AuditEvent).where(AuditEvent.position == first))
    with gateway.database.reading() as session:
        assert not verify_chain(session).intact


def test_k2_lifecycle_migration_matches_the_models(database: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import caducee.mailboxes.accounts.dormant
    import caducee.storage.admin_tokens
    import caducee.storage.traces  # noqa: F401
    from caducee.storage.db import Base

    tables = {
        "patient_spaces", "activation_codes", "account_credentials", "admin_tokens",
        "account_idle", "audit_checkpoints",
    }  # fmt: skip
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if any(f"'{name}'" in repr(d) for name in tables)] == []
