"""Issue 15, H1: a folder incarnation has its own UIDVALIDITY and no cache outlives it.

imaptest found that after DELETE and CREATE of a folder with the same name, SELECT
showed the deleted folder's messages (a process-wide snapshot cache keyed by folder
id, and SQLite gives a new folder the id of a deleted one), and that DELETE + CREATE
within one second gave back the same UIDVALIDITY and UIDNEXT (UIDs reused).
RFC 3501 §2.3.1.1: a new mailbox with the name of a deleted one gets a UIDVALIDITY
greater than the old one's, so that clients never take new UIDs for old messages.
"""

from __future__ import annotations

import contextlib
import re

from tests.gateway.imap.accounts import new_professional
from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _mail(subject: str) -> bytes:
    return (
        f"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
        f"Subject: {subject}\r\nDate: Mon, 02 Jun 2025 10:00:00 +0200\r\n\r\nTexte.\r\n"
    ).encode()


def _append(client: ImapTranscript, folder: str, message: bytes) -> bytes:
    lines = client.ok(f"APPEND {folder} {{{len(message)}+}}\r\n".encode() + message)
    return lines[-1]


def _validity(lines: list[bytes]) -> int:
    match = re.search(rb"\* OK \[UIDVALIDITY (\d+)\]", b"".join(lines))
    assert match is not None, lines
    return int(match.group(1))


def _status_validity(lines: list[bytes]) -> int:
    match = re.search(rb"UIDVALIDITY (\d+)", b"".join(lines))
    assert match is not None, lines
    return int(match.group(1))


def test_h1_rfc3501_2_3_1_1_recreated_folder_shows_only_its_own_messages(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        client.ok("CREATE Analyses")
        for n in range(3):
            _append(client, "Analyses", _mail(f"ancien {n}"))
        old = client.ok("SELECT Analyses")  # this process now holds a copy of the folder
        assert b"* 3 EXISTS\r\n" in old
        old_validity = _validity(old)
        client.ok("SELECT INBOX")
        client.ok("DELETE Analyses")
        client.ok("CREATE Analyses")  # within the same second: the id may come back too
        appended = _append(client, "Analyses", _mail("nouveau"))
        match = re.search(rb"\[APPENDUID (\d+) 1\]", appended)
        assert match is not None, appended
        new_validity = int(match.group(1))
        assert new_validity > old_validity
        assert appended.endswith(f"OK [APPENDUID {new_validity} 1] APPEND completed.\r\n".encode())
        assert client.ok("STATUS Analyses (MESSAGES UIDNEXT UIDVALIDITY)")[0] == (
            f"* STATUS Analyses (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {new_validity})\r\n".encode()
        )
        selected = client.ok("SELECT Analyses")
        assert selected == [
            b"* OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen)]"
            b" Flags permitted.\r\n",
            b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)\r\n",
            b"* 1 EXISTS\r\n",
            b"* 1 RECENT\r\n",
            b"* OK [UNSEEN 1] First unseen message.\r\n",
            b"* OK [UIDNEXT 2] Predicted next UID.\r\n",
            f"* OK [UIDVALIDITY {new_validity}] UIDs valid.\r\n".encode(),
            b"* OK [HIGHESTMODSEQ 2] Highest modification sequence.\r\n",
            selected[-1][: selected[-1].index(b" ")] + b" OK [READ-WRITE] Selected mailbox.\r\n",
        ], client.dump()
        fetched = client.ok("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert fetched[:-1] == [
            b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {20}\r\nSubject: nouveau\r\n\r\n)\r\n"
        ], client.dump()
        client.ok("LOGOUT")
    finally:
        client.close()


def test_h1_rfc3501_2_3_1_1_uidvalidity_never_repeats_for_a_name(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        seen: list[int] = []
        for _ in range(4):  # all within a second or two: the clock alone repeats itself
            client.ok("CREATE Courrier/Recu")
            seen.append(_status_validity(client.ok("STATUS Courrier/Recu (UIDVALIDITY)")))
            client.ok("DELETE Courrier/Recu")
        assert seen == sorted(set(seen)), seen
        # RENAME keeps the folder (and its UIDVALIDITY); a new folder under the old name
        # gets a new one.
        client.ok("CREATE Ancien")
        before = _status_validity(client.ok("STATUS Ancien (UIDVALIDITY)"))
        client.ok("RENAME Ancien Nouveau")
        assert _status_validity(client.ok("STATUS Nouveau (UIDVALIDITY)")) == before
        client.ok("CREATE Ancien")
        assert _status_validity(client.ok("STATUS Ancien (UIDVALIDITY)")) > before
        client.ok("LOGOUT")
    finally:
        client.close()


def test_h1_selected_folder_deleted_by_another_session_is_not_replaced_by_its_successor(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    watcher = _login(imap_gateway, account)
    other = _login(imap_gateway, account)
    try:
        other.ok("CREATE Temp")
        _append(other, "Temp", _mail("ancien"))
        assert b"* 1 EXISTS\r\n" in watcher.ok("SELECT Temp")
        other.ok("DELETE Temp")
        other.ok("CREATE Temp")
        _append(other, "Temp", _mail("nouveau"))
        _append(other, "Temp", _mail("nouveau 2"))
        # The watcher's folder is gone: it must never be shown the new folder's messages
        # under the old UIDVALIDITY (pymap ends such a selection with BYE).
        lines: list[bytes] = []
        with contextlib.suppress(ConnectionError):
            lines = watcher.command("NOOP")
        assert not any(b"EXISTS" in line for line in lines), watcher.dump()
    finally:
        watcher.close()
        other.close()
