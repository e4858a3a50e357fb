"""Fixtures of the directory tests: the real PS_LibreAcces sample and a directory to fill."""

from __future__ import annotations

from pathlib import Path

import pytest

from .samples import SAMPLE_NAME


@pytest.fixture(scope="session")
def ps_sample(samples_dir: Path) -> Path:
    """The real PS_LibreAcces_Personne_activite excerpt (52 columns, 22 rows, trailing '|')."""
    return samples_dir / "cyrilvincent-skema" / SAMPLE_NAME


@pytest.fixture(scope="session")
def ps_lines(ps_sample: Path) -> list[str]:
    """The sample's lines, header first, without line ends."""
    return ps_sample.read_text("utf-8").splitlines()
