"""Issue 15, H1: SORT and THREAD (RFC 5256), as byte-exact transcripts and unit tests.

The transcripts run over real TLS against the served gateway; the unit tests pin the
base-subject rules (§2.1) and the REFERENCES steps (§2.2) on hand-made messages.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caducee.gateway.imap.sorting import (
    Sortable,
    base_subject,
    ordered_subject,
    references,
    render_threads,
    sort,
)
from caducee.mailboxes.imap_structure import parse_message
from tests.gateway.imap.accounts import new_professional
from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _tagless(lines: list[bytes]) -> list[bytes]:
    last = lines[-1]
    return [*lines[:-1], last[last.index(b" ") + 1 :]]


def _mail(
    subject: str,
    date: str,
    *,
    sender: str = "paul.bernard@labo-demo.mssante.fr",
    to: str = "zoe@patient.mssante.fr",
    message_id: str | None = None,
    references_: str | None = None,
    body: str = "Texte.",
) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}"]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    if references_:
        lines.append(f"References: {references_}")
    return ("\r\n".join(lines) + f"\r\n\r\n{body}\r\n").encode()


# Six messages, appended in this order (sequence numbers 1 to 6).
MAILS = [
    _mail("Bilan", "Tue, 03 Jun 2025 10:00:00 +0200", message_id="<1@labo>", body="x" * 300),
    _mail(
        "Re: Bilan",
        "Wed, 04 Jun 2025 09:00:00 +0000",
        sender="alice@hopital.fr",
        message_id="<2@labo>",
        references_="<1@labo>",
    ),
    _mail(
        "Ordonnance",
        "Mon, 02 Jun 2025 10:00:00 +0200",
        sender="bob@cabinet.fr",
        to="aline@patient.mssante.fr",
        message_id="<3@labo>",
    ),
    _mail(
        "RE: [labo] Bilan",
        "Thu, 05 Jun 2025 10:00:00 +0200",
        message_id="<4@labo>",
        references_="<1@labo> <2@labo>",
        body="y" * 100,
    ),
    _mail("Fwd: Ordonnance", "Fri, 06 Jun 2025 10:00:00 +0200", message_id="<5@labo>"),
    _mail(
        "Compte rendu",
        "not a date",
        sender="Zed <zed@labo.fr>",
        message_id="<6@labo>",
        references_="<absent@labo>",
    ),
]


def test_h1_rfc5256_sort_and_thread_transcript(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        capabilities = client.ok("CAPABILITY")[0]
        assert b" SORT " in capabilities
        assert b" THREAD=ORDEREDSUBJECT THREAD=REFERENCES" in capabilities
        client.ok("CREATE Tri")
        for mail in MAILS:
            client.ok(f"APPEND Tri {{{len(mail)}+}}\r\n".encode() + mail)
        client.ok("SELECT Tri")
        # DATE: Date: in UTC (6 has none readable: its INTERNALDATE, now, comes last).
        assert _tagless(client.ok("SORT (DATE) UTF-8 ALL")) == [
            b"* SORT 3 1 2 4 5 6\r\n",
            b"OK SORT completed.\r\n",
        ]
        assert _tagless(client.ok("SORT (REVERSE DATE) UTF-8 ALL")) == [
            b"* SORT 6 5 4 2 1 3\r\n",
            b"OK SORT completed.\r\n",
        ]
        # SUBJECT: base subjects, ties by sequence number; then reversed ARRIVAL.
        assert client.ok("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 1 2 4 6 3 5\r\n"
        assert client.ok("SORT (SUBJECT REVERSE ARRIVAL) UTF-8 ALL")[0] == (
            b"* SORT 4 2 1 6 5 3\r\n"
        )
        # FROM and TO: the mailbox part of the first address, ASCII case folded.
        assert client.ok("SORT (FROM) UTF-8 ALL")[0] == b"* SORT 2 3 1 4 5 6\r\n"
        assert client.ok("SORT (TO SIZE) UTF-8 ALL")[0] == b"* SORT 3 6 2 5 4 1\r\n"
        assert client.ok("SORT (CC) UTF-8 ALL")[0] == b"* SORT 1 2 3 4 5 6\r\n"
        # Search keys restrict; UID SORT answers UIDs.
        assert client.ok("UID SORT (REVERSE SIZE) UTF-8 SUBJECT bilan")[0] == (b"* SORT 1 4 2\r\n")
        assert client.ok("SORT (DATE) US-ASCII KEYWORD $Nothing")[0] == b"* SORT\r\n"
        assert _tagless(client.ok("THREAD ORDEREDSUBJECT UTF-8 ALL")) == [
            b"* THREAD (3 5)(1 (2)(4))(6)\r\n",
            b"OK THREAD completed.\r\n",
        ]
        assert _tagless(client.ok("THREAD REFERENCES UTF-8 ALL")) == [
            b"* THREAD (3 5)(1 2 4)(6)\r\n",
            b"OK THREAD completed.\r\n",
        ]
        assert client.ok("UID THREAD REFERENCES UTF-8 NOT SUBJECT ordonnance")[0] == (
            b"* THREAD (1 2 4)(6)\r\n"
        )
        for bad in (
            "SORT (NOTAKEY) UTF-8 ALL",
            "SORT DATE UTF-8 ALL",
            "SORT (DATE) UTF-8",
            "THREAD NOSUCHALGORITHM UTF-8 ALL",
        ):
            refused = client.command(bad)
            assert len(refused) == 1 and refused[-1].split(b" ", 2)[1] == b"BAD", bad
        assert _tagless(client.command("SORT (DATE) X-NO-SUCH-CHARSET ALL")) == [
            b"NO [BADCHARSET (UTF-8 US-ASCII ISO-8859-1)] Unknown charset.\r\n"
        ]
        assert _tagless(client.command("THREAD REFERENCES X-NO-SUCH-CHARSET ALL")) == [
            b"NO [BADCHARSET (UTF-8 US-ASCII ISO-8859-1)] Unknown charset.\r\n"
        ]
    finally:
        client.close()


def test_h1_rfc5256_sort_needs_a_selected_folder(imap_gateway: ServedGateway) -> None:
    account = new_professional(imap_gateway)
    client = _login(imap_gateway, account)
    try:
        assert _tagless(client.command("SORT (DATE) UTF-8 ALL")) == [
            b"BAD SORT: Must select a mailbox first.\r\n"
        ]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Re: Fwd: [PATCH] bilan (fwd)", "bilan", True),
        ("[Fwd: re: Ordonnance]", "Ordonnance", True),
        ("  Re:   RE: x  ", "x", True),
        ("[labo] Bilan", "Bilan", False),
        ("[labo]", "[labo]", False),
        ("[a][b] Re: [c] RE: sujet", "sujet", True),
        ("Fw: a", "a", True),
        ("Résultat", "Résultat", False),
        ("=?utf-8?q?R=C3=A9sultat?=", "Résultat", False),
        ("Réponse", "Réponse", False),
        ("", "", False),
    ],
)
def test_h1_rfc5256_2_1_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def _item(number: int, raw: bytes, day: int = 1) -> Sortable:
    return Sortable(
        number, number, datetime(2025, 1, day, tzinfo=UTC), len(raw), parse_message(raw)
    )


def test_h1_rfc5256_2_2_references_dummies_and_subjects() -> None:
    date = "Mon, 02 Jun 2025 10:00:00 +0200"
    items = [
        _item(1, _mail("a", date, message_id="<1@x>")),
        _item(2, _mail("b", date, references_="<gone@x>")),
        _item(3, _mail("Re: b", date, message_id="<3@x>", references_="<gone@x>")),
        _item(4, _mail("c", date, message_id="<4@x>")),
        _item(5, _mail("c", date, message_id="<4@x>")),  # a duplicate Message-ID
        _item(6, _mail("Re: a", date, message_id="<6@x>")),  # no References: by subject
        _item(7, _mail("loop", date, message_id="<7@x>", references_="<7@x>")),
    ]
    # 2 and 3 share a dummy parent (kept: two children at the top); 4 and 5 have the
    # same base subject and neither is a reply: siblings under a dummy; 6 is a reply
    # to 1's subject: its child; a message referring to itself makes no loop.
    assert render_threads(references(items)) == b"(1 6)((2)(3))((4)(5))(7)"
    assert render_threads(ordered_subject(items)) == b"(1 6)(2 3)(4 5)(7)"
    assert sort(items, [(b"SUBJECT", True)]) == [7, 4, 5, 2, 3, 1, 6]


_IDS = st.sampled_from(["<1@x>", "<2@x>", "<3@x>", "<4@x>", "<5@x>", "<6@x>"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), _IDS),
            st.lists(_IDS, max_size=4),
            st.sampled_from(["a", "Re: a", "b", "Fwd: b", "[x] a", ""]),
            st.integers(min_value=1, max_value=28),
        ),
        max_size=12,
    )
)
def test_h1_rfc5256_threads_name_every_message_once(
    mails: list[tuple[str | None, list[str], str, int]],
) -> None:
    """Duplicate ids, self references and cycles: every message appears exactly once."""
    items = [
        _item(
            n,
            _mail(
                subject,
                f"Mon, {day:02d} Jun 2025 10:00:00 +0000",
                message_id=message_id,
                references_=" ".join(refs) or None,
            ),
            day,
        )
        for n, (message_id, refs, subject, day) in enumerate(mails, start=1)
    ]
    for roots in (references(items), ordered_subject(items)):
        rendered = render_threads(roots).decode()
        numbers = [int(n) for n in rendered.replace("(", " ").replace(")", " ").split()]
        assert sorted(numbers) == list(range(1, len(items) + 1))
