"""Where a first import's time goes: phases and per-statement timings, A/B against a base tree.

``run.py`` measures the whole operator's story (mail flowing, searches); this
script answers a narrower question quickly, for one engine at a time: how
long the first import (and optionally the re-import) of a file takes, split
into the importer's phases and into its slowest SQL statements, next to a raw
``COPY`` of the same file taken just before and just after (PostgreSQL).
``--root`` runs another checkout of the code (a ``git archive HEAD`` copy), so
that two trees can be compared run after run, interleaved, under the same load.

Usage::

    .venv/bin/python bench/directory/profile_import.py FILE --engine postgresql \
        [--root /tmp/base] [--reimport] [--top 15]

Each measurement runs in a fresh child process whose ``sys.path`` starts with
the chosen tree; figures are printed as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PG_URL = os.environ.get("CADUCEE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def child(root: str, engine: str, path: str, reimport: bool, top: int) -> None:
    """Runs in the child: migrate a fresh database, import, report (JSON on stdout)."""
    sys.path.insert(0, root)
    import shutil

    from sqlalchemy import create_engine, event, text
    from sqlalchemy.engine import Engine

    from caducee.directory.importer import import_file
    from caducee.storage import schema
    from caducee.storage.db import Database

    sys.path.insert(0, str(HERE))
    from run import raw_copy_seconds

    workdir = Path(tempfile.mkdtemp(prefix="caducee-profile-"))
    drop = None
    if engine == "sqlite":
        url = f"sqlite:///{workdir / 'profile.db'}"
    else:
        name = f"caducee_profile_{os.getpid()}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))

        def drop() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            admin.dispose()

        url = f"{PG_URL}?options={quote(f'-csearch_path={name}')}"
    timings: dict[str, list[float]] = {}

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seconds = time.perf_counter() - conn.info["started"].pop()
        timings.setdefault(" ".join(statement.split())[:160], []).append(seconds)

    result: dict[str, Any] = {"root": root, "engine": engine}
    try:
        database = Database(url)
        schema.upgrade(database)
        if engine == "postgresql":
            result["raw_copy_before"] = raw_copy_seconds(url, Path(path))
        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        own0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        summary = import_file(database, Path(path))
        result["first_seconds"] = round(time.monotonic() - started, 2)
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["first_cpu"] = round(
            own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime, 2
        )
        result["parser_cpu"] = round(kids.ru_utime + kids.ru_stime, 2)
        result["first_phases"] = summary.phases
        result["first_added"] = summary.added
        result["statements"] = [
            [round(sum(values), 2), len(values), statement]
            for statement, values in sorted(timings.items(), key=lambda item: -sum(item[1]))[:top]
        ]
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)
        if engine == "postgresql":
            result["raw_copy_after"] = raw_copy_seconds(url, Path(path))
            mean = (result["raw_copy_before"] + result["raw_copy_after"]) / 2
            result["ratio"] = round(result["first_seconds"] / mean, 2)
        if reimport:
            started = time.monotonic()
            again = import_file(database, Path(path))
            result["again_seconds"] = round(time.monotonic() - started, 2)
            result["again_phases"] = again.phases
            result["again_unchanged"] = again.unchanged
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        database.dispose()
    finally:
        if drop is not None:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--engine", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--root", default=str(REPO))
    parser.add_argument("--reimport", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    if args.child:
        child(root, args.engine, args.file, args.reimport, args.top)
        return
    command = [sys.executable, __file__, args.file, "--engine", args.engine, "--root", root]
    command += ["--top", str(args.top), "--child"] + (["--reimport"] if args.reimport else [])
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = subprocess.run(command, check=True, capture_output=True, text=True, cwd=root)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["load_before"] = " ".join(load)
    figures["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
