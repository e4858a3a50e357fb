"""``--dry-run`` and the removal confirmation of ``trust import`` and ``directory import``
(issue 16: a one-domain file silently removed 614 operator domains)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caducee.gateway.cli import main

from .samples import domaine, whitelist


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a5_trust_import_dry_run_changes_nothing_and_removal_asks(
    home_dir: Path, whitelist_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, out, _ = run(capsys, "trust", "import", str(whitelist_path), "--home", home, "--dry-run")
    assert code == 0 and "Dry run: nothing changed" in out
    assert "Added: 614; updated: 0; removed: 0" in out
    code, out, _ = run(capsys, "trust", "import", str(whitelist_path), "--home", home)
    assert code == 0 and "Added: 614;" in out  # the dry run had added nothing

    one = tmp_path / "one.xml"
    one.write_bytes(whitelist(domaine("seul.mssante.fr")))
    code, out, _ = run(capsys, "trust", "import", str(one), "--home", home, "--dry-run")
    assert code == 0 and "Added: 1; updated: 0; removed: 614" in out
    code, out, err = run(capsys, "trust", "import", str(one), "--home", home)  # not a terminal
    assert code == 1 and "Cancelled" in out and "--yes" in err
    code, out, _ = run(capsys, "trust", "check", "UC-CMP.mssante.fr", "--home", home)
    assert code == 0  # still there
    code, out, _ = run(capsys, "trust", "import", str(one), "--home", home, "--yes")
    assert code == 0 and "removed: 614" in out
    code, out, _ = run(capsys, "trust", "check", "UC-CMP.mssante.fr", "--home", home)
    assert code == 1


def test_a3_directory_import_dry_run_changes_nothing_and_removal_asks(
    home_dir: Path, ps_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, out, _ = run(capsys, "directory", "import", str(ps_sample), "--home", home, "--dry-run")
    assert code == 0 and "Dry run: nothing changed" in out
    assert "added 22, changed 0, unchanged 0, removed 0" in out
    code, out, _ = run(capsys, "directory", "import", str(ps_sample), "--home", home)
    assert code == 0 and "added 22, changed 0" in out  # the dry run had added nothing

    lines = ps_sample.read_text(encoding="utf-8").splitlines(keepends=True)
    smaller = tmp_path / ps_sample.name
    smaller.write_text("".join(lines[:3]), encoding="utf-8")  # header and the first lines
    code, out, _ = run(capsys, "directory", "import", str(smaller), "--home", home, "--dry-run")
    assert code == 0 and "Dry run" in out
    removed = int(out.split("removed ", 1)[1].split(",", 1)[0])
    assert removed > 10
    code, out, err = run(capsys, "directory", "import", str(smaller), "--home", home)
    assert code == 1 and "cancelled" in err
    code, out, _ = run(capsys, "directory", "import", str(ps_sample), "--home", home)
    assert "added 0, changed 0, unchanged 22, removed 0" in out  # nothing had been removed
    code, out, _ = run(capsys, "directory", "import", str(smaller), "--home", home, "--yes")
    assert code == 0 and f"removed {removed}" in out
