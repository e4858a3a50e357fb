"""Directory benchmark: import of N synthetic mailbox rows, with mail flowing, and search.

For each engine (SQLite, PostgreSQL) it serves a demo home (``caducee init --demo``
then ``caducee serve``) on that engine and measures, each import in a fresh child
process so that peak memory is the import's own:

0. (PostgreSQL) the physical limit: a raw ``COPY`` of the same file into an
   unindexed table, just before and just after the first import; the import is
   reported as a multiple of it (both measured in the same run, under the same load);
1. the first import of a synthetic ``Extraction_Correspondance_MSSante`` of N rows
   (time, peak RSS of the import process and of its parsing process), while a
   peer operator sends mail to the gateway: the latency of ``RCPT`` and of
   ``DATA`` up to the ``250`` (the gateway reads the directory for every
   sender, B3, and writes every message to the same database);
2. the re-import of the same file (nothing changes: the daily steady state);
3. a daily-style update (0.5 % of lines removed, 0.5 % changed, 0.2 % added);
4. the latency of a few hundred varied searches (name prefixes, filters,
   national ids, addresses), p50 / p95 / p99 / max.

Results are printed and appended to ``bench/RESULTS.md``. PostgreSQL runs in a
dedicated schema of the ``test`` database, created and dropped here.

Usage: ``.venv/bin/python bench/directory/run.py --rows 1000000``
(``--engines sqlite`` to skip PostgreSQL, ``--queries 300``, ``--no-mail``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))  # the test harness serves the demo home

from generate_mss import generate  # noqa: E402

PG_URL = os.environ.get("CADUCEE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = REPO / "bench" / "RESULTS.md"
CACHE = Path(tempfile.gettempdir()) / "caducee-bench"


# --- machine facts -------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "python": platform.python_version(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- child processes ------------------------------------------------------------


def child_import(url: str, path: str) -> None:
    """Run one import and print its figures as JSON (runs in a fresh process)."""
    import resource

    from caducee.directory.importer import import_file
    from caducee.storage.db import Database

    database = Database(url)
    started = time.monotonic()
    summary = import_file(database, Path(path))
    seconds = time.monotonic() - started
    database.dispose()
    result = summary.to_dict()
    result.pop("rejections")
    result.pop("duplicate_lines")
    result["wall_seconds"] = seconds
    result["peak_rss_mib"] = vm_hwm_kib() / 1024
    # ru_maxrss of children: the parsing process, when the import used one.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    result["parser_peak_rss_mib"] = children.ru_maxrss / 1024
    result["cpu_seconds"] = own.ru_utime + own.ru_stime
    result["parser_cpu_seconds"] = children.ru_utime + children.ru_stime
    print(json.dumps(result))


def child_search(url: str, queries_file: str) -> None:
    """Run the queries, print the latencies (ms) as JSON (runs in a fresh process)."""
    from caducee.directory.search import SearchQuery
    from caducee.directory.service import search
    from caducee.storage.db import Database

    database = Database(url)
    queries = [SearchQuery(**fields) for fields in json.loads(Path(queries_file).read_text())]
    for query in queries[:20]:  # warm the pool and the caches a little
        with database.transaction() as session:
            search(session, query)
    latencies: list[float] = []
    counts: list[int] = []
    for query in queries:
        started = time.perf_counter()
        with database.transaction() as session:
            page = search(session, query)
        latencies.append((time.perf_counter() - started) * 1000)
        counts.append(len(page.items))
    database.dispose()
    print(json.dumps({"latencies": latencies, "counts": counts}))


def run_child(*arguments: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    started = time.monotonic()
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=3600)
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_seconds"] = time.monotonic() - started
    return figures


# --- inputs ------------------------------------------------------------------------


def input_file(rows: int, seed: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"Extraction_Correspondance_MSSante_{rows}_{seed}.txt"
    if not path.exists():
        print(f"generating {rows} rows into {path} …", flush=True)
        partial = path.with_suffix(".partial")
        generate(rows, partial, seed=seed)
        partial.rename(path)
    return path


def updated_file(source: Path) -> Path:
    """A daily-style update of ``source``: some lines removed, changed and added."""
    target = source.with_name(source.stem + "_update.txt")
    if target.exists():
        return target
    rng = random.Random(11)
    with source.open(encoding="utf-8") as reader, target.open("w", encoding="utf-8") as writer:
        writer.write(reader.readline())
        added = 0
        for number, line in enumerate(reader):
            roll = rng.random()
            if roll < 0.005:
                continue  # removed
            if roll < 0.010:
                fields = line.split("|")
                fields[28] = "99999" if fields[28] != "99999" else "99998"  # moved
                line = "|".join(fields)
            writer.write(line)
            if roll > 0.998:
                fields = line.split("|")
                fields[1] = f"new{number}.{fields[1]}"
                writer.write("|".join(fields))
                added += 1
    return target


def sample_queries(path: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """Varied searches built from a sample of the file's own rows."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    with path.open(encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            if rng.random() < 0.002:
                rows.append(line.rstrip("\n").split("|"))
            if len(rows) >= 2000:
                break
    queries: list[dict[str, Any]] = []
    professions = ["10", "21", "40", "60", "70", "médecin", "infirm", "91"]
    for index in range(count):
        row = rng.choice(rows)
        family, organisation = row[9], row[18]
        name = family or organisation
        shape = index % 10
        prefix = name[: rng.choice((2, 3, 4, 6))] if name else "a"
        if shape == 0:
            queries.append({"text": prefix})
        elif shape == 1:
            queries.append({"text": f"{family} {row[10][:2]}".strip() or prefix})
        elif shape == 2:
            queries.append({"text": prefix, "profession": rng.choice(professions)})
        elif shape == 3:
            queries.append({"profession": rng.choice(professions)})
        elif shape == 4:
            queries.append({"department": row[29] or "75"})
        elif shape == 5:
            queries.append({"postal_code": row[28][: rng.choice((3, 5))] or "75"})
        elif shape == 6:
            queries.append({"text": row[4] or row[6] or prefix})  # national id
        elif shape == 7:
            queries.append({"text": row[1]})  # the exact address
        elif shape == 8:
            queries.append({"text": prefix, "department": row[29] or "75"})
        else:
            queries.append({"text": prefix, "offset": 20})  # page 2
    return queries


