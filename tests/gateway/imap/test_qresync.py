"""QRESYNC (RFC 7162 §3.2): ENABLE, SELECT (QRESYNC ...), UID FETCH (VANISHED), VANISHED.

Byte-exact transcripts over the served gateway (both engines); only UIDVALIDITY and
modification sequences, which depend on the clock and the history, are read from
the responses first.
"""

from __future__ import annotations

import imaplib
import re

from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _append(client: ImapTranscript, subject: str) -> None:
    message = f"Subject: {subject}\r\nMessage-ID: <{subject}@qresync.test>\r\n\r\nTexte.\r\n"
    data = message.encode()
    client.send(f"ap APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    assert client.line().startswith(b"ap OK")


def _number(pattern: bytes, lines: list[bytes]) -> int:
    match = re.search(pattern, b"".join(lines))
    assert match is not None, lines
    return int(match.group(1))


def _tagged(lines: list[bytes]) -> bytes:
    return lines[-1].split(b" ", 1)[1]


def test_h1_qresync_select_reports_vanished_and_changed_messages(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    other = _login(imap_gateway, patient)
    try:
        assert b" QRESYNC " in client.ok("CAPABILITY")[0]
        for n in range(1, 6):
            _append(client, f"m{n}")
        assert _tagged(client.command("SELECT INBOX (QRESYNC (1 1))")).startswith(b"BAD")
        assert client.ok("ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
        selected = client.ok("EXAMINE INBOX")
        validity = _number(rb"\[UIDVALIDITY (\d+)\]", selected)
        since = _number(rb"\[HIGHESTMODSEQ (\d+)\]", selected)
        client.ok("UNSELECT")
        other.ok("SELECT INBOX")
        other.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
        other.ok("UID STORE 3:4 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")
        resync = client.ok(f"EXAMINE INBOX (QRESYNC ({validity} {since}))")
        highest = _number(rb"\[HIGHESTMODSEQ (\d+)\]", resync)
        flagged = _number(rb"UID 2 FLAGS \(\\Flagged\) MODSEQ \((\d+)\)", resync)
        assert since < flagged <= highest
        assert resync == [
            b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n",
            b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)\r\n",
            b"* 3 EXISTS\r\n",
            b"* 0 RECENT\r\n",
            b"* OK [UNSEEN 1] First unseen message.\r\n",
            b"* OK [UIDNEXT 6] Predicted next UID.\r\n",
            b"* OK [UIDVALIDITY %d] UIDs valid.\r\n" % validity,
            b"* OK [HIGHESTMODSEQ %d] Highest modification sequence.\r\n" % highest,
            b"* VANISHED (EARLIER) 3:4\r\n",
            b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))\r\n" % flagged,
            resync[-1],
        ]
        assert _tagged(resync) == b"OK [READ-ONLY] Selected mailbox.\r\n"
        # Known UIDs narrow VANISHED; a folder already selected is CLOSED first.
        narrowed = client.ok(f"EXAMINE INBOX (QRESYNC ({validity} {since} 1:3 (1:3 1:3)))")
        assert narrowed[0] == b"* OK [CLOSED] Previous mailbox closed.\r\n"
        assert b"* VANISHED (EARLIER) 3\r\n" in narrowed
        # Another UIDVALIDITY: an ordinary SELECT, nothing resynchronised.
        plain = client.ok(f"EXAMINE INBOX (QRESYNC ({validity + 1} {since}))")
        assert not [line for line in plain if b"VANISHED" in line or b"FETCH" in line]
        for malformed in ("(QRESYNC (0 1))", "(QRESYNC (1))", "(QRESYNC (1 2 3:*))"):
            assert _tagged(client.command(f"EXAMINE INBOX {malformed}")).startswith(b"BAD")
    finally:
        other.close()
        client.close()


def test_h1_qresync_uid_fetch_vanished_and_expunge_as_vanished(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    other = _login(imap_gateway, patient)
    try:
        for n in range(1, 6):
            _append(client, f"m{n}")
        other.ok("SELECT INBOX")  # takes \Recent, which would add RECENT responses below
        client.ok("SELECT INBOX")
        refused = client.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        assert _tagged(refused).startswith(b"BAD")
        client.ok("ENABLE QRESYNC")
        since = _number(rb"MODSEQ \((\d+)\)", client.ok("UID FETCH 5 (MODSEQ)"))
        other.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
        other.ok("UID EXPUNGE 1")
        # Once QRESYNC is enabled, another session's expunge is a VANISHED, and every
        # FETCH carries the UID (RFC 7162 §3.2.4, §3.2.10).
        assert client.ok("NOOP")[:-1] == [b"* VANISHED 1\r\n"]
        fetched = client.ok("FETCH 1 (FLAGS)")
        assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\) UID 2 MODSEQ \(\d+\)\)\r\n", fetched[0])
        client.ok("UID STORE 3:4 +FLAGS.SILENT (\\Deleted)")
        assert client.ok("EXPUNGE")[:-1] == [b"* VANISHED 3:4\r\n"]
        other.ok("UID STORE 5 +FLAGS.SILENT (\\Seen)")
        lines = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
        modseq = _number(rb"UID 5 MODSEQ \((\d+)\)", lines)
        assert lines[:-1] == [
            b"* VANISHED (EARLIER) 1,3:4\r\n",
            b"* 2 FETCH (FLAGS (\\Seen) UID 5 MODSEQ (%d))\r\n" % modseq,
        ]
        assert _tagged(client.command("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")).startswith(
            b"BAD"
        )
        assert _tagged(client.command("UID FETCH 1:* (FLAGS) (VANISHED)")).startswith(b"BAD")
    finally:
        other.close()
        client.close()


def test_h1_qresync_with_python_imaplib(imap_gateway: ServedGateway, patient: Account) -> None:
    """A stock client (the standard library's imaplib) enables QRESYNC, reads VANISHED
    after another session's expunge, and resynchronises a reselection."""
    other = _login(imap_gateway, patient)
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", imap_gateway.ports["imaps"], ssl_context=imap_gateway.tls_context()
    )
    try:
        client.login(patient.address, patient.password)
        # imaplib reads CAPABILITY once, before login (where ENABLE is not offered).
        client.capabilities = tuple(client.capability()[1][0].decode().upper().split())
        for n in range(1, 4):
            _append(other, f"py{n}")
        assert client.enable("QRESYNC")[0] == "OK"
        assert client.response("ENABLED") == ("ENABLED", [b"QRESYNC"])
        assert client.select("INBOX")[0] == "OK"
        validity = int(client.response("UIDVALIDITY")[1][0])
        since = int(client.response("HIGHESTMODSEQ")[1][0])
        other.ok("SELECT INBOX")
        other.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.ok("UID EXPUNGE 2")
        client.noop()
        assert client.response("VANISHED") == ("VANISHED", [b"2"])
        assert client.response("EXPUNGE") == ("EXPUNGE", [None])
        other.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        other.ok("UID EXPUNGE 3")
        assert client.xatom("SELECT", "INBOX", f"(QRESYNC ({validity} {since}))")[0] == "OK"
        assert client.response("VANISHED") == ("VANISHED", [b"(EARLIER) 2:3"])
        assert client.response("EXISTS")[1][-1] == b"1"
    finally:
        client.shutdown()
        other.close()
