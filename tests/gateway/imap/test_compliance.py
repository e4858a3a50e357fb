"""Issue 15, H1: the compliance defects Dovecot's imaptest found, as byte-exact transcripts.

Each test replays, over real TLS against the served gateway, what an imaptest group
checks (imaptest itself is a developer tool, never part of the suite), with our own
messages. Test names cite the RFC section the answer follows.
"""

from __future__ import annotations

import re

from tests.gateway.imap.accounts import new_professional
from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _append(client: ImapTranscript, folder: str, message: bytes, flags: str = "") -> None:
    options = f" ({flags})" if flags else ""
    client.ok(f"APPEND {folder}{options} {{{len(message)}+}}\r\n".encode() + message)


def _tagless(lines: list[bytes]) -> list[bytes]:
    """The lines with the tag of the tagged response removed (tags differ per test)."""
    last = lines[-1]
    return [*lines[:-1], last[last.index(b" ") + 1 :]]


PLAIN = (
    b"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
    b"Subject: Bilan\r\nDate: Mon, 02 Jun 2025 10:00:00 +0200\r\n\r\nTexte.\r\n"
)


# -- \Recent (RFC 3501 §2.3.2, imaptest append, copy, select) ----------------------------


def test_h1_rfc3501_2_3_2_new_message_is_recent_in_exactly_one_session(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    first, second, third = (_login(imap_gateway, account) for _ in range(3))
    try:
        first.ok("CREATE Dossier")
        first.ok("SELECT Dossier")
        second.ok("SELECT Dossier")
        _append(third, "Dossier", PLAIN, r"\Seen")
        noticed = [_tagless(session.ok("NOOP")) for session in (first, second)]
        # Both learn of it; it is recent in the first that looked, and in that one only.
        assert noticed[0] == [b"* 1 EXISTS\r\n", b"* 1 RECENT\r\n", b"OK NOOP completed.\r\n"]
        assert noticed[1] == [b"* 1 EXISTS\r\n", b"OK NOOP completed.\r\n"]
        assert first.ok("FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n"
        assert second.ok("FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
        status = third.ok("STATUS Dossier (MESSAGES RECENT)")[0]
        assert status == b"* STATUS Dossier (MESSAGES 1 RECENT 0)\r\n"
        # COPY into a folder others have selected: the same rule.
        third.ok("SELECT INBOX")
        _append(third, "INBOX", PLAIN)
        third.ok("COPY 1 Dossier")
        assert _tagless(second.ok("NOOP")) == [
            b"* 2 EXISTS\r\n",
            b"* 1 RECENT\r\n",
            b"OK NOOP completed.\r\n",
        ]
        assert _tagless(first.ok("NOOP")) == [b"* 2 EXISTS\r\n", b"OK NOOP completed.\r\n"]
    finally:
        for session in (first, second, third):
            session.close()


def test_h1_rfc3501_6_3_2_examine_shows_recent_and_leaves_it(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        client.ok("CREATE Examen")
        _append(client, "Examen", PLAIN)
        _append(client, "Examen", PLAIN)
        examined = client.ok("EXAMINE Examen")
        assert b"* 2 EXISTS\r\n" in examined and b"* 2 RECENT\r\n" in examined
        client.ok("CLOSE")
        assert client.ok("STATUS Examen (RECENT)")[0] == b"* STATUS Examen (RECENT 2)\r\n"
        selected = client.ok("SELECT Examen")
        assert b"* 2 RECENT\r\n" in selected
        client.ok("CLOSE")
        assert client.ok("STATUS Examen (RECENT)")[0] == b"* STATUS Examen (RECENT 0)\r\n"
        assert b"* 0 RECENT\r\n" in client.ok("EXAMINE Examen")
    finally:
        client.close()


# -- what other sessions are told (RFC 3501 §7.2.6, §5.2) --------------------------------


def test_h1_rfc3501_7_2_6_new_keyword_is_announced_before_it_is_used(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    watcher, writer = _login(imap_gateway, account), _login(imap_gateway, account)
    try:
        _append(writer, "INBOX", PLAIN)
        watcher.ok("SELECT INBOX")
        writer.ok("SELECT INBOX")
        assert _tagless(writer.ok("STORE 1 +FLAGS ($Urgent)")) == [
            b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent)\r\n",
            b"* OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent)]"
            b" Flags permitted.\r\n",
            b"* 1 FETCH (FLAGS ($Urgent))\r\n",
            b"OK STORE completed.\r\n",
        ]
        assert _tagless(watcher.ok("NOOP")) == [
            b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent)\r\n",
            b"* OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent)]"
            b" Flags permitted.\r\n",
            b"* 1 FETCH (FLAGS (\\Recent $Urgent))\r\n",
            b"OK NOOP completed.\r\n",
        ]
        # Announced once: the next change of that keyword is a plain FETCH.
        writer.ok("STORE 1 -FLAGS ($Urgent)")
        assert _tagless(watcher.ok("NOOP")) == [
            b"* 1 FETCH (FLAGS (\\Recent))\r\n",
            b"OK NOOP completed.\r\n",
        ]
    finally:
        watcher.close()
        writer.close()


def test_h1_rfc3501_7_4_1_flag_change_during_a_fetch_follows_its_data(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    reader, writer = _login(imap_gateway, account), _login(imap_gateway, account)
    try:
        _append(writer, "INBOX", PLAIN)
        reader.ok("EXAMINE INBOX")
        writer.ok("SELECT INBOX")
        writer.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert _tagless(reader.ok("FETCH 1 (ENVELOPE)")) == [
            b'* 1 FETCH (ENVELOPE ("Mon, 02 Jun 2025 10:00:00 +0200" "Bilan"'
            b' (("Dr Paul Bernard" NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b' (("Dr Paul Bernard" NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b' (("Dr Paul Bernard" NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b" NIL NIL NIL NIL NIL))\r\n",
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n",
            b"OK FETCH completed.\r\n",
        ]
    finally:
        reader.close()
        writer.close()


def test_h1_rfc2180_4_1_fetch_of_a_message_expunged_meanwhile_still_has_its_data(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    reader, writer = _login(imap_gateway, account), _login(imap_gateway, account)
    try:
        _append(writer, "INBOX", PLAIN)
        reader.ok("EXAMINE INBOX")
        writer.ok("SELECT INBOX")
        writer.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        writer.ok("EXPUNGE")
        # The reader still shows message 1: its data, then the EXPUNGE, never NIL.
        fetched = reader.ok("UID FETCH 1 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert _tagless(fetched) == [
            b"* 1 FETCH (RFC822.SIZE 124 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n"
            b"Subject: Bilan\r\n\r\n UID 1)\r\n",
            b"* 1 EXPUNGE\r\n",
            b"* 0 RECENT\r\n",
            b"OK FETCH completed.\r\n",
        ]
    finally:
        reader.close()
        writer.close()


# -- names (RFC 3501 §6.3.3, §9) ---------------------------------------------------------


def test_h1_rfc3501_6_3_3_create_with_trailing_delimiter(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        assert re.fullmatch(
            rb"OK \[MAILBOXID \(F\d+\)\] CREATE completed\.\r\n",
            _tagless(client.ok("CREATE Archives/"))[-1],
        )
        client.ok("CREATE Archives/2025/")
        assert client.ok('LIST "" "Archives*"')[:-1] == [
            b'* LIST (\\HasChildren) "/" Archives\r\n',
            b'* LIST (\\HasNoChildren) "/" Archives/2025\r\n',
        ]
    finally:
        client.close()


def test_h1_rfc3501_9_atom_chars_and_malformed_utf7_name_no_such_folder(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        # "}" is an ATOM-CHAR; "&'+,-" is not modified UTF-7: no folder has that name.
        answer = client.command("SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}")
        assert _tagless(answer) == [b"NO [NONEXISTENT] Mailbox does not exist.\r\n"]
        assert _tagless(client.ok('LIST "" !#$&\'+,-.0123456789:;<=>?@^_`|[}%*')) == [
            b"OK LIST completed.\r\n"
        ]
        assert _tagless(client.command("SELECT a}b")) == [
            b"NO [NONEXISTENT] Mailbox does not exist.\r\n"
        ]
        client.ok("NOOP")
    finally:
        client.close()


# -- content (RFC 2045 §6.7, RFC 3516, RFC 3501 §6.4.5, §7.4.2) -------------------------

QUOTED_PRINTABLE = (
    b"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
    b"Subject: Analyses\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="sep"\r\n\r\n'
    b"--sep\r\nContent-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"ligne  \r\nsuite=\r\n\r\ntab\t=\r\nulation\r\nfin\t \t= \r\n=3D\r\nvaleur =C3=A9\r\n"
    b"--sep--\r\n"
)


def test_h1_rfc2045_6_7_binary_of_a_quoted_printable_part(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        _append(client, "INBOX", QUOTED_PRINTABLE)
        client.ok("EXAMINE INBOX")
        decoded = b"ligne\r\nsuite\r\ntab\tulation\r\nfin\t \t=\r\nvaleur \xc3\xa9"
        assert _tagless(client.ok("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")) == [
            b"* 1 FETCH (BINARY.SIZE[1] %d BINARY[1] {%d}\r\n%b)\r\n"
            % (len(decoded), len(decoded), decoded),
            b"OK FETCH completed.\r\n",
        ]
        assert client.ok("FETCH 1 (BINARY.PEEK[1]<0.8>)")[0] == (
            b"* 1 FETCH (BINARY[1]<0> {8}\r\nligne\r\ns)\r\n"
        )
    finally:
        client.close()


BINARY_PART = b"\x00-\xe4\n\r\n\x00\xff"
WITH_BINARY = (
    b"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
    b"Subject: Image\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="sep"\r\n\r\n'
    b"--sep\r\nContent-Type: text/plain\r\n\r\nTexte.\r\n"
    b"--sep\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding:\r\n binary\r\n\r\n" + BINARY_PART + b"\r\n--sep--\r\n"
)


def test_h1_rfc3516_4_3_binary_append_is_stored_so_that_body_is_valid_imap(
    imap_gateway: ServedGateway,
) -> None:
    """imaptest append-binary: a part with NUL appended in a literal8 comes back as base64
    in BODY[2] (a literal may not hold NUL), and exactly as appended in BINARY[2]."""
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        client.send(b"b1 APPEND INBOX ~{%d}\r\n" % len(WITH_BINARY))
        assert client.line().startswith(b"+ ")
        client.send(WITH_BINARY + b"\r\n")
        assert client.line().startswith(b"b1 OK [APPENDUID ")
        client.ok("EXAMINE INBOX")
        assert _tagless(client.ok("FETCH 1 (BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[1])")) == [
            b"* 1 FETCH (BODY[2] {12}\r\nAC3kCg0KAP8= BODY[2.MIME] {77}\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n BODY[1] {6}\r\nTexte.)\r\n",
            b"OK FETCH completed.\r\n",
        ]
        assert client.ok("FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])")[0] == (
            b"* 1 FETCH (BINARY.SIZE[2] 8 BINARY[2] ~{8}\r\n%b)\r\n" % BINARY_PART
        )
        # A message without NUL is stored as it came, byte for byte.
        _append(client, "INBOX", QUOTED_PRINTABLE)
        client.ok("NOOP")
        assert client.ok("FETCH 2 (BODY.PEEK[])")[0] == (
            b"* 2 FETCH (BODY[] {%d}\r\n%b)\r\n" % (len(QUOTED_PRINTABLE), QUOTED_PRINTABLE)
        )
    finally:
        client.close()


ATTACHED = (
    b"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
    b"Subject: Transfert\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: Laboratoire <labo@labo-demo.mssante.fr>\r\n"
    b"Subject: Resultat\r\nX-Dossier: 42\r\n\r\nCorps du message joint.\r\n"
)


def test_h1_rfc3501_6_4_5_sections_of_a_message_rfc822_body(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        _append(client, "INBOX", ATTACHED)
        client.ok("EXAMINE INBOX")
        header = (
            b"From: Laboratoire <labo@labo-demo.mssante.fr>\r\n"
            b"Subject: Resultat\r\nX-Dossier: 42\r\n\r\n"
        )
        assert client.ok("FETCH 1 (BODY.PEEK[1.HEADER])")[0] == (
            b"* 1 FETCH (BODY[1.HEADER] {%d}\r\n%b)\r\n" % (len(header), header)
        )
        assert client.ok("FETCH 1 (BODY.PEEK[1.TEXT])")[0] == (
            b"* 1 FETCH (BODY[1.TEXT] {25}\r\nCorps du message joint.\r\n)\r\n"
        )
        assert client.ok("FETCH 1 (BODY.PEEK[1.HEADER.FIELDS (SUBJECT X-DOSSIER)])")[0] == (
            b"* 1 FETCH (BODY[1.HEADER.FIELDS (SUBJECT X-DOSSIER)] {36}\r\n"
            b"Subject: Resultat\r\nX-Dossier: 42\r\n\r\n)\r\n"
        )
    finally:
        client.close()


def test_h1_rfc3501_6_4_5_header_fields_section_echoed_as_the_client_wrote_it(
    imap_gateway: ServedGateway,
) -> None:
    """imaptest fetch-body: the response names the section the client asked for, duplicates,
    order and quoting included, and the header lines are still the ones named."""
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        _append(client, "INBOX", PLAIN)
        client.ok("EXAMINE INBOX")
        sender = b"From: Dr Paul Bernard <paul.bernard@labo-demo.mssante.fr>\r\n"
        assert _tagless(client.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (from from)])")) == [
            b"* 1 FETCH (BODY[HEADER.FIELDS (FROM FROM)] {%d}\r\n%b\r\n)\r\n"
            % (len(sender) + 2, sender),
            b"OK FETCH completed.\r\n",
        ]
        ordered = sender + b"Subject: Bilan\r\n\r\n"  # lines in the message's order
        assert client.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (subject from)]")[0] == (
            b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {%d}\r\n%b)\r\n"
            % (len(ordered), ordered)
        )
        # Two items differing only by their list are two answers, in the order asked.
        assert client.ok(
            'FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (date date "x y")]<0.5> '
            "BODY.PEEK[HEADER.FIELDS.NOT (DATE)])"
        )[0] == (
            b'* 1 FETCH (BODY[HEADER.FIELDS.NOT (DATE DATE "X Y")]<0> {5}\r\nFrom:'
            b" BODY[HEADER.FIELDS.NOT (DATE)] {%d}\r\n%b)\r\n" % (len(ordered), ordered)
        )
    finally:
        client.close()


GROUPS = (
    b"From: <paul.bernard (labo) @ (demo) labo-demo.mssante.fr>\r\n"
    b"To: equipe: a@hopital.example, b@hopital.example;, vide:;\r\n"
    b"Cc: <@relais.example:claire@hopital.example>\r\n"
    b"Subject: Groupes\r\n\r\nTexte.\r\n"
)


def test_h1_rfc3501_7_4_2_envelope_groups_routes_and_comments(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        _append(client, "INBOX", GROUPS)
        _append(client, "INBOX", PLAIN)
        client.ok("EXAMINE INBOX")
        assert client.ok("FETCH 1 (ENVELOPE)")[0] == (
            b'* 1 FETCH (ENVELOPE (NIL "Groupes"'
            b' ((NIL NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b' ((NIL NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b' ((NIL NIL "paul.bernard" "labo-demo.mssante.fr"))'
            b' ((NIL NIL "equipe" NIL)(NIL NIL "a" "hopital.example")'
            b'(NIL NIL "b" "hopital.example")(NIL NIL NIL NIL)'
            b'(NIL NIL "vide" NIL)(NIL NIL NIL NIL))'
            b' ((NIL "@relais.example" "claire" "hopital.example")) NIL NIL NIL))\r\n'
        )
        # SEARCH FROM finds the address its comments split (RFC 3501 §6.4.4).
        assert client.ok("SEARCH FROM paul.bernard@labo-demo.mssante.fr")[0] == (
            b"* SEARCH 1 2\r\n"
        )
        assert client.ok("SEARCH TO b@hopital.example")[0] == b"* SEARCH 1\r\n"
    finally:
        client.close()


# -- UNSELECT (RFC 3691) ------------------------------------------------------------------


def test_h1_rfc3691_unselect_leaves_the_folder_without_expunging(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        assert b" UNSELECT" in client.ok("CAPABILITY")[0]
        _append(client, "INBOX", PLAIN, r"\Deleted")
        client.ok("SELECT INBOX")
        assert _tagless(client.ok("UNSELECT")) == [b"OK UNSELECT completed.\r\n"]
        assert _tagless(client.command("FETCH 1 (FLAGS)")) == [
            b"BAD FETCH: Must select a mailbox first.\r\n"
        ]
        assert client.ok("STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)\r\n"
        assert _tagless(client.command("UNSELECT")) == [
            b"BAD UNSELECT: Must select a mailbox first.\r\n"
        ]
    finally:
        client.close()


# -- ESEARCH (RFC 4731), CONDSTORE enabled by a command (RFC 7162 §3.1) -------------------


def test_h1_rfc4731_search_return_options(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        assert b" ESEARCH" in client.ok("CAPABILITY")[0]
        for flags in (r"\Seen", "", r"\Seen", "", r"\Seen"):
            _append(client, "INBOX", PLAIN, flags)
        client.ok("SELECT INBOX")
        tag = b"t9"  # the ninth command of this client
        assert client.ok("SEARCH RETURN () SEEN") == [
            b'* ESEARCH (TAG "t9") ALL 1,3,5\r\n',
            tag + b" OK SEARCH completed.\r\n",
        ]
        assert client.ok("UID SEARCH RETURN (MIN MAX COUNT) UNSEEN")[0] == (
            b'* ESEARCH (TAG "t10") UID MIN 2 MAX 4 COUNT 2\r\n'
        )
        assert client.ok("SEARCH RETURN (COUNT ALL) 2:4")[0] == (
            b'* ESEARCH (TAG "t11") COUNT 3 ALL 2:4\r\n'
        )
        assert client.ok("SEARCH RETURN (MIN COUNT) KEYWORD $Nothing")[0] == (
            b'* ESEARCH (TAG "t12") COUNT 0\r\n'
        )
        assert _tagless(client.command("SEARCH RETURN (SAVE) ALL")) == [
            b"BAD SEARCH: Invalid arguments.\r\n"
        ]
        # Enabling CONDSTORE with a command while selected tells the HIGHESTMODSEQ.
        fetched = _tagless(client.ok("FETCH 1 (MODSEQ)"))
        assert fetched[0] == b"* 1 FETCH (MODSEQ (2))\r\n"
        assert re.fullmatch(
            rb"\* OK \[HIGHESTMODSEQ \d+\] Highest modification sequence\.\r\n", fetched[1]
        )
        assert client.ok("SEARCH RETURN (MAX) MODSEQ 1 SEEN")[0] == (
            b'* ESEARCH (TAG "t15") MAX 5 MODSEQ 6\r\n'
        )
    finally:
        client.close()


# -- LIST-STATUS (RFC 5819) ---------------------------------------------------------------


def test_h1_rfc5819_list_return_status(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        assert b" LIST-STATUS" in client.ok("CAPABILITY")[0]
        client.ok("CREATE Dossiers/Bilans")
        _append(client, "INBOX", PLAIN, r"\Seen")
        _append(client, "INBOX", PLAIN)
        _append(client, "Dossiers/Bilans", PLAIN)
        assert _tagless(client.ok('LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')) == [
            b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
            b"* STATUS INBOX (MESSAGES 2 UNSEEN 1)\r\n",
            b'* LIST (\\HasChildren) "/" Dossiers\r\n',
            b"* STATUS Dossiers (MESSAGES 0 UNSEEN 0)\r\n",
            b'* LIST (\\HasNoChildren) "/" Dossiers/Bilans\r\n',
            b"* STATUS Dossiers/Bilans (MESSAGES 1 UNSEEN 1)\r\n",
            b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
            b"* STATUS Drafts (MESSAGES 0 UNSEEN 0)\r\n",
            b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
            b"* STATUS Sent (MESSAGES 0 UNSEEN 0)\r\n",
            b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
            b"* STATUS Trash (MESSAGES 0 UNSEEN 0)\r\n",
            b"OK LIST completed.\r\n",
        ]
        # No STATUS for a name that cannot be selected (RFC 5819 §2).
        assert _tagless(client.ok('LIST "" "" RETURN (STATUS (MESSAGES))')) == [
            b'* LIST (\\Noselect) "/" ""\r\n',
            b"OK LIST completed.\r\n",
        ]
        assert _tagless(client.ok('LIST "" "INBOX" RETURN ()')) == [
            b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
            b"OK LIST completed.\r\n",
        ]
        # An unknown return option is a BAD (RFC 5258 §3.2; LIST-EXTENDED: test_list_extended).
        refused = client.command('LIST "" "*" RETURN (IMAPTEST)')
        assert refused[-1].split(b" ", 2)[1] == b"BAD" and len(refused) == 1
    finally:
        client.close()
