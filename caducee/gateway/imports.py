"""Trust-space imports and the removal-share rule, for the CLI and the admin API (A5, K3).

One way to do each thing: ``caducee trust import`` and ``POST /admin/trust/import`` both
call :func:`import_trust`; ``caducee directory import`` and ``POST /admin/directory/import``
both call :func:`caducee.directory.importer.import_file`. Both kinds of import ask before
removing more than ``[lifecycle] import_removal_share`` of the existing rows
(:func:`removal_exceeds_share`): the CLI asks on its terminal (``--yes`` answers), the API
answers ``409`` unless the call says ``confirm=true``. A dry run reads and compares the
file, says what would change, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caducee.directory.trust_models import TrustDomain
from caducee.directory.whitelist import SOURCE as WHITELIST_SOURCE
from caducee.directory.whitelist import WhitelistReport, import_whitelist
from caducee.storage.db import Database

RemovalCheck = Callable[[int, int], bool]
"""``(would_remove, existing) -> proceed?``, asked before an import removes rows."""


def removal_exceeds_share(would_remove: int, existing: int, share: float) -> bool:
    """True when removing ``would_remove`` of ``existing`` rows needs the operator's yes."""
    return existing > 0 and would_remove / existing > share


def confirmed_or_within(share: float, confirmed: bool) -> RemovalCheck:
    """The removal check of a caller that cannot ask (the API): its ``confirm`` flag."""
    return lambda removed, existing: (
        confirmed or not removal_exceeds_share(removed, existing, share)
    )


@dataclass(frozen=True)
class TrustImport:
    """What a whitelist import read, would change or changed."""

    report: WhitelistReport
    existing: int
    """Whitelist rows in the trust space before the import."""
    dry_run: bool
    applied: bool
    """True when the changes were committed."""

    @property
    def cancelled(self) -> bool:
        """The import was usable but the removals were not confirmed: nothing changed."""
        return not self.dry_run and not self.applied and self.report.imported

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (counts and refusal reasons; the file's own words, bounded)."""
        report = self.report
        return {
            "dry_run": self.dry_run,
            "applied": self.applied,
            "existing": self.existing,
            "generated_at": report.generated_at.isoformat() if report.generated_at else None,
            "entries_read": report.entries_read,
            "pairs": report.pairs,
            "added": report.added,
            "updated": report.updated,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "held_by_other_source": report.held_by_other_source,
            "rejected": report.rejected_count,
            "rejections": [
                {"entry": r.position, "name": r.name[:200], "reason": r.reason[:200]}
                for r in report.rejected[:100]
            ],
            "truncated": report.truncated,
            "removals_skipped": report.removals_skipped,
            "problem": report.problem,
            "summary": report.summary_lines()[:20],
        }


def import_trust(
    database: Database, path: Path, *, dry_run: bool, confirm: RemovalCheck
) -> TrustImport:
    """Replace the whitelist rows of the trust space with ``path`` (or only say how).

    The import runs in one transaction of ours: committed when it is not a dry run, gave
    usable entries, and removes nothing or ``confirm(removed, existing)`` says yes; rolled
    back otherwise.
    """
    session = Session(database.engine)
    try:
        existing = int(
            session.scalar(
                select(func.count())
                .select_from(TrustDomain)
                .where(TrustDomain.source == WHITELIST_SOURCE)
            )
            or 0
        )
        report = import_whitelist(session, path)
        keep = (
            not dry_run
            and report.imported
            and (report.removed == 0 or confirm(report.removed, existing))
        )
        if keep:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
    return TrustImport(report, existing, dry_run, keep)
