"""A patient's server-side drafts: messages in the IMAP ``Drafts`` folder (issue 17, H4b).

The webmail keeps a draft where a mail client keeps one — the account's ``Drafts`` folder
(special use ``\\Drafts``), flagged ``\\Draft`` and ``\\Seen`` — through the IMAP store
(:meth:`~caducee.mailboxes.imap_store.ImapStore.append`, ``STORE +FLAGS (\\Deleted)`` and
``EXPUNGE``), so an IMAP client sees, resumes or deletes the same drafts, and the store's
encryption, structure cache and modseq bookkeeping apply unchanged. No table of its own.

A draft is a complete message (the recipient, subject, text, attached files and, for a
reply, ``In-Reply-To``/``References``); saving again replaces it (append the new one, then
expunge the old one). Every lookup names the account: another account's entry id finds
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.imap_store import DELETED, SEEN, ImapStore, NewMessage
from caducee.mailboxes.models import Folder, MailboxEntry

DRAFTS = "Drafts"
DRAFT = "\\Draft"
MAX_DRAFTS = 200
"""Bounded work per page: the newest drafts are listed."""
_COLUMNS = (MailboxEntry.id, MailboxEntry.folder_id, MailboxEntry.uid, MailboxEntry.internal_date)


@dataclass(frozen=True)
class DraftEntry:
    """One draft of the account: its entry (the URL id), UID and date."""

    entry_id: int
    folder_id: int
    uid: int
    saved_at: datetime


def list_drafts(store: ImapStore, principal: Principal) -> list[DraftEntry]:
    """The account's drafts, newest first."""
    with store.database.reading() as session:
        rows = session.execute(
            select(
                MailboxEntry.id,
                MailboxEntry.folder_id,
                MailboxEntry.uid,
                MailboxEntry.internal_date,
            )
            .join(Folder, Folder.id == MailboxEntry.folder_id)
            .where(Folder.account_id == principal.account_id, Folder.name == DRAFTS)
            .order_by(MailboxEntry.uid.desc())
            .limit(MAX_DRAFTS)
        ).all()
    return [DraftEntry(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows]


def find_draft(store: ImapStore, principal: Principal, entry_id: int) -> DraftEntry | None:
    """The draft ``entry_id`` when it is one of the account's, else None."""
    with store.database.reading() as session:
        row = session.execute(
            select(
                MailboxEntry.id,
                MailboxEntry.folder_id,
                MailboxEntry.uid,
                MailboxEntry.internal_date,
            )
            .join(Folder, Folder.id == MailboxEntry.folder_id)
            .where(
                MailboxEntry.id == entry_id,
                Folder.account_id == principal.account_id,
                Folder.name == DRAFTS,
            )
        ).first()
    return DraftEntry(int(row[0]), int(row[1]), int(row[2]), row[3]) if row else None


def draft_content(store: ImapStore, principal: Principal, draft: DraftEntry) -> bytes | None:
    """The draft's bytes (decrypted by the store, which checks the account again)."""
    return store.contents(principal, draft.folder_id, [draft.uid]).get(draft.uid)


def delete_draft(store: ImapStore, principal: Principal, draft: DraftEntry) -> None:
    """``\\Deleted`` then ``EXPUNGE`` of that one UID, as an IMAP client deletes a draft."""
    store.store_flags(principal, draft.folder_id, [draft.uid], frozenset({DELETED}), "add")
    store.expunge(principal, draft.folder_id, [draft.uid])


def save_draft(
    store: ImapStore, principal: Principal, content: bytes, replacing: DraftEntry | None
) -> None:
    """Keep ``content`` in Drafts (``\\Draft \\Seen``); the draft it replaces goes."""
    store.append(principal, DRAFTS, [NewMessage(content, frozenset({DRAFT, SEEN}), None)])
    if replacing is not None:
        delete_draft(store, principal, replacing)
