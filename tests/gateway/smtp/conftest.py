"""Fixtures of the SMTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.served import ServedGateway

from .in_process import InProcessOperators


@pytest.fixture
def operators(gateway: ServedGateway) -> Iterator[InProcessOperators]:
    served = InProcessOperators(gateway)
    served.start()
    try:
        yield served
    finally:
        served.close()
