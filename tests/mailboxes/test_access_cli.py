"""F1, F3, G1, F4 for the operator: ``caducee access …`` on a demo home, each change audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caducee.config import load_settings
from caducee.gateway.cli import main as caducee_main
from caducee.gateway.demo import HOSTED_PROFESSIONAL
from caducee.gateway.home import open_database
from tests.harness.reports import add_patient, valid_ins


def _run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = caducee_main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _listing(capsys: pytest.CaptureFixture[str], home: Path, patient: str) -> dict[str, Any]:
    code, out, _ = _run(capsys, "access", "list", patient, "--json", "--home", str(home))
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    return document


def test_f1_operator_manages_a_patient_s_professionals(
    demo_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = json.loads((demo_home / "demo" / "credentials.json").read_text())
    patient = credentials["patient"]["address"]
    home = str(demo_home)
    assert _listing(capsys, demo_home, patient)["professionals"] == []
    # the demo space's own history (created and activated through the lifecycle) comes first
    code, out, _ = _run(capsys, "audit", "list", "--patient", patient, "--json", "--home", home)
    earlier = len(out.splitlines())
    code, out, _ = _run(capsys, "audit", "verify", "--home", home)
    chained = int(out.split("intact: ", 1)[1].split()[0])

    code, out, _ = _run(
        capsys, "access", "medecin-traitant", patient, HOSTED_PROFESSIONAL, "--home", home
    )
    assert code == 0 and "médecin traitant" in out
    listing = _listing(capsys, demo_home, patient)
    [doctor] = listing["professionals"]
    assert doctor["medecin_traitant"] is True and doctor["can_reply"] is False

    code, _, err = _run(capsys, "access", "block", patient, HOSTED_PROFESSIONAL, "--home", home)
    assert code == 1 and "F1.medecin-traitant-unblockable" in err
    code, _, _ = _run(capsys, "access", "medecin-traitant", patient, "--clear", "--home", home)
    assert code == 0
    code, _, _ = _run(capsys, "access", "block", patient, str(doctor["id"]), "--home", home)
    assert code == 0
    assert _listing(capsys, demo_home, patient)["professionals"][0]["status"] == "blocked"
    code, _, _ = _run(capsys, "access", "authorise", patient, HOSTED_PROFESSIONAL, "--home", home)
    assert code == 0
    code, _, err = _run(capsys, "access", "block", patient, "nobody@x.fr", "--home", home)
    assert code == 1 and "F1.not-known" in err

    ins = credentials["patient"]["ins"]
    code, _, _ = _run(capsys, "access", "emergency", ins, "on", "--home", home)
    assert code == 0 and _listing(capsys, demo_home, patient)["emergency_access"] is True

    code, out, _ = _run(
        capsys, "access", "notifications", patient, "--email", "perso@example.org", "--home", home
    )
    assert code == 0 and json.loads(out)["email"] == "perso@example.org"
    code, _, err = _run(capsys, "access", "notifications", patient, "--phone", "12", "--home", home)
    assert code == 1 and "phone" in err

    code, out, _ = _run(capsys, "audit", "list", "--patient", patient, "--json", "--home", home)
    actions = [json.loads(line)["action"] for line in out.splitlines()]
    assert actions[::-1][earlier:] == [
        "medecin-traitant.set",
        "professional.block",
        "medecin-traitant.clear",
        "professional.block",
        "professional.authorise",
        "emergency-access.enable",
        "notifications.update",
    ]
    ours = out.splitlines()[: len(actions) - earlier]  # newest first
    assert all('"actor": "operator:operator"' in line for line in ours)
    code, out, _ = _run(capsys, "audit", "verify", "--home", home)
    assert code == 0 and f"intact: {chained + 7} event(s)" in out


def test_f3_operator_registers_a_legal_representative(
    demo_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = json.loads((demo_home / "demo" / "credentials.json").read_text())
    parent = credentials["patient"]["address"]
    database = open_database(load_settings(demo_home))
    try:
        _, child, _ = add_patient(database, ins=valid_ins("2150675123456"))
    finally:
        database.dispose()
    home = str(demo_home)
    code, out, _ = _run(capsys, "access", "representative", "add", child, parent, "--home", home)
    assert code == 0 and "18th birthday" in out
    code, out, _ = _run(capsys, "access", "representative", "list", child, "--home", home)
    assert code == 0 and f"represented by {parent}" in out
    code, out, _ = _run(capsys, "access", "representative", "list", parent, "--home", home)
    assert f"represents {child}" in out
    code, _, err = _run(capsys, "access", "representative", "add", child, child, "--home", home)
    assert code == 1 and "F3.self" in err
    code, _, _ = _run(capsys, "access", "representative", "remove", child, parent, "--home", home)
    assert code == 0
    code, _, err = _run(capsys, "access", "representative", "remove", child, parent, "--home", home)
    assert code == 1
    code, _, err = _run(capsys, "access", "list", "nobody@patient.mssante.fr", "--home", home)
    assert code == 1 and "no patient space" in err
