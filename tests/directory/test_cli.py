"""``caducee directory …`` on a home made by ``caducee init`` (K3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from caducee.gateway.cli import main

from .samples import per_line, rpps, write_mss, wrong_key


def caducee(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_k3_directory_import_and_search(
    home_dir: Path, ps_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, out, _ = caducee(capsys, "directory", "import", str(ps_sample), "--home", home)
    assert code == 0
    assert "read 22, added 22, changed 0, unchanged 0, removed 0, rejected 0" in out
    code, out, _ = caducee(
        capsys, "directory", "import", str(ps_sample), "--home", home, "--json", "--kind", "ps"
    )
    assert code == 0
    assert json.loads(out)["unchanged"] == 22
    code, out, _ = caducee(capsys, "directory", "search", "lebrun", "--home", home)
    assert code == 0
    assert "Anaïs LEBRUN-CARPENTIER" in out and "Ergothérapeute" in out
    code, out, _ = caducee(
        capsys,
        "directory",
        "search",
        "--profession",
        "opticien",
        "--limit",
        "2",
        "--page",
        "2",
        "--json",
        "--home",
        home,
    )
    page = json.loads(out)
    assert (page["offset"], page["limit"], page["has_more"]) == (2, 2, True)
    assert [item["profession"]["code"] for item in page["items"]] == ["28", "28"]


def test_k3_directory_import_reports_refused_lines(
    home_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        per_line("ok@medecin.mssante.fr", 1, "BON", "Numero"),
        per_line("bad@medecin.mssante.fr", 2, "MAUVAIS", "Numero", rpps_value=wrong_key(rpps(2))),
    ]
    path = write_mss(tmp_path / "Extraction_Correspondance_MSSante.txt", lines)
    code, out, _ = caducee(capsys, "directory", "import", str(path), "--home", str(home_dir))
    assert code == 0
    assert "added 1" in out and "rejected 1" in out
    assert f"line 3: RPPS {wrong_key(rpps(2))} has a wrong check digit (Luhn)" in out


def test_directory_import_errors_exit_1(
    home_dir: Path, tmp_path: Path, ps_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, _, err = caducee(capsys, "directory", "import", str(tmp_path / "no.txt"), "--home", home)
    assert code == 1 and "not a readable file" in err
    other = tmp_path / "other.txt"
    other.write_text("a|b\n")
    code, _, err = caducee(capsys, "directory", "import", str(other), "--home", home)
    assert code == 1 and "not an Extraction_Correspondance_MSSante" in err
    code, _, err = caducee(
        capsys, "directory", "import", str(ps_sample), "--kind", "mss", "--home", home
    )
    assert code == 1 and "not mss_extraction" in err


def test_a3_directory_redlist_and_show(
    home_dir: Path, ps_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    caducee(capsys, "directory", "import", str(ps_sample), "--home", home)
    code, out, _ = caducee(capsys, "directory", "redlist", "0019402379", "--home", home)
    assert code == 0 and "1 row on the red list" in out
    code, out, _ = caducee(capsys, "directory", "search", "lebrun", "--home", home)
    assert "No entry found." in out
    code, out, _ = caducee(capsys, "directory", "show", "0019402379", "--home", home, "--json")
    [row] = json.loads(out)
    assert row["red_list"] is True and row["family_name"] == "LEBRUN-CARPENTIER"
    code, out, _ = caducee(capsys, "directory", "show", "0019402379", "--home", home)
    assert "red_list: True" in out and "CLINIQUE DE READAPTATION LES ARBELLES" in out
    code, out, _ = caducee(capsys, "directory", "redlist", "0019402379", "--off", "--home", home)
    assert "off the red list" in out
    code, out, _ = caducee(capsys, "directory", "search", "019402379", "--home", home)
    assert "LEBRUN-CARPENTIER" in out
    code, _, err = caducee(capsys, "directory", "redlist", "nobody@x.fr", "--home", home)
    assert code == 1 and "not in the directory" in err
    code, _, err = caducee(capsys, "directory", "show", "nobody@x.fr", "--home", home)
    assert code == 1 and "not in the directory" in err


def test_directory_search_refuses_bad_options(
    home_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, _, err = caducee(capsys, "directory", "search", "x", "--page", "0", "--home", home)
    assert code == 1 and "--page" in err
    code, _, err = caducee(capsys, "directory", "search", "x", "--limit", "500", "--home", home)
    assert code == 1 and "limit" in err
    code, _, err = caducee(
        capsys, "directory", "search", "--profession", "astronaute", "--home", home
    )
    assert code == 1 and "unknown profession" in err


def test_console_script_runs_directory_search(
    home_dir: Path, ps_sample: Path, home_env: dict[str, str]
) -> None:
    script = Path(sys.executable).with_name("caducee")
    run = [str(script), "directory", "import", str(ps_sample), "--home", str(home_dir)]
    subprocess.run(run, check=True, env=home_env, capture_output=True, timeout=120)
    result = subprocess.run(
        [str(script), "directory", "search", "benhou", "--json", "--home", str(home_dir)],
        check=True,
        env=home_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    [item] = json.loads(result.stdout)["items"]
    assert item["national_id"] == "810106476764"
    assert item["speciality"] == {"code": "SM20", "label": "Gynécologie-obstétrique"}
