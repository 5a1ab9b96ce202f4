"""`cpuver domain ...` as a user runs it: define, lifecycle, update-cpu, check, XML round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuver.api import open_catalog
from cpuver.cli import main
from cpuver.host.capabilities import HostCapabilities


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'guests.db'}"]


def host_file(tmp_path: Path, name: str, lacking: frozenset[str] = frozenset()) -> str:
    """A TCG host offering what TCG offers, minus ``lacking``."""
    offers = open_catalog("10.0").tcg_offers - lacking
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(HostCapabilities(name, {"tcg": offers}).to_json()))
    return str(path)


def guest_file(tmp_path: Path, cpu: str = "Westmere,version=best") -> str:
    path = tmp_path / "web1.json"
    path.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": cpu}))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def defined(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]) -> str:
    host = host_file(tmp_path, "hv1")
    code, _out, err = run(
        capsys, "domain", "define", guest_file(tmp_path), "--host", host, "--accel", "tcg", *db
    )
    assert code == 0, err
    return host


def test_define_pins_the_best_version_for_the_host(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    _code, out, _err = run(capsys, "domain", "list", *db)
    assert out.split()[:3] == ["web1", "shutoff", "Westmere-v1"]


def test_start_on_a_host_lacking_a_pinned_feature_is_refused_with_the_blocker(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    poor = host_file(tmp_path, "hv2", frozenset({"aes"}))
    code, _out, err = run(capsys, "domain", "start", "web1", "--host", poor, *db)
    assert code == 3  # refused
    assert "lacks pinned feature(s) aes" in err


def test_lifecycle_never_changes_the_fingerprint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    host = defined(capsys, tmp_path, db)
    other = host_file(tmp_path, "hv2")
    saved = str(tmp_path / "web1.saved")
    for argv in (
        ["start", "web1", "--host", host],
        ["migrate", "web1", "--to", other],
        ["snapshot", "create", "web1", "s1"],
        ["save", "web1", saved],
        ["restore", saved, "--host", host],
        ["snapshot", "revert", "web1", "s1"],
        ["shutdown", "web1"],
    ):
        code, _out, err = run(capsys, "domain", *argv, *db)
        assert code == 0, (argv, err)
    _code, out, _err = run(capsys, "domain", "history", "web1", *db)
    assert len(out.splitlines()) == 1  # only the define changed the CPU


def test_migrating_a_shut_off_guest_is_an_illegal_transition(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    host = defined(capsys, tmp_path, db)
    code, _out, err = run(capsys, "domain", "migrate", "web1", "--to", host, *db)
    assert code == 3  # refused
    assert "cpuver: error:" in err


def test_update_cpu_refuses_a_signature_change_unless_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--to", "latest", *db)
    assert code == 3  # refused
    assert "re-activate" in err
    code, out, _err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "latest", "--accept-signature-change", *db
    )
    assert code == 0
    assert "web1 now has Westmere-v2" in out


def test_update_cpu_dry_run_shows_the_diff_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    _code, out, _err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "latest", "--dry-run", *db
    )
    assert "+spec-ctrl" in out.splitlines()
    assert "(dry run: nothing changed)" in out
    _code, listed, _err = run(capsys, "domain", "list", *db)
    assert "Westmere-v1" in listed


def test_update_of_a_running_guest_waits_for_the_next_cold_boot(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    host = defined(capsys, tmp_path, db)
    run(capsys, "domain", "start", "web1", "--host", host, *db)
    _code, out, _err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "latest", "--accept-signature-change", *db
    )
    assert "applies at its next cold boot" in out
    _code, listed, _err = run(capsys, "domain", "list", *db)
    assert "Westmere-v1 (pending Westmere-v2)" in listed


def test_dumpxml_defines_the_same_cpu_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    _code, xml, _err = run(capsys, "domain", "dumpxml", "web1", *db)
    (tmp_path / "web1.xml").write_text(xml.replace("<name>web1</name>", "<name>web2</name>"))
    code, _out, err = run(
        capsys, "domain", "define", str(tmp_path / "web1.xml"), "--accel", "tcg", *db
    )
    assert code == 0, err
    _code, listed, _err = run(capsys, "domain", "list", *db)
    fingerprints = {line.split()[0]: line.split()[-1] for line in listed.splitlines()}
    assert fingerprints["web1"] == fingerprints["web2"]


def test_check_lists_guests_whose_pin_the_catalog_cannot_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined(capsys, tmp_path, db)
    code, out, _err = run(capsys, "domain", "check", "--qemu", "7.2", *db)
    assert code == 1
    assert out.startswith("web1: pinned machine type pc-q35-10.0 does not exist")


def test_xml_with_an_entity_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    evil = tmp_path / "evil.xml"
    evil.write_text('<!DOCTYPE d [<!ENTITY x "y">]><domain><name>&x;</name></domain>')
    code, _out, err = run(capsys, "domain", "define", str(evil), *db)
    assert code == 1
    assert "cpuver: error:" in err


# -- update-cpu: what an explicit update keeps, checks and refuses --------------------------------


def defined_with(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], cpu: str
) -> None:
    code, _out, err = run(
        capsys, "domain", "define", guest_file(tmp_path, cpu), "--accel", "kvm", *db
    )
    assert code == 0, err


def test_update_keeps_the_guests_own_feature_changes_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined_with(capsys, tmp_path, db, "Haswell-v2,-avx2,+vmx")
    code, out, err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v4", "--accept-signature-change", *db
    )
    assert code == 0, err
    assert "kept the guest's own changes: -avx2, +vmx" in out
    assert "+avx2" not in out.split()
    pin = json.loads(json.dumps(api_guest(db).pin.to_json()))
    assert "avx2" in pin["features"]["off"] and "vmx" in pin["features"]["on"]
    assert pin["version"] == "Haswell-v4"


def api_guest(db: list[str]) -> Any:
    from cpuver import api

    return api.get_guest(api.open_store(db[1]), "web1")


def test_to_takes_a_version_never_a_spec(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined_with(capsys, tmp_path, db, "Haswell-v2")
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--to", "v2,-pcid", *db)
    assert code == 1
    assert "--to: 'v2,-pcid' is not a version (best, latest, vN or X.Y.Z)" in err


def test_a_version_the_given_host_cannot_run_is_refused_unless_forced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined_with(capsys, tmp_path, db, "Haswell-v2")
    host = kvm_host_file(tmp_path, "hv1", "Haswell-v2")
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--to", "v4", "--host", host, *db)
    assert code == 3  # refused
    assert "cannot update the CPU of guest 'web1' to Haswell-v4: hv1 lacks" in err
    forced = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v4", "--host", host, "--force",
        "--accept-signature-change", *db,
    )  # fmt: skip
    assert forced[0] == 0 and api_guest(db).pin.version == "Haswell-v4"


def test_an_explicit_version_is_checked_against_the_pool(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined_with(capsys, tmp_path, db, "Haswell-v2")
    small = kvm_host_file(tmp_path, "hv2", "Haswell-v2")
    assert run(capsys, "fleet", "add", small, "--pool", "rack", *db)[0] == 0
    code, _out, err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v4", "--pool", "rack", *db
    )
    assert code == 3 and "pool rack lacks" in err


def test_without_host_or_pool_every_stored_host_of_the_accelerator_must_run_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    defined_with(capsys, tmp_path, db, "Haswell-v2")
    assert run(capsys, "domain", "update-cpu", "web1", "--to", "v3", "--dry-run", *db)[0] == 0
    small = kvm_host_file(tmp_path, "hv3", "Haswell-v2")
    assert run(capsys, "fleet", "add", small, "--pool", "rack", *db)[0] == 0
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--to", "v3", *db)
    assert code == 3 and "hv3 lacks" in err


def kvm_host_file(tmp_path: Path, name: str, runs: str) -> str:
    """A KVM host offering exactly what ``runs`` needs under pc-q35-10.0."""
    catalog = open_catalog("10.0")
    machine = catalog.machine("pc-q35-10.0")
    offers = catalog.effective(catalog.lookup(runs), machine, "kvm").features
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(HostCapabilities(name, {"kvm": offers}).to_json()))
    return str(path)
