"""Directory search indexes and import staging (issue 20): no schema change.

Issue 20 asked for trigram indexes (``pg_trgm``) on PostgreSQL and FTS5 on
SQLite *if they keep or improve* today's search latency at a million rows.
They were not added:

- Search matches the *start* of folded words (``lefev`` finds ``Lefèvre``;
  :mod:`caducee.directory.normalise` folds index and query alike), which the
  B-tree range scans of ``0002_directory`` answer from their first index
  entries, in key order, in a few milliseconds at 1,000,000 rows
  (``bench/directory``). A trigram or full-text index serves *substring* and
  fuzzy matching, which nobody asked for, and cannot return rows in key order,
  so a short prefix ("ma") would fetch and sort every match instead of
  reading 21 index entries.
- Every extra index is built on each first load and updated on each daily
  import: on a million folded names a GIN trigram index took 3.3 s to build
  against 1.0 s for the B-tree (PostgreSQL 15, 2026-12-06), so two of them
  (name and organisation keys) would add more than three raw ``COPY`` of the
  file to a first import whose budget is five. FTS5 needs a second table
  kept in step with every write.

The import's staging tables are temporary tables created by the importer on
its own connection (:mod:`caducee.directory.importer`), so they need no
migration either.

Revision ID: 0013_directory_search
Revises: 0012_certificates
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0013_directory_search"
down_revision = "0012_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change (see the module docstring)."""


def downgrade() -> None:
    """Nothing to undo."""
