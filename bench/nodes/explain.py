"""The plans PostgreSQL chose for every statement one node runs per inbound message.

Companion of ``run.py`` (issue 18): when the throughput with many mailboxes differs from the
throughput with few, this says whether a statement's plan is the cause. It seeds a schema as
``run.py`` does (``--mailboxes`` open patient spaces), starts one ``caducee serve`` whose
database sessions load ``auto_explain`` (``EXPLAIN ANALYZE`` of every statement, logged by
the server), sends ``--messages`` messages to recipients drawn among all the mailboxes, and
prints, for each distinct statement the node ran during the load, how often it ran, its mean
time and its last plan. Nothing is guessed from the code: these are the statements the
product sent, with the parameters it sent.

Run from the repository root, as the PostgreSQL server's log reader (``--server-log``):
``.venv/bin/python bench/nodes/explain.py --mailboxes 1000000``.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import run  # bench/nodes/run.py, beside this file

_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+ \[(\d+)\] ")
_DURATION = re.compile(r"LOG:  duration: ([\d.]+) ms  plan:")
_PLAN_OPTIONS = (
    "-csession_preload_libraries=auto_explain -cauto_explain.log_min_duration=0"
    " -cauto_explain.log_analyze=on -cauto_explain.log_buffers=on"
    " -cauto_explain.log_nested_statements=on -cauto_explain.log_format=json"
)


def entries(text: str) -> list[str]:
    """The server log's entries (an entry's continuation lines start with a tab)."""
    found: list[str] = []
    for line in text.splitlines():
        if _ENTRY.match(line) or not found:
            found.append(line)
        else:
            found[-1] += "\n" + line
    return found


def render(node: dict[str, Any], depth: int = 0) -> list[str]:
    """One line per plan node: type, relation and index, rows, time, buffers read from disk."""
    what = node["Node Type"]
    if "Index Name" in node:
        what += f" using {node['Index Name']}"
    if "Relation Name" in node:
        what += f" on {node['Relation Name']}"
    details = [
        f"{key}: {node[key]}"
        for key in ("Index Cond", "Filter", "Join Filter", "Hash Cond", "Conflict Resolution")
        if key in node
    ]
    read = node.get("Shared Read Blocks", 0)
    line = (
        f"{'  ' * depth}{what}  (rows={node.get('Actual Rows')} loops={node.get('Actual Loops')}"
        f" time={node.get('Actual Total Time')} ms, blocks hit={node.get('Shared Hit Blocks', 0)}"
        f" read={read})"
    )
    lines = [line, *(f"{'  ' * depth}  {detail}" for detail in details)]
    for child in node.get("Plans", []):
        lines.extend(render(child, depth + 1))
    return lines


def plans(text: str) -> dict[str, tuple[int, float, str]]:
    """Statement text → (times run, mean ms, last plan), from auto_explain's JSON entries."""
    runs: dict[str, list[float]] = defaultdict(list)
    last: dict[str, str] = {}
    for entry in entries(text):
        duration = _DURATION.search(entry)
        if duration is None:
            continue
        body = entry.split("plan:", 1)[1].replace("\n\t", "\n")
        explained = json.loads(body)
        statement = " ".join(explained["Query Text"].split())
        runs[statement].append(float(duration.group(1)))
        last[statement] = "\n".join(render(explained["Plan"]))
    return {q: (len(t), sum(t) / len(t), last[q]) for q, t in runs.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument(
        "--server-log", type=Path, default=Path("/var/log/postgresql/postgresql-15-main.log")
    )
    parser.add_argument("--revision", default="HEAD")
    parser.add_argument("--overlay", action="append", default=[])
    args = parser.parse_args(argv)

    schema = f"bench_explain_{secrets.token_hex(4)}"
    plain = args.database.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    base = f"postgresql+psycopg://{plain.split('://', 1)[1]}?options="
    url = base + quote(f"-csearch_path={schema}", safe="")
    root = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    home = root / "home"
    try:
        source, _ = run.snapshot(root, args.revision, args.overlay)
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
        started = time.monotonic()
        addresses = run.seed_patients(home, url, schema, 0, args.mailboxes)
        run.log(f"seeded {args.mailboxes:,} mailboxes in {time.monotonic() - started:.0f} s")
        traced = base + quote(f"-csearch_path={schema} {_PLAN_OPTIONS}", safe="")
        with run.nodes(source, home, traced, 1) as running:
            target = [(running[0].host, running[0].ports["smtp"])]
            run.load(target, sender, addresses, 5, 1)  # connections and caches warm
            offset = args.server_log.stat().st_size
            result = run.load(target, sender, addresses, args.messages, 1)
            time.sleep(1)  # the workers' jobs for the last message
            with args.server_log.open("rb") as log_file:
                log_file.seek(offset)
                text = log_file.read().decode("utf-8", errors="replace")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    found = plans(text)
    print(
        f"# {result['messages']} messages to {args.mailboxes:,} mailboxes,"
        f" {len(found)} distinct statements\n"
    )
    for query, (count, mean, plan) in sorted(found.items(), key=lambda i: -i[1][0] * i[1][1]):
        print(f"## {count}× mean {mean:.3f} ms\n{query[:600]}\n{plan}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
