"""Where things are: the repository, the sample corpus and the commands a user runs."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "samples"
"""Real public sample files, copied into the repository (origins and licences: SOURCES.md)."""

CADUCEE = [sys.executable, "-m", "caducee.gateway.cli"]
"""``caducee`` as installed, run with the interpreter of the test run."""

IMAP_ONLY = [sys.executable, "-m", "caducee.gateway.imap"]
"""An IMAP-only process of a home (a second node's IMAP, for cross-process tests)."""
