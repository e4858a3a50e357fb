"""The directory's tables: mailboxes and practitioners' activities.

A professional reaches the trust space through a *mailbox*: the national
``Extraction_Correspondance_MSSante`` lists one per line, keyed by its address,
and the SMTP rules ask about mailboxes (is this sender listed? is this ORG
mailbox a pharmacy? is it hosted here?). ``PS_LibreAcces`` lists *persons and
their activities*, with no mailbox at all; they go to a second table keyed by
national id + activity, so that a person has zero or more mailboxes (joined on
``national_id``) and search covers both.

Both tables carry the same descriptive columns, a ``row_hash`` of what the
source file said (equal hash: nothing to update on re-import), the folded
search keys ``name_key``/``org_key`` (binary collation, so a prefix search is an
index range scan on both engines) and the ``red_list`` flag: red-listed rows
are never returned by search. The schema itself is created by the Alembic
migration ``0002_directory``; these classes must stay in step with it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def binary_string(length: int) -> String:
    """A string column compared byte-wise on both engines (``C`` collation on PostgreSQL).

    SQLite's default ``BINARY`` collation already compares bytes; PostgreSQL's
    default follows the database locale, under which ``key >= 'abc' AND key <
    'abd'`` is not a prefix match. Search keys, addresses and postal codes use
    this type so that prefix searches are exact and use their index.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class _DirectoryColumns:
    """Columns shared by mailboxes and activities (what a person or organisation is)."""

    national_id: Mapped[str | None] = mapped_column(String(32))
    id_type: Mapped[str | None] = mapped_column(String(8))
    pp_identifier: Mapped[str | None] = mapped_column(String(16))
    civility: Mapped[str | None] = mapped_column(String(50))
    family_name: Mapped[str | None] = mapped_column(Text)
    given_name: Mapped[str | None] = mapped_column(Text)
    profession_code: Mapped[str | None] = mapped_column(String(16))
    profession_label: Mapped[str | None] = mapped_column(Text)
    category_code: Mapped[str | None] = mapped_column(String(16))
    category_label: Mapped[str | None] = mapped_column(Text)
    speciality_code: Mapped[str | None] = mapped_column(String(16))
    speciality_label: Mapped[str | None] = mapped_column(Text)
    structure_id: Mapped[str | None] = mapped_column(String(32))
    organisation_name: Mapped[str | None] = mapped_column(Text)
    trade_name: Mapped[str | None] = mapped_column(Text)
    address_lines: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(binary_string(16))
    city: Mapped[str | None] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(String(3))
    country: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))
    red_list: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    row_hash: Mapped[str] = mapped_column(String(32))
    name_key: Mapped[str] = mapped_column(binary_string(200))
    org_key: Mapped[str | None] = mapped_column(binary_string(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class DirectoryEntry(_DirectoryColumns, Base):
    """A mailbox of the trust space: a person's (PER, CAB) or an organisation's (ORG, APP).

    ``address`` and ``bal_type`` never change once the row exists (A3).
    ``hosted`` says the mailbox lives on this gateway (A4); ``pharmacy`` marks
    ORG mailboxes a patient may write to first (C4).
    """

    __tablename__ = "directory_entries"
    __table_args__ = (
        Index("ix_directory_entries_domain", "domain"),
        Index("ix_directory_entries_national_id", "national_id"),
        Index("ix_directory_entries_name_key", "name_key"),
        Index("ix_directory_entries_org_key", "org_key"),
        Index("ix_directory_entries_postal_code", "postal_code"),
        Index("ix_directory_entries_profession_name", "profession_code", "name_key"),
        Index("ix_directory_entries_department_name", "department", "name_key"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(binary_string(254), unique=True)
    domain: Mapped[str] = mapped_column(String(253))
    bal_type: Mapped[str] = mapped_column(String(3))
    service: Mapped[str | None] = mapped_column(Text)
    dematerialisation: Mapped[str | None] = mapped_column(String(16))
    hosted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    pharmacy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    def __repr__(self) -> str:
        return f"DirectoryEntry({self.address!r}, {self.bal_type}, {self.national_id!r})"


class Practitioner(_DirectoryColumns, Base):
    """One activity of a registered professional (``PS_LibreAcces``), with or without mailbox.

    ``activity_key`` is the national id plus a digest of what tells one activity
    of that person from another (profession, savoir-faire, mode, structure).
    """

    __tablename__ = "directory_practitioners"
    __table_args__ = (
        Index("ix_directory_practitioners_national_id", "national_id"),
        Index("ix_directory_practitioners_name_key", "name_key"),
        Index("ix_directory_practitioners_org_key", "org_key"),
        Index("ix_directory_practitioners_postal_code", "postal_code"),
        Index("ix_directory_practitioners_profession_name", "profession_code", "name_key"),
        Index("ix_directory_practitioners_department_name", "department", "name_key"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    activity_key: Mapped[str] = mapped_column(binary_string(64), unique=True)
    practice_mode: Mapped[str | None] = mapped_column(Text)
    siret: Mapped[str | None] = mapped_column(String(14))
    finess: Mapped[str | None] = mapped_column(String(9))
    sector_label: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Practitioner({self.activity_key!r}, {self.family_name!r})"
