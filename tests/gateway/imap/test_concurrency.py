"""Issue 15, H1: every session's view of a folder stays consistent while others change it.

imaptest's stress run found sessions told inconsistent things: MODSEQ going backwards,
keywords in FETCH before any FLAGS announced them, the same UID with different data,
``ENVELOPE NIL`` for a message another session had just expunged. Here several real
sessions (TLS, raw IMAP) append, flag, expunge and fetch the same folder while others
read it, and every response stream is replayed against the rules of RFC 3501 §7.4.1
and §2.3.1.1 and RFC 7162 §3.1:

* ``EXISTS`` never announces fewer messages than the client knows (only ``EXPUNGE``
  removes), ``EXPUNGE`` and ``FETCH`` name existing sequence numbers;
* a sequence number's UID never changes while it exists; UIDs ascend with sequence
  numbers;
* a message's ``MODSEQ`` never goes back; its size and header never change;
* a keyword appears in ``FLAGS`` of a ``FETCH`` only after an untagged ``FLAGS`` listed it;
* at the end every session's UID list is the folder's.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field

from tests.gateway.imap.accounts import new_professional
from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript

WRITERS = 3
READERS = 3
OPERATIONS = 40

_EXISTS = re.compile(rb"\* (\d+) EXISTS\r\n")
_EXPUNGE = re.compile(rb"\* (\d+) EXPUNGE\r\n")
_FLAGS_LIST = re.compile(rb"\* FLAGS \(([^)]*)\)\r\n")
_FETCH = re.compile(rb"\* (\d+) FETCH \(")
_UID = re.compile(rb"[( ]UID (\d+)")
_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_FETCH_FLAGS = re.compile(rb"[( ]FLAGS \(([^)]*)\)")
_SUBJECT = re.compile(rb"Subject: (\S+)")
_SEARCH = re.compile(rb"\* SEARCH((?: \d+)*)\r\n")


@dataclass
class Facts:
    """What any session was told about a UID: it must never change (shared by all sessions)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sizes: dict[int, int] = field(default_factory=dict)
    subjects: dict[int, bytes] = field(default_factory=dict)

    def agree(self, table: dict[int, object], uid: int, value: object) -> str | None:
        with self.lock:
            known = table.setdefault(uid, value)
        if known != value:
            return f"UID {uid} was {known!r}, now {value!r}"
        return None


class View:
    """One session's view of its selected folder, rebuilt from what the server sent."""

    def __init__(self, name: str, facts: Facts) -> None:
        self.name = name
        self.facts = facts
        self.uids: list[int | None] = []
        self.modseqs: dict[int, int] = {}
        self.keywords: set[bytes] = set()
        self.errors: list[str] = []

    def fail(self, line: bytes, why: str) -> None:
        self.errors.append(f"{self.name}: {why}: {line[:200]!r}")

    def feed(self, lines: list[bytes]) -> None:
        for line in lines:
            self.line(line)

    def line(self, line: bytes) -> None:
        if (match := _FLAGS_LIST.fullmatch(line)) is not None:
            self.keywords = {f for f in match.group(1).split() if not f.startswith(b"\\")}
        elif (match := _EXISTS.fullmatch(line)) is not None:
            count = int(match.group(1))
            if count < len(self.uids):
                self.fail(line, f"EXISTS below the {len(self.uids)} messages known")
            self.uids += [None] * (count - len(self.uids))
        elif (match := _EXPUNGE.fullmatch(line)) is not None:
            seq = int(match.group(1))
            if not 1 <= seq <= len(self.uids):
                self.fail(line, "EXPUNGE of a sequence number that does not exist")
            else:
                del self.uids[seq - 1]
        elif (match := _FETCH.match(line)) is not None:
            self.fetch(int(match.group(1)), line)
        elif (match := _SEARCH.fullmatch(line)) is not None and any(
            int(n) > len(self.uids) for n in match.group(1).split()
        ):
            self.fail(line, "SEARCH names a sequence number that does not exist")

    def fetch(self, seq: int, line: bytes) -> None:
        if not 1 <= seq <= len(self.uids):
            self.fail(line, f"FETCH of sequence number {seq} of {len(self.uids)}")
            return
        uid_match = _UID.search(line)
        uid = self.uids[seq - 1]
        if uid_match is not None:
            told = int(uid_match.group(1))
            if uid is not None and uid != told:
                self.fail(line, f"sequence number {seq} was UID {uid}")
            uid = self.uids[seq - 1] = told
            known = [u for u in self.uids if u is not None]
            if known != sorted(set(known)):
                self.fail(line, "UIDs do not ascend with sequence numbers")
        if (flags := _FETCH_FLAGS.search(line)) is not None:
            for flag in flags.group(1).split():
                if not flag.startswith(b"\\") and flag not in self.keywords:
                    self.fail(line, f"keyword {flag!r} before FLAGS announced it")
        if uid is None:
            return
        if (modseq := _MODSEQ.search(line)) is not None:
            value = int(modseq.group(1))
            if value < self.modseqs.get(uid, 0):
                self.fail(line, f"MODSEQ of UID {uid} went back from {self.modseqs[uid]}")
            self.modseqs[uid] = max(value, self.modseqs.get(uid, 0))
        if (size := _SIZE.search(line)) is not None:
            problem = self.facts.agree(self.facts.sizes, uid, int(size.group(1)))  # type: ignore[arg-type]
            if problem:
                self.fail(line, problem)
        if (subject := _SUBJECT.search(line)) is not None:
            problem = self.facts.agree(self.facts.subjects, uid, subject.group(1))  # type: ignore[arg-type]
            if problem:
                self.fail(line, problem)


