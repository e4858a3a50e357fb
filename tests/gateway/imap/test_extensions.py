"""H1: folders, UIDPLUS, MOVE, SPECIAL-USE, NAMESPACE, ENABLE, CONDSTORE, SEARCH, restarts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _append(client: ImapTranscript, message: bytes, folder: str = "INBOX", flags: str = "") -> int:
    options = f" ({flags})" if flags else ""
    client.send(f"ap APPEND {folder}{options} {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
    line = client.line()
    while line.startswith(b"* "):
        line = client.line()
    match = re.match(rb"ap OK \[APPENDUID (\d+) (\d+)\]", line)
    assert match is not None, line
    return int(match.group(2))


def _mail(
    subject: str, body: str = "Texte.", *, date: str = "Mon, 02 Jun 2025 10:00:00 +0200"
) -> bytes:
    return (
        f"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
        f"To: patient@patient.mssante.fr\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{body}\r\n"
    ).encode()


def test_h1_special_use_folders_and_namespace(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    try:
        listing = b"".join(client.ok('LIST "" "*"'))
        assert b'* LIST (\\HasNoChildren) "/" INBOX' in listing
        assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent' in listing
        assert b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts' in listing
        assert b'* LIST (\\HasNoChildren \\Trash) "/" Trash' in listing
        assert client.ok("NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
        assert client.ok('LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
        client.ok("CREATE Dossiers/Analyses")
        listing = b"".join(client.ok('LIST "" "Dossiers*"'))
        assert b'(\\HasChildren) "/" Dossiers' in listing
        assert b'(\\HasNoChildren) "/" Dossiers/Analyses' in listing
        assert b"[CANNOT]" in client.command("DELETE Sent")[-1]
        assert b"NO" in client.command("CREATE inbox")[-1]
        assert b"Dossiers/Analyses" not in b"".join(client.ok('LSUB "" "*"'))
        client.ok("SUBSCRIBE Dossiers/Analyses")
        client.ok("RENAME Dossiers Archives")
        assert client.ok('LSUB "" "Archives/*"')[:-1] == [
            b'* LSUB (\\HasNoChildren) "/" Archives/Analyses\r\n'
        ]
        assert client.ok('LSUB "" "Archives%"')[:-1] == [b'* LSUB (\\Noselect) "/" Archives\r\n']
        client.ok("DELETE Archives/Analyses")
        client.ok("DELETE Archives")
    finally:
        client.close()


def test_h1_uidplus_copy_move_expunge(imap_gateway: ServedGateway, patient: Account) -> None:
    client = _login(imap_gateway, patient)
    try:
        uids = [_append(client, _mail(f"Message {n}")) for n in range(1, 4)]
        assert uids == [1, 2, 3]
        selected = b"".join(client.ok("SELECT INBOX"))
        validity = re.search(rb"\[UIDVALIDITY (\d+)\]", selected)
        assert validity is not None and b"* 3 EXISTS" in selected
        copied = client.ok("UID COPY 1:2 Drafts")[-1]
        assert re.search(rb"\[COPYUID \d+ 1:2 1:2\]", copied), copied
        moved = b"".join(client.ok("UID MOVE 2 Trash"))
        assert re.search(rb"\* OK \[COPYUID \d+ 2 1\]", moved), moved
        assert b"* 2 EXPUNGE" in moved
        client.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        expunged = b"".join(client.ok("UID EXPUNGE 3"))
        assert b"* 2 EXPUNGE" in expunged
        assert b"* SEARCH 1\r\n" in b"".join(client.ok("UID SEARCH ALL"))
        status = client.ok("STATUS Drafts (MESSAGES UIDNEXT UNSEEN)")[0]
        assert status == b"* STATUS Drafts (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n"
        assert b"[TRYCREATE]" in client.command("UID COPY 1 Nowhere")[-1]
    finally:
        client.close()


def test_h1_condstore_enable_fetch_store_search(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    try:
        for n in range(3):
            _append(client, _mail(f"Lettre {n}"))
        assert client.ok("ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE\r\n"
        selected = b"".join(client.ok("SELECT INBOX (CONDSTORE)"))
        highest = int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", selected).group(1))  # type: ignore[union-attr]
        changed = b"".join(client.ok("UID STORE 2 +FLAGS (\\Flagged)"))
        match = re.search(
            rb"\* 2 FETCH \(FLAGS \(\\Flagged \\Recent\) UID 2 MODSEQ \((\d+)\)\)", changed
        )
        assert match is not None, changed
        modseq = int(match.group(1))
        assert modseq > highest
        since = b"".join(client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"))
        assert since.count(b"* ") == 1 and b"UID 2 " in since and b"MODSEQ" in since
        refused = client.ok(f"UID STORE 1:2 (UNCHANGEDSINCE {highest}) +FLAGS (\\Seen)")
        assert refused[-1].startswith(b"t") and b"[MODIFIED 2]" in refused[-1]
        assert b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 1 MODSEQ" in b"".join(refused)
        search = client.ok(f"UID SEARCH MODSEQ {modseq}")[0]
        assert re.match(rb"\* SEARCH 1 2 \(MODSEQ \d+\)\r\n", search), search
        status = client.ok("STATUS INBOX (HIGHESTMODSEQ MESSAGES)")[0]
        assert re.match(rb"\* STATUS INBOX \(HIGHESTMODSEQ \d+ MESSAGES 3\)", status)
        silent = b"".join(client.ok("STORE 3 +FLAGS.SILENT (\\Answered)"))
        assert re.search(rb"\* 3 FETCH \(MODSEQ \(\d+\)\)", silent), silent
    finally:
        client.close()


def test_h1_condstore_flag_changes_from_another_session_carry_modseq(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    first = _login(imap_gateway, patient)
    second = _login(imap_gateway, patient)
    try:
        _append(first, _mail("Partagé"))
        first.ok("ENABLE CONDSTORE")
        first.ok("SELECT INBOX")
        second.ok("SELECT INBOX")
        second.ok("STORE 1 +FLAGS (\\Flagged)")
        update = b"".join(first.ok("NOOP"))
        assert re.search(rb"\* 1 FETCH \(FLAGS \([^)]*\\Flagged[^)]*\) MODSEQ \(\d+\)\)", update)
    finally:
        first.close()
        second.close()


def test_h1_search_headers_dates_flags_size_text(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    try:
        _append(client, _mail("Résultats TSH", "Votre TSH est normale: r=C3=A9sultat rassurant."))
        _append(
            client,
            _mail(
                "Compte rendu IRM",
                "Examen sans particularit=C3=A9.",
                date="Tue, 01 Jan 2019 08:00:00 +0000",
            ),
            flags="\\Flagged",
        )
        _append(client, _mail("=?utf-8?q?Ordonnance_m=C3=A9dicale?=", "x" * 5000))
        client.ok("SELECT INBOX")

        def search(criteria: str) -> list[int]:
            line = client.ok("UID SEARCH " + criteria)[0]
            return [int(n) for n in line.split()[2:]]

        assert search("ALL") == [1, 2, 3]

        def literal(text: str) -> str:
            return f"{{{len(text.encode())}+}}\r\n{text}"

        assert search("CHARSET UTF-8 SUBJECT " + literal("RÉSULTATS")) == [1]
        assert search('SUBJECT "ordonnance"') == [3]
        assert search('FROM "paul.bernard"') == [1, 2, 3]
        assert search('HEADER Content-Transfer-Encoding "quoted"') == [1, 2, 3]
        assert search('TEXT "rassurant"') == [1]
        assert search("CHARSET UTF-8 BODY " + literal("particularité")) == [2]
        assert search('BODY "Ordonnance"') == []
        assert search("FLAGGED") == [2]
        assert search("UNFLAGGED UNSEEN") == [1, 3]
        assert search("LARGER 4000") == [3]
        assert search("SMALLER 4000 NOT FLAGGED") == [1]
        assert search("SENTBEFORE 1-Jan-2020") == [2]
        assert search("SENTSINCE 1-Jan-2020") == [1, 3]
        today = datetime.now(UTC).strftime("%d-%b-%Y")
        assert search(f"SINCE {today}") == [1, 2, 3]
        assert search(f"BEFORE {today}") == []
        assert search('OR FLAGGED SUBJECT "ordonnance"') == [2, 3]
        assert search("UID 2:* NOT UID 3") == [2]
        seq = client.ok("SEARCH 2:3 UNFLAGGED")[0]
        assert seq == b"* SEARCH 3\r\n"
    finally:
        client.close()


def test_h1_uidvalidity_and_uids_survive_a_restart(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    _append(client, _mail("Avant redémarrage"))
    _append(client, _mail("Deuxième"))
    before = b"".join(client.ok("SELECT INBOX"))
    uids_before = client.ok("UID SEARCH ALL")[0]
    client.close()
    imap_gateway.restart()
    client = _login(imap_gateway, patient)
    try:
        after = b"".join(client.ok("SELECT INBOX"))
        validity = rb"\[UIDVALIDITY \d+\]"
        assert re.search(validity, before).group(0) == re.search(validity, after).group(0)  # type: ignore[union-attr]
        assert b"[UIDNEXT 3]" in after
        assert client.ok("UID SEARCH ALL")[0] == uids_before == b"* SEARCH 1 2\r\n"
        assert _append(client, _mail("Après")) == 3
    finally:
        client.close()
