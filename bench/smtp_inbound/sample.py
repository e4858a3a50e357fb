"""A sampling profiler for ``caducee serve`` that sees every thread (py-spy is not installed).

Usage::

    python bench/smtp_inbound/sample.py OUT -- /path/to/caducee serve --home HOME

Runs the ``caducee`` command in this interpreter and, every 2 ms, records the stack of
every thread (``sys._current_frames``). At exit (SIGTERM stops ``serve`` gracefully) it
writes ``OUT``: per thread, the functions seen in its samples, counted once per sample
("inclusive" share) and at the top of the stack ("self" share), the busiest first. cProfile
would see only the event loop's thread; the group committer and the job workers are threads
too, and the GIL they share with the loop is what bounds the throughput.
"""

from __future__ import annotations

import collections
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.002
TOP = 45
# Functions at the top of a thread's stack while it waits (a C call releases the GIL).
IDLE = {"wait", "select", "get", "_wait_for_tstate_lock", "_worker", "sleep"}


def _label(frame: FrameType) -> str:
    code = frame.f_code
    name = code.co_filename
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    else:
        name = os.path.relpath(name)
    return f"{code.co_name} ({name}:{code.co_firstlineno})"


class Sampler:
    def __init__(self) -> None:
        self.samples: collections.Counter[str] = collections.Counter()
        self.inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.stop = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stop.wait(INTERVAL):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = names.get(ident, str(ident))
                thread = thread.split("_", 1)[0] if thread.startswith("asyncio") else thread
                idle = frame.f_code.co_name in IDLE
                key = f"{thread}{' (idle)' if idle else ''}"
                self.samples[key] += 1
                if idle:
                    continue
                self.own[thread][_label(frame)] += 1
                seen = set()
                current: FrameType | None = frame
                while current is not None:
                    label = _label(current)
                    if label not in seen:
                        seen.add(label)
                        self.inclusive[thread][label] += 1
                    current = current.f_back

    def report(self) -> str:
        lines = ["samples per thread (every 2 ms):"]
        for key, count in self.samples.most_common():
            lines.append(f"  {count:8d}  {key}")
        for thread, counts in sorted(self.own.items(), key=lambda kv: -sum(kv[1].values())):
            busy = sum(counts.values())
            lines.append(f"\n== thread {thread}: {busy} busy samples")
            lines.append("-- inclusive (on the stack)")
            for label, count in self.inclusive[thread].most_common(TOP):
                lines.append(f"  {100 * count / busy:5.1f}%  {label}")
            lines.append("-- self (top of the stack)")
            for label, count in counts.most_common(TOP):
                lines.append(f"  {100 * count / busy:5.1f}%  {label}")
        return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    if sys.argv[2] != "--":
        raise SystemExit("usage: sample.py OUT -- caducee serve ...")
    command = sys.argv[3:]
    sampler = Sampler()
    thread = threading.Thread(target=sampler.run, name="sampler", daemon=True)
    started = time.monotonic()
    thread.start()
    sys.argv = command
    try:
        runpy.run_path(command[0], run_name="__main__")
    finally:
        sampler.stop.set()
        thread.join()
        out.write_text(f"{time.monotonic() - started:.1f} s\n" + sampler.report())


if __name__ == "__main__":
    main()
