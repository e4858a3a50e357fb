"""Where ``caducee init`` puts things inside a home folder.

One place that names every generated file, so ``init``, ``doctor`` and the
demo share the layout instead of repeating paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caducee.config.settings import CONFIG_FILE_NAME


@dataclass(frozen=True)
class HomeLayout:
    """Paths of the generated files of a home."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE_NAME

    @property
    def ca_cert(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "tls" / "ca.key"

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    @property
    def credentials(self) -> Path:
        return self.demo / "credentials.json"

    @property
    def peer(self) -> Path:
        return self.demo / "peer"
