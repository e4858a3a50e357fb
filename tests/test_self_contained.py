"""The suite runs from a fresh clone: nothing it reads lies outside the repository.

A person who clones the project has only the repository: the samples the tests read are
copied into ``tests/samples`` with their sources and licences, and no test climbs out of
the repository to find a file.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness.paths import REPO, SAMPLES

OUTSIDE = re.compile(
    r"""/work/|REPO\.parent|\.parent\s*/\s*["']\.\.["']|\.parent\.parent\.parent"""
)
"""A machine's absolute path, or a path built from the folder above the repository."""


def _sources() -> list[Path]:
    return [
        path
        for folder in ("tests", "bench")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != Path(__file__)
    ]


def test_no_test_or_benchmark_names_a_path_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_every_sample_file_is_listed_in_sources() -> None:
    listed = (SAMPLES / "SOURCES.md").read_text()
    files = [p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "SOURCES.md"]
    assert files, "the sample corpus is in the repository"
    missing = [str(p.relative_to(SAMPLES)) for p in files if p.name not in listed]
    assert missing == []
