"""C1/K2: failed sign-ins are counted once for every process and node of a gateway.

Two limiters on one database stand for two nodes (or two processes of one node): the
free failures are shared, not multiplied, a block decided on one holds on the other
within a poll, a success on either forgives the pair on both, and nothing identifying
(address or IP) is stored in clear.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from caducee.mailboxes.accounts.identity import FailureLimiter, LimiterPolicy
from caducee.mailboxes.accounts.identity.shared_failures import SharedFailures, SignInFailure
from caducee.storage.db import Database
from tests.harness.waiting import wait_until

ACCOUNT = "dr.martin@hopital-demo.mssante.fr"
ADDRESS = "203.0.113.7"
POLICY = LimiterPolicy(
    free_failures_per_account_ip=3,
    free_failures_per_ip=50,
    base_delay_seconds=30.0,
    max_delay_seconds=600.0,
)


@pytest.fixture
def nodes(database: Database) -> Iterator[tuple[FailureLimiter, FailureLimiter]]:
    stores = [
        SharedFailures(database, forget_seconds=POLICY.forget_seconds, poll_seconds=0.1)
        for _ in range(2)
    ]
    yield FailureLimiter(POLICY, shared=stores[0]), FailureLimiter(POLICY, shared=stores[1])
    for store in stores:
        store.close()


def _shared_failures(database: Database) -> dict[str, int]:
    with database.reading() as session:
        return {row.key: row.failures for row in session.scalars(select(SignInFailure))}


def test_c1_free_failures_are_shared_not_multiplied_by_nodes(
    nodes: tuple[FailureLimiter, FailureLimiter], database: Database
) -> None:
    first, second = nodes
    first.failed(ACCOUNT, ADDRESS)
    second.failed(ACCOUNT, ADDRESS)
    wait_until(
        lambda: 2 in _shared_failures(database).values(),
        message=lambda: f"shared counts: {_shared_failures(database)}",
    )
    assert first.check(ACCOUNT, ADDRESS).allowed and second.check(ACCOUNT, ADDRESS).allowed
    first.failed(ACCOUNT, ADDRESS)
    first.failed(ACCOUNT, ADDRESS)  # the fourth failure in all: past the three free ones
    decision = wait_until(
        lambda: None if second.check(ACCOUNT, ADDRESS).allowed else second.check(ACCOUNT, ADDRESS),
        message="the block decided on the first node does not hold on the second",
    )
    assert decision.scope == "account-ip"
    assert decision.retry_after_seconds > 1
    assert second.check(ACCOUNT, "198.51.100.20").allowed  # the real user elsewhere is not locked


def test_c1_a_success_on_one_node_forgives_the_pair_on_the_shared_count(
    nodes: tuple[FailureLimiter, FailureLimiter], database: Database
) -> None:
    first, second = nodes
    for _ in range(2):
        first.failed(ACCOUNT, ADDRESS)
    wait_until(lambda: 2 in _shared_failures(database).values())

    def pair_rows() -> list[str]:
        return [key for key in _shared_failures(database) if key.startswith("p:")]

    assert pair_rows()
    second.succeeded(ACCOUNT, ADDRESS)
    wait_until(lambda: not pair_rows(), message="the success did not clear the shared pair count")


def test_c1_shared_counts_hold_digests_not_addresses(
    nodes: tuple[FailureLimiter, FailureLimiter], database: Database
) -> None:
    nodes[0].failed(ACCOUNT, ADDRESS)

    def both_counts() -> list[str]:
        # the pair's count and the address's are two writes: wait for both, and no third
        keys = list(_shared_failures(database))
        return keys if len(keys) == 2 else []

    keys = wait_until(both_counts, message=lambda: f"shared keys: {_shared_failures(database)}")
    for key in keys:
        assert ACCOUNT not in key and ADDRESS not in key
        assert key[:2] in ("p:", "i:") and len(key) == 66
