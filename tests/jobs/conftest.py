"""Fixtures of the jobs layer's tests."""

from __future__ import annotations

import pytest

from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, RetryPolicy


@pytest.fixture
def queue(database: Database) -> JobQueue:
    return JobQueue(
        database,
        lease_seconds=60,
        max_attempts=3,
        retry=RetryPolicy(base_seconds=10, max_seconds=100, jitter=0),
    )
