"""Issue 15, H1: the command parser, fed anything, ends with a command or a BAD.

Property tests (hypothesis) over the parser the gateway uses (pymap's, with our
commands, our mailbox-name codec and name patterns installed): whatever a client sends
after a tag, parsing terminates, raises nothing, and gives either a command to run or
an :class:`InvalidCommand` (a tagged ``BAD``). Lines are drawn from IMAP's own
punctuation so that parentheses, literals, quoted strings, sequence sets, sections and
modified UTF-7 shifts are exercised, not only noise.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pymap.parsing import Params
from pymap.parsing.command import Command
from pymap.parsing.commands import InvalidCommand
from pymap.parsing.state import ExpectContinuation, ParsingInterrupt

from caducee.gateway.imap.commands import caducee_commands
from caducee.gateway.imap.names import UNUSABLE_NAME, install

COMMANDS = [
    b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE",
    b"LIST", b"LSUB", b"STATUS", b"APPEND", b"FETCH", b"UID FETCH", b"STORE", b"UID STORE",
    b"SEARCH", b"UID SEARCH", b"COPY", b"UID COPY", b"MOVE", b"UID MOVE", b"EXPUNGE",
    b"UID EXPUNGE", b"ENABLE", b"NAMESPACE", b"IDLE", b"NOOP", b"CHECK", b"CLOSE",
    b"LOGIN", b"AUTHENTICATE", b"ID", b"CAPABILITY", b"LOGOUT", b"STARTTLS", b"XYZZY",
]  # fmt: skip

TOKENS = st.sampled_from(
    [
        b" ", b"(", b")", b"[", b"]", b"{", b"}", b"<", b">", b'"', b"\\", b"~", b"*", b"%",
        b":", b",", b".", b"&", b"-", b"+", b"1", b"0", b"4294967295", b"99999999999999999999",
        b"{3}", b"{3+}", b"~{3+}", b"{0}", b"{99999999999}", b"BODY", b"BODY.PEEK",
        b"BINARY", b"HEADER.FIELDS", b"MIME", b"TEXT", b"FLAGS", b"\\Seen", b"$kw", b"UID",
        b"MODSEQ", b"CHANGEDSINCE", b"UNCHANGEDSINCE", b"CONDSTORE", b"NOT", b"OR", b"ALL",
        b"FROM", b"HEADER", b"INBOX", b"&Jjo!", b"&AOk-", b"&-", b"NIL", b"\x00", b"\x7f",
        b"\xe9", b"\r", b"\n",
    ]
)  # fmt: skip

ARGUMENTS = st.lists(st.one_of(TOKENS, st.binary(max_size=6)), max_size=24).map(b"".join)


def _parse(line: bytes) -> Command | ExpectContinuation:
    """The parsed command, or the continuation a synchronising literal asks for (the
    server then answers ``+`` after its literal limits, see ``test_literal_limits``, and
    parses again with the literal's bytes)."""
    install()  # what building a CaduceeImapConfig does
    try:
        command, _ = caducee_commands().parse(memoryview(line), Params())
    except ParsingInterrupt as interrupt:
        assert isinstance(interrupt.expected, ExpectContinuation)
        return interrupt.expected
    return command


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(COMMANDS), ARGUMENTS)
def test_h1_any_command_line_parses_to_a_command_or_bad(name: bytes, arguments: bytes) -> None:
    command = _parse(b"t1 " + name + b" " + arguments + b"\r\n")
    assert isinstance(command, Command | ExpectContinuation)
    if isinstance(command, InvalidCommand):
        assert command.tag == b"t1"


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_h1_any_bytes_parse_to_a_command_or_bad(data: bytes) -> None:
    assert isinstance(_parse(data + b"\r\n"), Command | ExpectContinuation)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40).filter(lambda b: b'"' not in b and b"\\" not in b))
def test_h1_any_quoted_mailbox_name_is_a_name_or_the_unusable_name(name: bytes) -> None:
    command = _parse(b't1 SELECT "' + name.replace(b"\r", b"").replace(b"\n", b"") + b'"\r\n')
    if isinstance(command, Command) and not isinstance(command, InvalidCommand):
        mailbox = getattr(command, "mailbox", "")
        assert isinstance(mailbox, str)
        assert mailbox == UNUSABLE_NAME or all(ord(char) >= 0x20 for char in mailbox)
