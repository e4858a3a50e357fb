"""Fixtures of the trust-space tests: the real, published whitelist sample."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def whitelist_path(samples_dir: Path) -> Path:
    """The real, published whitelist (truncated: its root element is never closed)."""
    return samples_dir / "ansforge-MSS-liste-blanche" / "listeblanchemssante.xml"


@pytest.fixture(scope="session")
def whitelist_bytes(whitelist_path: Path) -> bytes:
    return whitelist_path.read_bytes()
