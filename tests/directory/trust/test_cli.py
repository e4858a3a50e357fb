"""A5 ``caducee trust …`` commands, run through the real CLI on a home made by ``caducee init``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from caducee.gateway.cli import main

from .samples import domaine, make_certificate, pem, whitelist


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a5_cli_imports_the_real_whitelist(
    home_dir: Path, whitelist_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, out, _ = run(capsys, "trust", "import", str(whitelist_path), "--home", home)
    assert code == 0
    assert "Entries read: 619; distinct domains: 516; (domain, operator) pairs: 614." in out
    assert "Added: 614; updated: 0; removed: 0; unchanged: 0" in out
    assert "truncated after entry 619" in out
    code, out, _ = run(capsys, "trust", "import", str(whitelist_path), "--home", home)
    assert code == 0
    assert "Added: 0; updated: 0; removed: 0; unchanged: 614" in out
    code, out, _ = run(capsys, "trust", "check", "UC-CMP.mssante.fr", "--home", home)
    assert code == 0
    assert "uc-cmp.mssante.fr is in the trust space" in out
    assert "CN=medimail-asip.mipih.fr" in out
    code, out, _ = run(capsys, "trust", "check", "inconnu.mssante.fr", "--home", home)
    assert code == 1
    assert "NOT in the trust space" in out


def test_a5_cli_import_of_nothing_usable_fails(
    home_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"\x00not xml at all")
    code, out, _ = run(capsys, "trust", "import", str(garbage), "--home", str(home_dir))
    assert code == 1
    assert "Nothing could be imported" in out
    code, _, err = run(
        capsys, "trust", "import", str(tmp_path / "missing.xml"), "--home", str(home_dir)
    )
    assert code == 1
    assert "not a readable file" in err


def test_a5_cli_import_of_a_truncated_list_succeeds(
    home_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.xml"
    data = whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr"), closed=False)
    cut.write_bytes(data[: data.rindex(b"<Domaine>") + 20])
    code, out, _ = run(capsys, "trust", "import", str(cut), "--home", str(home_dir))
    assert code == 0
    assert "document truncated after entry 1: the rest was not imported" in out
    assert "No row was removed" in out


def test_a5_cli_add_domain_and_check_idn(
    home_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    code, out, _ = run(capsys, "trust", "add-domain", "hôpital-exemple.mssante.fr", "--home", home)
    assert code == 0
    assert "Added xn--hpital-exemple-0ob.mssante.fr" in out
    code, out, _ = run(capsys, "trust", "add-domain", "hôpital-exemple.mssante.fr", "--home", home)
    assert code == 0 and "already" in out
    for spelling in ("xn--hpital-exemple-0ob.mssante.fr", "Hôpital-Exemple.mssante.fr"):
        code, out, _ = run(capsys, "trust", "check", spelling, "--home", home)
        assert code == 0
        assert "manual: (no operator DN)" in out
    code, _, _ = run(
        capsys, "trust", "add-domain", "b.mssante.fr", "--operator-dn", "CN=x,C=FR", "--home", home
    )
    assert code == 0
    code, out, _ = run(capsys, "trust", "check", "b.mssante.fr", "--home", home)
    assert code == 0 and "manual: CN=x,C=FR" in out
    code, _, err = run(capsys, "trust", "add-domain", "pas un domaine", "--home", home)
    assert code == 1 and "not a valid domain" in err
    code, out, _ = run(capsys, "trust", "check", "pas un domaine", "--home", home)
    assert code == 1


def test_b1_cli_anchor_commands(
    home_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(home_dir)
    dev_ca = home_dir / "tls" / "ca.pem"  # the development CA made by init
    dev_digest = x509.load_pem_x509_certificate(dev_ca.read_bytes()).fingerprint(hashes.SHA256())
    code, out, _ = run(capsys, "trust", "add-anchor", str(dev_ca), "--home", home)
    assert code == 0
    assert dev_digest.hex() in out  # added now, or already added by init
    code, out, _ = run(capsys, "trust", "add-anchor", str(dev_ca), "--home", home)
    assert code == 0
    assert f"present  {dev_digest.hex()}" in out
    assert "Added 0, already present 1, refused 0." in out

    other = make_certificate("Autre AC de test")
    digest = other.fingerprint(hashes.SHA256()).hex()
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(pem(other))
    code, out, _ = run(capsys, "trust", "add-anchor", str(other_pem), "--home", home)
    assert code == 0
    assert f"added    {digest}  CN=Autre AC de test" in out
    code, out, _ = run(capsys, "trust", "anchors", "--home", home)
    assert code == 0
    assert digest in out and dev_digest.hex() in out and "2 trust anchor(s)." in out
    assert "Caducée development CA" in out

    code, out, _ = run(
        capsys, "trust", "add-anchor", str(home_dir / "tls" / "server.pem"), "--home", home
    )
    assert code == 1
    assert "REFUSED" in out and "not a CA certificate" in out
    code, _, err = run(capsys, "trust", "remove-anchor", "ffff0000", "--home", home)
    assert code == 1 and "no trust anchor" in err
    code, out, _ = run(capsys, "trust", "remove-anchor", digest[:12], "--home", home)
    assert code == 0 and digest in out
    code, out, _ = run(capsys, "trust", "anchors", "--home", home)
    assert code == 0 and digest not in out and "1 trust anchor(s)." in out


def test_b1_cli_add_anchor_without_certificate_fails(
    home_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    code, _, err = run(capsys, "trust", "add-anchor", str(empty), "--home", str(home_dir))
    assert code == 1 and "no PEM certificate" in err
    code, _, err = run(
        capsys, "trust", "add-anchor", str(tmp_path / "absent.pem"), "--home", str(home_dir)
    )
    assert code == 1 and "cannot read" in err
