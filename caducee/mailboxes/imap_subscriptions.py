"""IMAP subscriptions of an account: names, not folders (RFC 3501 §6.3.6, RFC 5258).

A subscription outlives its folder: "the server MUST NOT unilaterally remove an
existing mailbox name from the subscription list even if a mailbox by that name
no longer exists" (RFC 3501 §6.3.6), and LIST-EXTENDED reports such a name as
``\\Subscribed \\NonExistent`` (RFC 5258 §3.4). A column of ``folders`` cannot
hold that, so explicit subscriptions are rows of ``imap_subscriptions``
(migration ``0026_imap_subscriptions``), one per (account, name).

``folders.subscribed`` keeps one meaning: *subscribed since its creation* (the
standard folders, and the superior levels RENAME creates, are made that way by
the code that creates them). The subscription list is therefore the rows plus the
folders whose flag is set; UNSUBSCRIBE removes the row and clears the flag, so
one rule (this module) answers "is this name subscribed". Bounded: at most
:data:`MAX_SUBSCRIPTIONS` rows per account, names as long as folder names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from caducee.mailboxes.imap_store import (
    DELIMITER,
    MAX_FOLDER_NAME,
    InvalidFolderName,
    Principal,
    canonical,
    check_folder_name,
)
from caducee.mailboxes.models import Folder
from caducee.storage.db import Base, Database
from caducee.storage.upsert import upsert_insert

MAX_SUBSCRIPTIONS = 1000
"""Explicit subscriptions one account may hold (a client cannot grow the table at will)."""

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class ImapSubscription(Base):
    """One subscribed mailbox name of one account (the folder may not exist)."""

    __tablename__ = "imap_subscriptions"
    __table_args__ = (
        UniqueConstraint("account_id", "name", name="uq_imap_subscriptions_account_name"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(MAX_FOLDER_NAME))


_SUBSCRIPTIONS = cast(Table, ImapSubscription.__table__)
_FOLDERS = cast(Table, Folder.__table__)


class TooManySubscriptions(InvalidFolderName):
    """The account holds :data:`MAX_SUBSCRIPTIONS` subscriptions already."""


class Subscriptions:
    """Subscribe, unsubscribe, list and follow renames; every query scoped to the account."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def names(self, principal: Principal) -> frozenset[str]:
        """Every subscribed name of the account: explicit rows and folders subscribed at birth."""
        account = principal.account_id
        with self.database.reading() as session:
            rows: Sequence[Any] = session.scalars(
                select(_SUBSCRIPTIONS.c.name).where(_SUBSCRIPTIONS.c.account_id == account)
            ).all()
            flagged: Sequence[Any] = session.scalars(
                select(_FOLDERS.c.name).where(
                    _FOLDERS.c.account_id == account, _FOLDERS.c.subscribed.is_(True)
                )
            ).all()
        return frozenset(str(name) for name in [*rows, *flagged])

    def subscribe(self, principal: Principal, name: str) -> None:
        """Add ``name`` (a folder need not exist: RFC 3501 §6.3.6 leaves it to the server)."""
        name = canonical(check_folder_name(name))
        account = principal.account_id
        with self.database.transaction() as session:
            held = int(
                session.scalar(select(func.count()).where(_SUBSCRIPTIONS.c.account_id == account))
                or 0
            )
            if held >= MAX_SUBSCRIPTIONS:
                present = session.scalar(
                    select(_SUBSCRIPTIONS.c.id).where(
                        _SUBSCRIPTIONS.c.account_id == account, _SUBSCRIPTIONS.c.name == name
                    )
                )
                if present is None:
                    raise TooManySubscriptions(name)
                return
            session.execute(
                upsert_insert(session, _SUBSCRIPTIONS)
                .values(account_id=account, name=name)
                .on_conflict_do_nothing(index_elements=["account_id", "name"])
            )

    def unsubscribe(self, principal: Principal, name: str) -> None:
        """Remove ``name``, whether it was subscribed explicitly or at its folder's creation."""
        name = canonical(check_folder_name(name))
        account = principal.account_id
        with self.database.transaction() as session:
            session.execute(
                delete(_SUBSCRIPTIONS).where(
                    _SUBSCRIPTIONS.c.account_id == account, _SUBSCRIPTIONS.c.name == name
                )
            )
            session.execute(
                update(_FOLDERS)
                .where(_FOLDERS.c.account_id == account, _FOLDERS.c.name == name)
                .values(subscribed=False)
            )

    def rename(self, principal: Principal, before: str, after: str) -> None:
        """After RENAME: the folder's subscriptions and its inferiors' follow it (as before
        subscriptions were rows, when the folder flag moved with the folder)."""
        before, after = canonical(before), canonical(after)
        account = principal.account_id
        with self.database.transaction() as session:
            rows = session.execute(
                select(_SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.name).where(
                    _SUBSCRIPTIONS.c.account_id == account
                )
            ).all()
            held = {str(row.name) for row in rows}
            for row in rows:
                old = str(row.name)
                if old != before and not old.startswith(before + DELIMITER):
                    continue
                new = after + old[len(before) :]
                if new in held or len(new) > MAX_FOLDER_NAME:
                    session.execute(delete(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id == row.id))
                else:
                    session.execute(
                        update(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id == row.id).values(name=new)
                    )
                    held.add(new)
