"""The periodic ``lifecycle-sweep`` also forgets lapsed caregiver invitations (F3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from caducee.config import load_settings
from caducee.gateway.lifecycle import run_invitation_purge
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.access.caregivers import INVITATION_DAYS, CaregivingDelegation
from tests.harness.identities import Identity, add_patient, valid_ins


def test_f3_the_sweep_deletes_lapsed_invitations_and_keeps_the_others(home_dir: Path) -> None:
    gateway = build_gateway(load_settings(home_dir))
    try:
        ids = [
            add_patient(
                gateway.database,
                Identity(ins=valid_ins(), birth_name=f"SWEEP-{n}", given_name="ANNE"),
            ).account_id
            for n in range(3)
        ]
        now = datetime.now(UTC)
        sent_long_ago = now - timedelta(days=INVITATION_DAYS + 1)
        with gateway.database.transaction() as session:
            session.add_all(
                [
                    CaregivingDelegation(  # never answered, lapsed yesterday
                        helped_account_id=ids[0],
                        caregiver_account_id=ids[1],
                        state="pending",
                        created_at=sent_long_ago,
                        expires_at=sent_long_ago + timedelta(days=INVITATION_DAYS),
                    ),
                    CaregivingDelegation(  # still open
                        helped_account_id=ids[0],
                        caregiver_account_id=ids[2],
                        state="pending",
                        created_at=now,
                        expires_at=now + timedelta(days=INVITATION_DAYS),
                    ),
                    CaregivingDelegation(  # accepted long ago: a delegation, kept
                        helped_account_id=ids[1],
                        caregiver_account_id=ids[2],
                        state="active",
                        created_at=sent_long_ago,
                        expires_at=sent_long_ago + timedelta(days=INVITATION_DAYS),
                    ),
                ]
            )
        assert run_invitation_purge(gateway) == 1
        with gateway.database.reading() as session:
            left = session.execute(
                select(CaregivingDelegation.caregiver_account_id, CaregivingDelegation.state)
                .where(CaregivingDelegation.helped_account_id.in_(ids))
                .order_by(CaregivingDelegation.id)
            ).all()
            total = session.scalar(select(func.count()).select_from(CaregivingDelegation))
        assert [tuple(row) for row in left] == [(ids[2], "pending"), (ids[2], "active")]
        assert total == 2
        assert run_invitation_purge(gateway) == 0
    finally:
        gateway.close()
