"""The patient's history of who accessed what (F4), paged and filtered by date, for the webmail.

The audit trail (:mod:`caducee.storage.audit`) already keeps every event about a patient
(``subject_account_id``); :func:`caducee.storage.audit.history` pages it by position for
the API. The webmail's history page asks two more things — a date range, and numbered pages
with a total — and this module answers them from the same rows, read-only. Nothing here
decides anything: it only reads the trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from caducee.storage.audit import Action, AuditEvent

PAGE_SIZE = 50

ACCESS_ACTIONS = (
    Action.RECORD_SEARCH.value,
    Action.DOCUMENT_READ.value,
    Action.DOCUMENT_CONTENT.value,
    Action.MESSAGE_READ.value,
    Action.LOGIN.value,
)
"""The accesses to the patient's space (F4: who accessed what); the rest are changes."""


@dataclass(frozen=True)
class JournalPage:
    """One page of the history, newest first."""

    events: tuple[AuditEvent, ...]
    total: int
    page: int
    pages: int


def journal(
    session: Session,
    patient_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actions: Sequence[str] = (),
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> JournalPage:
    """The events about ``patient_id`` in ``[since, until)``, newest first, one page of them."""
    conditions: list[ColumnElement[bool]] = [AuditEvent.subject_account_id == patient_id]
    if since is not None:
        conditions.append(AuditEvent.occurred_at >= since)
    if until is not None:
        conditions.append(AuditEvent.occurred_at < until)
    if actions:
        conditions.append(AuditEvent.action.in_(list(actions)))
    where = and_(*conditions)
    total = int(session.scalar(select(func.count()).select_from(AuditEvent).where(where)) or 0)
    size = max(1, min(page_size, 200))
    pages = max(1, -(-total // size))
    page = min(max(1, page), pages)
    events = tuple(
        session.scalars(
            select(AuditEvent)
            .where(where)
            .order_by(AuditEvent.position.desc())
            .limit(size)
            .offset((page - 1) * size)
        )
    )
    return JournalPage(events, total, page, pages)
