"""Issue 15, H1: malformed modified UTF-7 mailbox names (RFC 3501 §5.1.3).

pymap 0.36.7 loops forever on ``SELECT "&Jjo!"`` (the whole gateway freezes) and
ends the session with ``BYE [SERVERBUG]`` on other invalid names. Our codec
(``caducee.gateway.imap.names``) is bounded and strict: a malformed name names no
folder (``NO``; an empty ``OK`` for a LIST pattern, as Dovecot answers and imaptest
expects), and the session and the other protocols go on.
"""

from __future__ import annotations

import smtplib
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymap.parsing import Params
from pymap.parsing.commands import InvalidCommand

from caducee.gateway.imap.commands import caducee_commands
from caducee.gateway.imap.names import (
    UNUSABLE_NAME,
    MailboxNameError,
    decode_mailbox_name,
    encode_mailbox_name,
    install,
)
from tests.gateway.imap.transcript import ImapTranscript
from tests.harness.served import Account, ServedGateway

MALFORMED = [
    b"&Jjo!",  # the freeze of issue 15: '&' never closed by '-'
    b"&",
    b"abc&",
    b"&AGE-",  # printable US-ASCII ("a") in a base64 run
    b"&A-",  # truncated base64
    b"&AO-",  # non-zero padding bits
    b"&2D0-",  # unpaired UTF-16 surrogate
    b"&AAAA-",  # three octets: not UTF-16
    b"&AAA-",  # NUL: a control character (RFC 5198)
    b"&AAk-",  # TAB
    b"&AJ8-",  # a C1 control
    b"&====-",
    b"&*-",
]

# Text without surrogates and controls: every such name must survive encode -> decode.
NAMES = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)


# -- the codec ---------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_h1_decoder_terminates_and_raises_only_our_error(data: bytes) -> None:
    try:
        name = decode_mailbox_name(data)
    except MailboxNameError:
        return
    # What decodes is canonical enough to come back the same after a round trip.
    assert decode_mailbox_name(encode_mailbox_name(name)) == name


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=24).map(lambda tail: b"&" + tail.replace(b"-", b"")))
def test_h1_unclosed_shift_never_loops(data: bytes) -> None:
    with pytest.raises(MailboxNameError):
        decode_mailbox_name(data)


@settings(max_examples=2000, deadline=None)
@given(NAMES)
def test_h1_valid_names_round_trip(name: str) -> None:
    encoded = encode_mailbox_name(name)
    assert all(0x20 <= byte <= 0x7E for byte in encoded)
    assert decode_mailbox_name(encoded) == name


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"INBOX", "INBOX"),
        (b"&-", "&"),
        (b"Sant&AOk-", "Santé"),
        (b"&ZeVnLIqe-", "日本語"),
        (b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),  # RFC 3501 §5.1.3
        (b"&2D3eAQ-", "\U0001f601"),
    ],
)
def test_h1_rfc3501_examples_decode(raw: bytes, name: str) -> None:
    assert decode_mailbox_name(raw) == name
    assert encode_mailbox_name(name) == raw


def test_h1_controls_are_shifted_not_dropped() -> None:
    # pymap 0.36.7 encodes TAB as "&-", which reads back as "&"; ours shifts it (and a
    # client's name with a control character is refused, RFC 5198).
    assert encode_mailbox_name("a\tb") == b"a&AAk-b"


@pytest.mark.parametrize("raw", MALFORMED)
def test_h1_malformed_names_are_refused(raw: bytes) -> None:
    with pytest.raises(MailboxNameError):
        decode_mailbox_name(raw)


@pytest.mark.parametrize(
    "line",
    [
        b'SELECT "&Jjo!"\r\n',
        b"CREATE &Jjo!\r\n",
        b'RENAME INBOX "&A-"\r\n',
        b"STATUS &AO- (MESSAGES)\r\n",
        b'LIST "" "&Jjo!*"\r\n',
        b'LIST "&2D0-" "*"\r\n',
        b"APPEND &Jjo! {3+}\r\nabc\r\n",
    ],
)
def test_h1_pymap_parser_reads_a_malformed_name_as_the_unusable_name(line: bytes) -> None:
    install()  # what building a CaduceeImapConfig does
    cmd, _ = caducee_commands().parse(memoryview(b"t1 " + line), Params())
    assert not isinstance(cmd, InvalidCommand)
    names = [getattr(cmd, attribute, None) for attribute in ("mailbox", "ref_name", "filter")]
    names += [getattr(cmd, "from_mailbox", None), getattr(cmd, "to_mailbox", None)]
    assert UNUSABLE_NAME in names, names


# -- served --------------------------------------------------------------------------------


def _smtp_greets(gateway: ServedGateway) -> bytes:
    with smtplib.SMTP("127.0.0.1", gateway.ports["smtp"], timeout=5) as smtp:
        code, banner = smtp.noop()
        assert code == 250
        return banner


def test_h1_issue15_malformed_names_get_no_and_gateway_keeps_serving(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    # 1 s socket timeout: a freeze (issue 15) fails the test instead of hanging it.
    client = ImapTranscript(
        "127.0.0.1",
        imap_gateway.ports["imaps"],
        implicit_tls=imap_gateway.tls_context(),
        timeout=10,
    )
    try:
        client.line()  # greeting
        client.ok(f'LOGIN "{patient.address}" "{patient.password}"')
        client.sock.settimeout(1.0)
        commands = [
            b'SELECT "&Jjo!"',
            b"EXAMINE &AGE-",
            b'CREATE "Notes&Jjo!"',
            b'CREATE "&2D0-"',
            b'RENAME INBOX "&A-"',
            b'RENAME "&Jjo!" Archive',
            b"STATUS &AO- (MESSAGES)",
            b'LIST "" "&Jjo!*"',
            b'LSUB "&Jjo!" "*"',
            b'SUBSCRIBE "&"',
            b'DELETE "&Jjo"',
            b"APPEND &Jjo! {5+}\r\nhello",
        ]
        for text in commands:
            try:
                lines = client.command(text)
            except TimeoutError:
                pytest.fail(f"no answer within 1 s to {text!r}\n{client.dump()}")
            status = lines[-1].split(b" ", 2)[1]
            if text.startswith((b"LIST", b"LSUB")):
                # A pattern no name can match: an empty listing (as Dovecot answers).
                assert status == b"OK" and len(lines) == 1, client.dump()
            else:
                assert status in (b"NO", b"BAD"), client.dump()
            assert not any(line.startswith(b"* BYE") for line in lines), client.dump()
            # (pymap closes after 10 BADs in a row, bad_command_limit: keep the count low)
            client.ok("NOOP")
        # The session is still there and usable.
        client.ok("SELECT INBOX")
        lines = client.command('COPY 1:* "&Jjo!"')
        assert lines[-1].split(b" ", 2)[1] in (b"NO", b"BAD"), client.dump()
        client.ok("NOOP")
        client.ok("LOGOUT")
    finally:
        client.close()
    # The other protocols of the same process still answer.
    assert _smtp_greets(imap_gateway)
    with socket.create_connection(("127.0.0.1", imap_gateway.ports["smtp"]), timeout=1) as raw:
        assert raw.recv(512).startswith(b"220 ")
