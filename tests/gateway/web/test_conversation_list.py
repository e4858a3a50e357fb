"""The webmail's conversation list, grouped and paged by the database, with its markers (H2, D1).

The mailbox is filled the real ways: the demo professional writes over submission (each
message starts a conversation, D1; one answers another by ``In-Reply-To`` and joins it; one
carries a file, held until filing released it, E3), the patient's own mail client appends
lone messages to INBOX and a reply draft to Drafts over IMAP. The list is then read through
the webmail's own service with a page of two lines, so that the paging across conversations
and lone messages shows with a handful of messages; the browser test checks the same
markers and the draft's resumption on the pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from playwright.sync_api import expect
from sqlalchemy import inspect, select

import caducee.gateway.web.mailbox as webmail_mailbox
from caducee.gateway.accounts_admin import new_app_password
from caducee.gateway.web.mailbox import ListedConversation, Mailbox
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.lifecycle import Actor
from caducee.mailboxes.accounts.store import Account as AccountRow
from caducee.mailboxes.imap_store import ImapStore
from caducee.storage import schema
from caducee.storage.db import Base, Database
from tests.harness.browser import WebPatient, activated_patient, sign_in
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
INDEXES = {
    "conversation_messages": "ix_conversation_messages_message",
    "held_deliveries": "ix_held_deliveries_copy",
}


def test_k2_the_0023_indexes_match_the_models_and_step_down_and_up(
    database: Database, fresh_database_url: str
) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if any(name in repr(d) for name in INDEXES.values())] == []

    def indexes(fresh: Database) -> set[str]:
        inspector = inspect(fresh.engine)
        return {str(index["name"]) for table in INDEXES for index in inspector.get_indexes(table)}

    fresh = Database(fresh_database_url)
    try:
        schema.upgrade(fresh, "0023_webmail_indexes")
        assert set(INDEXES.values()) <= indexes(fresh)
        schema.downgrade(fresh, "0022_webmail_account")
        assert not set(INDEXES.values()) & indexes(fresh)
        schema.upgrade(fresh)
        assert set(INDEXES.values()) <= indexes(fresh)
    finally:
        fresh.dispose()


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The served demo home whose workers run (filing releases a held copy, E3)."""
    return working_gateway


@pytest.fixture
def mailbox(served: ServedGateway) -> Iterator[Mailbox]:
    """The webmail's reading service on the served home's database and blobs."""
    components = served.components()
    try:
        yield Mailbox(
            ImapStore(
                components.database,
                components.blobs,
                components.queue,
                reporting_host=components.settings.gateway.hostname,
            )
        )
    finally:
        components.close()


def _principal(mailbox: Mailbox, patient: WebPatient) -> Principal:
    with mailbox.database.reading() as session:
        account_id = session.scalar(
            select(AccountRow.id).where(AccountRow.address == patient.address)
        )
    assert account_id is not None
    return Principal(int(account_id), patient.address, "patient", "password+totp")


def _imap_account(served: ServedGateway, patient: WebPatient) -> Account:
    components = served.components()
    try:
        with components.database.transaction() as session:
            _id, password = new_app_password(
                session, patient.address, "test", Actor.operator("test")
            )
    finally:
        components.close()
    return Account(patient.address, password)


def _professional_writes(
    served: ServedGateway,
    to: str,
    subject: str,
    *,
    answers: str | None = None,
    attachment: bytes | None = None,
) -> str:
    """The demo professional writes over submission (answering ``answers`` when given)."""
    message = EmailMessage()
    message["From"] = served.credentials["professional"]["address"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message_id = make_msgid(domain="hopital-demo.mssante.fr")
    message["Message-ID"] = message_id
    if answers is not None:
        message["In-Reply-To"] = answers
        message["References"] = answers
    message.set_content("Bonjour.\n")
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="bilan.pdf"
        )
    with served.submit("professional") as client:
        assert not client.send_message(message)
    return message_id


def _own_message(subject: str, *, answers: str | None = None, file: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = "patient@example.org"
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="patient.example")
    if answers is not None:
        message["In-Reply-To"] = answers
        message["References"] = answers
    message.set_content("Texte.\n")
    if file:
        message.add_attachment(PDF, maintype="application", subtype="pdf", filename="scan.pdf")
    return message.as_bytes().replace(b"\n", b"\r\n")


def _inbox_count(mailbox: Mailbox, principal: Principal) -> int:
    listed, pages = mailbox.conversations(principal, 1)
    return sum(item.count for item in listed) if pages == 1 else -1


def _line(item: ListedConversation) -> tuple[str, str, int, bool, bool, bool]:
    kind = "conversation" if "/conversations/" in item.href else "message"
    return (kind, item.subject, item.count, item.unread, item.attachment, item.draft)


