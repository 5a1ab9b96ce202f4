"""A QEMU upgrade, asked before it is made: one host (`cpuver host diff FILE --qemu 10.0
--to-qemu 11.1`) or a pool with its stored guests (`cpuver fleet what-if --qemu 11.1 --pool P`),
the hosts as they are, under the other release's catalog.

Hosts: libvirt's capabilities caches of two real AMD machines under QEMU 10.0 (an EPYC 9654 and a
Ryzen 9 3900X, tests/data/libvirt), and a host snapshot probed for both 10.0 and 11.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuver.api.catalogs import open_catalog
from cpuver.api.hosts import offers_under, read_host, release_change
from cpuver.cli import main
from cpuver.host.capabilities import AccelOffer, HostFacts
from cpuver.host.capabilities import build as build_host
from replays import manifest, text_of

EPYC, RYZEN = "qemu-10.0.0-amd-epyc-9654", "qemu-10.0.0-amd-ryzen-9-3900x"


def cache_file(tmp_path: Path, recording: str, name: str) -> str:
    entry = next(e for e in manifest() if e["replies"].startswith(recording))
    path = tmp_path / f"{name}.xml"
    path.write_text(text_of(entry, "caps"))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'cpuver.db'}"]


# ---------------------------------------------------------------------------------- one host


def test_a_host_probed_for_the_release_gives_exactly_its_record(tmp_path: Path) -> None:
    host = read_host(cache_file(tmp_path, EPYC, "hv1"))
    found = offers_under(host, "kvm", open_catalog("10.0"))
    assert found is not None
    assert (found.probed, found.unknown) == ("10.0", {})
    assert found.features == host.offered("kvm", "10.0")


def test_under_a_newer_qemu_what_the_older_one_could_not_name_is_unknown(tmp_path: Path) -> None:
    host = read_host(cache_file(tmp_path, EPYC, "hv1"))
    found = offers_under(host, "kvm", open_catalog("11.1"))
    assert found is not None and found.probed == "10.0"
    assert "cet-ss" in found.unknown and "cet-ss" not in found.features
    assert found.unknown["cet-ss"] == (
        "QEMU 10.0, which hv1 was probed with, does not know it: probe it with QEMU 11.1"
    )


def test_tcg_under_another_release_is_that_catalogs_own_record(tmp_path: Path) -> None:
    host = read_host(cache_file(tmp_path, EPYC, "hv1"))
    catalog = open_catalog("11.1")
    found = offers_under(host, "tcg", catalog)
    assert found is not None and (found.features, found.unknown) == (catalog.tcg_offers, {})


def test_release_change_lists_new_versions_the_host_runs_and_may_run(tmp_path: Path) -> None:
    host = read_host(cache_file(tmp_path, EPYC, "hv1"))
    change = release_change(host, open_catalog("10.0"), open_catalog("11.1"), "kvm")
    assert {"EPYC-Rome-v5", "EPYC-Milan-v3", "EPYC-v5"} <= set(change.new_usable)
    blocked = dict(change.new_blocked)
    assert blocked["EPYC-Genoa-v2"] == ("fs-gs-base-ns",)
    assert "fs-gs-base-ns" in change.unknown
    assert (change.unusable, change.usable, change.gone) == ((), (), ())


def test_host_diff_across_releases_in_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _err = run(
        capsys, "host", "diff", cache_file(tmp_path, EPYC, "hv1"), "--qemu", "10.0",
        "--to-qemu", "11.1", "--accel", "kvm",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "host hv1: QEMU 10.0.13 -> QEMU 11.1.3"
    assert "    new version it may run: EPYC-Genoa-v2 (unknown: fs-gs-base-ns)" in lines
    assert any(line.startswith("    new versions it runs: EPYC-Milan-v3, ") for line in lines)


def test_host_diff_across_releases_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _err = run(
        capsys, "host", "diff", cache_file(tmp_path, EPYC, "hv1"), "--qemu", "10.0",
        "--to-qemu", "11.1", "--accel", "kvm", "--json",
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["host"] == "hv1"
    (kvm,) = data["accels"]
    assert (kvm["before"], kvm["after"]) == ("10.0.13", "11.1.3")
    assert kvm["new_blocked"]["EPYC-Genoa-v2"] == ["fs-gs-base-ns"]


def test_host_diff_wants_one_file_with_to_qemu_and_two_without(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    one = cache_file(tmp_path, EPYC, "hv1")
    code, _out, err = run(capsys, "host", "diff", one)
    assert code == 2 and "needs two snapshots A B, or one with --to-qemu" in err
    code, _out, err = run(capsys, "host", "diff", one, one, "--to-qemu", "11.1")
    assert code == 2 and "give one file" in err


# ---------------------------------------------------------------------------------- a pool


@pytest.fixture
def rack(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]) -> list[str]:
    files = [cache_file(tmp_path, EPYC, "hv1"), cache_file(tmp_path, RYZEN, "hv2")]
    code, _out, err = run(capsys, "fleet", "add", *files, "--pool", "rack", *db)
    assert code == 0, err
    return [*db, "--pool", "rack"]


def define(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], name: str, *how: str
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "cpu": how[0]}))
    code, _out, err = run(capsys, "domain", "define", str(path), *how[1:], *db)
    assert code == 0, err


def test_upgrading_the_pool_lists_the_new_versions_it_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], rack: list[str]
) -> None:
    define(capsys, tmp_path, db, "web1", "EPYC,version=best", "--pool", "rack")
    code, out, _err = run(capsys, "fleet", "what-if", "--qemu", "11.1", *rack)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "# what if pool rack ran QEMU 11.1.3 instead of 10.0.13"
    assert "new version EPYC-Genoa-v2 may run on hv1 (only unknown features)" in lines
    assert any(
        line.startswith("new version EPYC-Rome-v5 runs on hv1; hv2 lacks ibrs") for line in lines
    )
    assert "every stored guest still runs where it ran" in lines


def test_a_pin_the_other_release_lacks_strands_its_guest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], rack: list[str]
) -> None:
    host = cache_file(tmp_path, EPYC, "hv1")
    define(capsys, tmp_path, db, "new1", "EPYC-Rome-v5", "--host", host, "--qemu", "11.1")
    code, out, _err = run(
        capsys, "fleet", "what-if", "--from-qemu", "11.1", "--qemu", "10.0", *rack, "--json"
    )
    data = json.loads(out)
    assert code == 0 and (data["before"], data["after"]) == ("11.1.3", "10.0.13")
    (guest,) = data["guests"]
    assert guest["guest"] == "new1" and guest["stranded"] is True
    assert "pinned version EPYC-Rome-v5 no longer exists in catalog 10.0.13" in guest["problems"]


def test_a_host_that_would_offer_less_under_the_new_qemu_loses_its_guests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    catalog = open_catalog("10.0")
    needs = catalog.effective(catalog.lookup("EPYC-Rome-v1"), catalog.machine(None), "kvm").features
    facts = HostFacts(vendor="AuthenticAMD")
    releases = {
        "10.0": {"kvm": AccelOffer(needs, "kvm")},
        "11.1": {"kvm": AccelOffer(needs - {"xsaves"}, "kvm")},
    }
    path = tmp_path / "hv9.json"
    path.write_text(json.dumps(build_host("hv9", releases, facts).to_json()))
    code, _out, err = run(capsys, "fleet", "add", str(path), "--pool", "small", *db)
    assert code == 0, err
    define(capsys, tmp_path, db, "db1", "EPYC-Rome-v1", "--host", str(path))
    code, out, _err = run(capsys, "fleet", "what-if", "--qemu", "11.1", "--pool", "small", *db)
    assert code == 0
    assert (
        "guest db1 (EPYC-Rome-v1) could run on no host of the pool: hv9 would lack xsaves"
        in out.splitlines()
    )
    assert "EPYC-Rome: EPYC-Rome-v1 -> (none runs on every host)" in out.splitlines()


def test_what_if_without_changes_or_release_says_what_it_needs(
    capsys: pytest.CaptureFixture[str], rack: list[str]
) -> None:
    code, _out, err = run(capsys, "fleet", "what-if", *rack)
    assert code == 2
    assert "what-if needs --drop and/or --add features, or --qemu X.Y alone" in err