# --- one engine ---------------------------------------------------------------------


def engine_url(engine: str, workdir: Path) -> tuple[str, Any]:
    if engine == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    schema = f"caducee_bench_{os.getpid()}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}", drop


def raw_copy_seconds(url: str, path: Path) -> float:
    """The physical limit: ``COPY`` of the file, as published, into an unindexed table.

    31 text columns, the header skipped, ``|`` as delimiter and no quoting (a
    quote character that never occurs), streamed from this process like the
    import streams its staged rows; the table is an ordinary (logged) one, as
    the directory is.
    """
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    columns = ", ".join(f"c{index} text" for index in range(31))
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_raw_copy")
        connection.execute(f"CREATE TABLE bench_raw_copy ({columns})")
        started = time.monotonic()
        with (
            connection.cursor() as cursor,
            path.open("rb") as source,
            cursor.copy(
                "COPY bench_raw_copy FROM STDIN "
                "(FORMAT csv, DELIMITER '|', QUOTE E'\\x01', HEADER true)"
            ) as copy,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        seconds = time.monotonic() - started
        connection.execute("DROP TABLE bench_raw_copy")
    return seconds


class MailFlow:
    """A peer operator sending reports one after another, timing RCPT and DATA→250."""

    def __init__(self, served: Any, pause: float = 0.1) -> None:
        self.served = served
        self.pause = pause
        self.rcpt: list[float] = []
        self.data: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MailFlow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        served = self.served
        sender = served.peer["professional"]
        recipient = served.credentials["patient"]["address"]
        client = served.smtp()
        try:
            while not self._stop.is_set():
                raw = served.message(subject=f"Compte rendu {len(self.data)}")
                try:
                    code, reply = client.mail(sender)
                    assert code == 250, reply
                    started = time.perf_counter()
                    code, reply = client.rcpt(recipient)
                    self.rcpt.append((time.perf_counter() - started) * 1000)
                    assert code == 250, reply
                    started = time.perf_counter()
                    code, reply = client.data(raw)
                    self.data.append((time.perf_counter() - started) * 1000)
                    assert code == 250, reply
                except (AssertionError, smtplib.SMTPException, OSError) as error:
                    self.errors.append(str(error)[:200])
                    client.close()
                    client = served.smtp()
                self._stop.wait(self.pause)
        finally:
            client.close()


def serve_home(engine: str, workdir: Path) -> tuple[Any, str, Any]:
    """A demo home served on ``engine``: (served gateway, database URL, cleanup)."""
    from caducee.config import load_settings
    from tests.harness.served import prepare_demo

    url, drop = engine_url(engine, workdir)
    served = prepare_demo(workdir / "home", url if engine != "sqlite" else None)
    if engine == "sqlite":
        environ = dict(os.environ)
        os.environ.update({k: v for k, v in served.env.items() if k.startswith("CADUCEE_")})
        try:
            url = load_settings(served.home).database_url
        finally:
            os.environ.clear()
            os.environ.update(environ)
    served.start()

    def cleanup() -> None:
        served.stop_all()
        if drop is not None:
            drop()

    return served, url, cleanup


def bench_engine(
    engine: str, path: Path, update: Path, queries: Path, *, mail: bool
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"caducee-bench-{engine}-"))
    served, url, cleanup = serve_home(engine, workdir)
    try:
        raw_copy: list[float] = []
        if engine == "postgresql":
            raw_copy.append(raw_copy_seconds(url, path))
            print(f"[{engine}] raw COPY {raw_copy[0]:.1f} s", flush=True)
        print(f"[{engine}] first import{' with mail flowing' if mail else ''} …", flush=True)
        flow = MailFlow(served)
        if mail:
            with flow:
                first = run_child("--child-import", url, str(path))
        else:
            first = run_child("--child-import", url, str(path))
        print(
            f"[{engine}] {first['wall_seconds']:.1f} s, {first['peak_rss_mib']:.0f} MiB, "
            f"{len(flow.data)} messages",
            flush=True,
        )
        if engine == "postgresql":
            raw_copy.append(raw_copy_seconds(url, path))
        print(f"[{engine}] re-import …", flush=True)
        again = run_child("--child-import", url, str(path))
        print(f"[{engine}] update …", flush=True)
        updated = run_child("--child-import", url, str(update))
        print(f"[{engine}] searches …", flush=True)
        searched = run_child("--child-search", url, str(queries))
        size = (
            sum(f.stat().st_size for f in (workdir / "home").rglob("*.db*"))
            if engine == "sqlite"
            else None
        )
        return {
            "first": first,
            "again": again,
            "update": updated,
            "search": searched,
            "db_bytes": size,
            "raw_copy": raw_copy,
            "mail": {"rcpt": flow.rcpt, "data": flow.data, "errors": flow.errors},
        }
    finally:
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class LoadSampler:
    """The 1-minute load average every few seconds during the run (a shared machine)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(interval)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        values = self.samples or [0.0]
        return (
            f"min {min(values):.1f}, mean {sum(values) / len(values):.1f}, "
            f"max {max(values):.1f} ({len(values)} samples)"
        )


def report(rows: int, facts: dict[str, str], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"## Directory import and search, {rows:,} rows — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Python "
        f"{facts['python']}; 1-minute load average during the run: {facts['load_run']} "
        "(a shared machine: other work ran at the same time, so wall times are inflated; "
        "the ratio to the raw COPY is measured in the same run, under the same load).",
        "Input: synthetic `Extraction_Correspondance_MSSante` generated by "
        "`bench/directory/generate_mss.py` (31 columns, ~85 % PER / 15 % ORG, valid ids, "
        "0.03 % repeated addresses). Targets (issue 20): first import ≤ 5× the raw COPY "
        "(PostgreSQL), ≤ 30 s (SQLite); unchanged re-import ≤ 10 s; peak RSS ≤ 300 MB; "
        "during the import RCPT p99 ≤ 50 ms, DATA→250 p99 ≤ 250 ms; "
        "search p95 ≤ 10 ms, p99 ≤ 20 ms.",
        "",
        "| engine | raw COPY (before / after) | first import | × raw COPY "
        "| peak RSS (import + parser) | CPU (import + parser) "
        "| re-import (no change) | update (−0.5 %, ~0.5 % changed, +0.2 %) "
        "| during the first import: messages, RCPT p99, DATA→250 p99 (max) "
        "| search p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, figures in results.items():
        first, again, update = figures["first"], figures["again"], figures["update"]
        latencies = figures["search"]["latencies"]
        raw = figures["raw_copy"]
        if raw:
            copy = " / ".join(f"{seconds:.1f} s" for seconds in raw)
            ratio = f"{first['wall_seconds'] / (sum(raw) / len(raw)):.1f}×"
        else:
            copy, ratio = "–", "–"
        mail = figures["mail"]
        if mail["data"]:
            flow = (
                f"{len(mail['data'])}, {percentile(mail['rcpt'], 0.99):.0f} ms, "
                f"{percentile(mail['data'], 0.99):.0f} ms ({max(mail['data']):.0f} ms)"
            )
            if mail["errors"]:
                flow += f", {len(mail['errors'])} errors"
        else:
            flow = "not measured"
        lines.append(
            f"| {engine} | {copy} | {first['wall_seconds']:.1f} s ({first['added']:,} added) "
            f"| {ratio} "
            f"| {first['peak_rss_mib']:.0f} + {first['parser_peak_rss_mib']:.0f} MiB "
            f"| {first['cpu_seconds']:.0f} + {first['parser_cpu_seconds']:.0f} s "
            f"| {again['wall_seconds']:.1f} s ({again['unchanged']:,} unchanged) "
            f"| {update['wall_seconds']:.1f} s (+{update['added']:,} ~{update['changed']:,} "
            f"−{update['removed']:,}) "
            f"| {flow} "
            f"| {percentile(latencies, 0.5):.1f} ms | {percentile(latencies, 0.95):.1f} ms "
            f"| {percentile(latencies, 0.99):.1f} ms | {max(latencies):.1f} ms |"
        )
    lines.append("")
    for engine, figures in results.items():
        phases = ", ".join(
            f"{step} "
            + " / ".join(
                f"{name} {seconds:.1f} s"
                for name, seconds in figures[step].get("phases", {}).items()
            )
            for step in ("first", "again", "update")
        )
        lines.append(f"- {engine} phases: {phases}.")
    lines.append("")
    queries = len(next(iter(results.values()))["search"]["latencies"]) if results else 0
    lines.append(
        f"Searches: {queries} queries (name prefixes of 2–6 letters, name + given name, "
        "name + profession, profession only, department only, postal code prefixes, "
        "national ids, exact addresses, name + department, second pages), each timed "
        "from the call to the loaded page of 20. Mail: the demo's peer operator over "
        "mutual TLS, one session, a DKIM-signed report every 0.1 s to the demo patient; "
        "RCPT timed from the command to its reply, DATA from the command to the 250."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--no-mail", action="store_true", help="no mail during the first import")
    parser.add_argument("--child-import", nargs=2, metavar=("URL", "FILE"))
    parser.add_argument("--child-search", nargs=2, metavar=("URL", "QUERIES"))
    args = parser.parse_args()
    if args.child_import:
        child_import(*args.child_import)
        return
    if args.child_search:
        child_search(*args.child_search)
        return
    facts = machine()
    path = input_file(args.rows, args.seed)
    update = updated_file(path)
    queries = CACHE / f"queries_{args.rows}_{args.seed}.json"
    queries.write_text(json.dumps(sample_queries(path, args.queries, args.seed)))
    load = LoadSampler()
    results = {
        engine: bench_engine(engine, path, update, queries, mail=not args.no_mail)
        for engine in args.engines.split(",")
    }
    facts["load_run"] = load.stop()
    section = report(args.rows, facts, results)
    print(section)
    for engine, figures in results.items():
        summary = {k: v for k, v in figures.items() if k not in ("search", "mail")}
        summary["mail_errors"] = figures["mail"]["errors"][:5]
        print(engine, json.dumps(summary, indent=1))
    if not args.no_results:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Benchmark results\n\nEach section is appended by a bench script.\n"
            )
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)


if __name__ == "__main__":
    main()
