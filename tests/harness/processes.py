"""What Linux's ``/proc`` says of a gateway's processes: which children it has, which still run."""

from __future__ import annotations

from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """The running child processes of ``pid`` (whatever thread forked them; no zombies)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return [child for child in found if running(child)]


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