FETCH_ITEMS = "(UID FLAGS MODSEQ RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"


class Session:
    """A logged-in raw client whose every response goes through its :class:`View`."""

    def __init__(self, gateway: ServedGateway, account: Account, name: str, facts: Facts) -> None:
        self.client = ImapTranscript(
            "127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context(), timeout=60
        )
        self.client.line()
        self.client.ok(f'LOGIN "{account.address}" "{account.password}"')
        self.view = View(name, facts)

    def run(self, command: str | bytes) -> list[bytes]:
        lines = self.client.command(command)
        self.view.feed(lines)
        status = lines[-1].split(b" ", 2)[1]
        if status != b"OK":
            self.view.fail(lines[-1], "command refused")
        return lines

    def uid_list(self) -> list[int]:
        lines = self.run("UID FETCH 1:* (UID)")
        return [int(m.group(1)) for line in lines if (m := _UID.search(line))]


def _message(writer: int, n: int) -> bytes:
    padding = "x" * (n * 7 % 50)
    return (
        f"From: w{writer}@hopital-demo.mssante.fr\r\nSubject: w{writer}-{n}\r\n"
        f"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n\r\nCorps {padding}\r\n"
    ).encode()


def _writer(session: Session, number: int) -> None:
    rng = random.Random(number)
    session.run("SELECT INBOX (CONDSTORE)")
    for n in range(OPERATIONS):
        choice = rng.random()
        count = len(session.view.uids)
        if choice < 0.35 or count == 0:
            body = _message(number, n)
            session.run(f"APPEND INBOX {{{len(body)}+}}\r\n".encode() + body)
        elif choice < 0.55:
            keyword = f"$Dossier{rng.randrange(6)}"
            session.run(f"STORE {rng.randint(1, count)} +FLAGS ({keyword})")
        elif choice < 0.7:
            uid = session.view.uids[rng.randint(1, count) - 1]
            if uid is None:
                session.run(f"FETCH 1:* {FETCH_ITEMS}")
                continue
            session.run(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
            lines = session.run("EXPUNGE")
            if uid in session.view.uids:  # RFC 3501 §6.4.3: reported before the tagged OK
                session.view.fail(lines[-1], f"UID {uid} still shown after its EXPUNGE")
        elif choice < 0.9:
            session.run(f"FETCH 1:* {FETCH_ITEMS}")
        else:
            session.run("NOOP")


def _reader(session: Session, examine: bool, writers_done: threading.Event) -> None:
    session.run("EXAMINE INBOX (CONDSTORE)" if examine else "SELECT INBOX (CONDSTORE)")
    rounds = 0
    while not writers_done.is_set() or rounds < 5:
        session.run("NOOP")
        session.run(f"FETCH 1:* {FETCH_ITEMS}")
        session.run(f"UID FETCH 1:* {FETCH_ITEMS}")
        session.run("SEARCH ALL")
        rounds += 1


def test_h1_issue15_concurrent_sessions_keep_consistent_views(
    imap_gateway: ServedGateway,
) -> None:
    account = new_professional(imap_gateway)
    facts = Facts()
    writers = [Session(imap_gateway, account, f"writer{n}", facts) for n in range(WRITERS)]
    readers = [Session(imap_gateway, account, f"reader{n}", facts) for n in range(READERS)]
    seed = writers[0]
    for n in range(5):  # something to read from the start
        body = _message(9, n)
        seed.run(f"APPEND INBOX {{{len(body)}+}}\r\n".encode() + body)
    writers_done = threading.Event()
    failures: list[BaseException] = []

    def guarded(target: object, *args: object) -> threading.Thread:
        def body() -> None:
            try:
                target(*args)  # type: ignore[operator]
            except BaseException as error:  # reported below, with the views
                failures.append(error)

        return threading.Thread(target=body, daemon=True)

    writer_threads = [guarded(_writer, s, n) for n, s in enumerate(writers)]
    reader_threads = [guarded(_reader, s, n == 0, writers_done) for n, s in enumerate(readers)]
    for thread in writer_threads + reader_threads:
        thread.start()
    try:
        for thread in writer_threads:
            thread.join(timeout=300)
        writers_done.set()
        for thread in reader_threads:
            thread.join(timeout=300)
        assert not failures, failures
        assert not any(t.is_alive() for t in writer_threads + reader_threads)
        # Every session, brought up to date, shows the folder as a new session sees it.
        final = Session(imap_gateway, account, "final", facts)
        final.run("EXAMINE INBOX")
        truth = final.uid_list()
        assert truth == sorted(truth)
        for session in writers + readers:
            session.run("NOOP")
            assert session.uid_list() == truth, session.view.name
            assert session.view.uids == truth, session.view.name
        errors = [error for s in [*writers, *readers, final] for error in s.view.errors]
        assert errors == [], "\n".join(errors[:20])
        # The run did exercise concurrency: messages came and went, keywords were set.
        assert len(facts.sizes) > len(truth) and writers[0].view.keywords
    finally:
        for session in writers + readers:
            session.client.close()


def test_h1_issue15_simultaneous_selects_after_a_change_show_the_whole_folder(
    imap_gateway: ServedGateway,
) -> None:
    """SELECTs that start together, after another session changed the folder, each show
    every message: a SELECT reads only the changes since the process's held copy of the
    folder, and must apply them to that copy, not to a newer one another SELECT just put
    in its place (a session then saw the folder without its unchanged messages)."""
    account = new_professional(imap_gateway)
    facts = Facts()
    writer = Session(imap_gateway, account, "writer", facts)
    for n in range(6):
        body = _message(7, n)
        writer.run(f"APPEND INBOX {{{len(body)}+}}\r\n".encode() + body)
    writer.run("SELECT INBOX")
    selectors = [Session(imap_gateway, account, f"selector{n}", facts) for n in range(4)]
    try:
        for round_ in range(12):
            writer.run(f"STORE {round_ % 6 + 1} +FLAGS ($Tour{round_})")  # a newer modseq
            start = threading.Barrier(len(selectors))
            told: dict[str, list[bytes]] = {}

            def select(
                session: Session,
                start: threading.Barrier = start,
                told: dict[str, list[bytes]] = told,
            ) -> None:
                start.wait(timeout=30)
                session.view = View(session.view.name, facts)
                told[session.view.name] = session.run("SELECT INBOX")

            threads = [threading.Thread(target=select, args=(s,)) for s in selectors]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            for name, lines in told.items():
                assert b"* 6 EXISTS\r\n" in lines, (round_, name, lines)
            for session in selectors:
                assert session.uid_list() == writer.uid_list(), session.view.name
    finally:
        for session in [writer, *selectors]:
            session.client.close()