def test_H2_D1_the_list_pages_conversations_and_lone_messages_with_their_markers(
    served: ServedGateway, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = activated_patient(served)
    principal = _principal(mailbox, patient)
    account = _imap_account(served, patient)

    def arrived(count: int) -> None:
        wait_until(
            lambda: _inbox_count(mailbox, principal) == count,
            timeout=30,
            message=lambda: f"INBOX never held {count}: {mailbox.conversations(principal, 1)}",
        )

    # 1. a conversation started by the professional, later answered by a second message
    first = _professional_writes(served, patient.address, "Consultation du 3 mars")
    arrived(1)
    # 2. a conversation whose message carries a file (held, released by filing: E3)
    _professional_writes(served, patient.address, "Résultats", attachment=PDF)
    arrived(2)
    # 3. a lone message the patient's mail client filed in INBOX, with a file, read
    with served.imap(account) as client:
        assert client.append("INBOX", "(\\Seen)", None, _own_message("Scan", file=True))[0]
    arrived(3)
    # 4. the professional answers the first conversation: it becomes the newest line
    second = _professional_writes(served, patient.address, "Re: Consultation", answers=first)
    arrived(4)
    # 5. a lone unread message, the newest of all
    with served.imap(account) as client:
        assert client.append("INBOX", None, None, _own_message("Note"))[0]
        # the reply draft a mail client keeps: In-Reply-To names the professional's message
        draft = _own_message("Re: Consultation", answers=second)
        assert client.append("Drafts", "(\\Draft \\Seen)", None, draft)[0]
        # the "Résultats" conversation is read
        client.select("INBOX")
        _, data = client.uid("SEARCH", "ALL")
        uids = data[0].split()
        assert client.uid("STORE", uids[1], "+FLAGS", "(\\Seen)")[0] == "OK"
    arrived(5)

    monkeypatch.setattr(webmail_mailbox, "PAGE_SIZE", 2)
    page_1, pages = mailbox.conversations(principal, 1)
    page_2, _ = mailbox.conversations(principal, 2)
    assert pages == 2  # four lines: two lone messages, two conversations
    assert [_line(item) for item in page_1] == [
        ("message", "Note", 1, True, False, False),
        ("conversation", "Consultation du 3 mars", 2, True, False, True),
    ]
    assert [_line(item) for item in page_2] == [
        ("message", "Scan", 1, False, True, False),
        ("conversation", "Résultats", 1, False, True, False),
    ]
    past_the_end, pages_again = mailbox.conversations(principal, 9)  # the last page
    assert pages_again == 2 and [_line(item) for item in past_the_end] == [
        _line(item) for item in page_2
    ]
    assert page_1[1].correspondent == "Claire MARTIN"  # the directory's name
    assert page_1[0].date > page_1[1].date > page_2[0].date

    # the conversation page reads that conversation only, oldest first; the draft is tied
    conversation_id = int(page_1[1].href.rsplit("/", 1)[1])
    entries, professional = mailbox.conversation_entries(principal, conversation_id)
    assert professional == served.credentials["professional"]["address"]
    assert [entry.conversation_id for entry in entries] == [conversation_id] * 2
    assert entries[0].internal_date <= entries[1].internal_date
    assert list(mailbox.reply_drafts(principal)) == [conversation_id]


def test_H2_D1_a_saved_reply_draft_marks_its_conversation_and_is_resumed_from_it(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    _professional_writes(served, patient.address, "Ordonnance")
    _professional_writes(served, patient.address, "Vaccins")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    line = page.locator(".conversation", has_text="Ordonnance")
    wait_until(lambda: page.reload() and line.count() == 1, timeout=30, message="never listed")
    expect(line.locator(".draft-marker")).to_have_count(0)
    line.get_by_role("link").click()
    expect(page.get_by_role("link", name="Reprendre mon brouillon de réponse")).to_have_count(0)
    page.get_by_label("Ma réponse à Claire MARTIN").fill("Je vous réponds demain")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    expect(page).to_have_url(re.compile(r"/webmail/drafts\?saved=1$"))

    page.goto(page.url.split("/webmail/")[0] + "/webmail/conversations")
    expect(line.locator(".draft-marker")).to_have_text("Brouillon")
    other = page.locator(".conversation", has_text="Vaccins")
    expect(other.locator(".draft-marker")).to_have_count(0)  # only its own conversation
    line.get_by_role("link").click()
    page.get_by_role("link", name="Reprendre mon brouillon de réponse").click()
    expect(page).to_have_url(re.compile(r"/webmail/drafts/\d+$"))
    expect(page.get_by_label("Message", exact=True)).to_have_value("Je vous réponds demain")
    expect(page.get_by_label("Objet")).to_have_value("Re: Ordonnance")
