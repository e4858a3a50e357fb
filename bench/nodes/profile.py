"""Where one node's CPU goes per inbound message, with ``--mailboxes`` patient mailboxes.

Companion of ``run.py`` (issue 18): the same home, seed and load as one of its lines (one
node, ``--warm`` messages first, then ``--messages``), with ``py-spy`` sampling the node
during the measured load. Prints the CPU milliseconds per message of the node and of its
PostgreSQL backends, the share of samples inside a few functions of the delivery path, and
the functions with the most samples of their own. Run it with 1,000 and with 1,000,000
mailboxes to see what the larger directory costs.

Run from the repository root: ``.venv/bin/python bench/nodes/profile.py --mailboxes 1000000
--py-spy /path/to/py-spy`` (``pip install --target DIR py-spy``; not a project dependency).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psycopg
import run  # bench/nodes/run.py, beside this file

WATCHED = (
    "handle_RCPT",
    "resolve_recipient",
    "recipient_account",
    "door_state",
    "bal_type_of",
    "handle_DATA",
    "deliver",
    "_inbox_of",
    "ensure_folders",
    "append_to_folder",
    "_record_conversation",
    "_record_contact",
    "seal_structure",
    "run_one",
)


def frames(stack: str) -> list[str]:
    """The function names of a collapsed stack (``Class.fn (file:line);…``), class dropped."""
    return [frame.split(" (", 1)[0].rsplit(".", 1)[-1] for frame in stack.split(";")]


def summary(collapsed: str, messages: int) -> str:
    """Inclusive shares of :data:`WATCHED`, and the top functions by samples of their own."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        names = frames(stack)
        if names and names[-1] in ("select", "poll", "epoll_wait", "wait"):
            continue  # waiting (for a socket, for PostgreSQL's answer, for work): not CPU
        total += count
        for name in set(names):
            inclusive[name] += count
        own[stack.split(";")[-1]] += count
    lines = [f"{total} samples outside waits over {messages} messages", "", "inclusive share:"]
    lines += [f"  {name}: {inclusive[name] / max(total, 1):.1%}" for name in WATCHED]
    lines += ["", "own samples, top 25:"]
    lines += [f"  {count / max(total, 1):.1%} {name}" for name, count in own.most_common(25)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--py-spy", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="keep the collapsed stacks in this file")
    parser.add_argument("--revision", default="HEAD")
    parser.add_argument("--overlay", action="append", default=[])
    parser.add_argument("--summarise", type=Path, help="only summarise these collapsed stacks")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summary(args.summarise.read_text(), args.messages))
        return 0

    schema = f"bench_profile_{secrets.token_hex(4)}"
    application = f"bench-nodes-{schema}"
    plain = args.database.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    url = (
        f"postgresql+psycopg://{plain.split('://', 1)[1]}?options=-csearch_path%3D{schema}"
        f"&application_name={application}"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    home = root / "home"
    stacks = root / "stacks.txt"
    try:
        source, version = run.snapshot(root, args.revision, args.overlay)
        env = run.environment(source, url, "127.0.0.1", {})
        subprocess.run(
            [*run.CADUCEE, "init", "--demo", "--home", str(home)],
            env=env,
            cwd=source,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sender = json.loads((home / "demo" / "credentials.json").read_text())["peer"][
            "professional"
        ]
        addresses = run.seed_patients(home, url, schema, 0, args.mailboxes)
        run.log(f"seeded {args.mailboxes:,} mailboxes ({version})")
        with run.nodes(source, home, url, 1) as running:
            target = [(running[0].host, running[0].ports["smtp"])]
            run.load(target, sender, addresses, args.warm, args.sessions)
            spy = subprocess.Popen(
                [
                    str(args.py_spy),
                    "record",
                    "--pid",
                    str(running[0].process.pid),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(stacks),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            meter = run.CpuMeter(plain, application, running)
            meter.start()
            result = run.load(target, sender, addresses, args.messages, args.sessions)
            on_nodes, on_database = meter.stop()
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        collapsed = stacks.read_text() if stacks.exists() else ""
        if args.out:
            args.out.write_text(collapsed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    sent = int(result["messages"])
    print(
        f"# {args.mailboxes:,} mailboxes: {result['per_second']:.1f} msg/s; CPU per message:"
        f" node {1000 * on_nodes / sent:.1f} ms, PostgreSQL {1000 * on_database / sent:.1f} ms\n"
    )
    print(summary(collapsed, sent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
