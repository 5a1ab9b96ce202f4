"""`cpuver fleet ...` and `cpuver pool ...` as a user runs them, on a temporary SQLite store.

Pool rack3: hv1 and hv2 offer (under KVM, QEMU 10.0) everything Haswell-v3 and Cooperlake-v2
need; hv3 offers the same without TSX (hle, rtm), as after a microcode update.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuver.cli import main
from fleet_hosts import TSX, capable, snapshot


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot_file(tmp_path: Path, name: str, offers: frozenset[str]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(snapshot(name, offers)))
    return str(path)


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'cpuver.db'}"]


@pytest.fixture
def rack3(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]) -> list[str]:
    files = [
        snapshot_file(tmp_path, "hv1", capable()),
        snapshot_file(tmp_path, "hv2", capable()),
        snapshot_file(tmp_path, "hv3", capable() - TSX),
    ]
    code, _out, err = run(capsys, "fleet", "add", *files, "--pool", "rack3", *db)
    assert code == 0, err
    return [*db, "--pool", "rack3"]


def define_guest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], name: str, cpu: str
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu}))
    host = str(tmp_path / "hv1.json")
    code, _out, err = run(
        capsys, "domain", "define", str(path), "--host", host, "--accel", "kvm", *db
    )
    assert code == 0, err


# -- fleet add / ls / rm --------------------------------------------------------------------------


def test_add_reports_progress_per_file_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    files = [snapshot_file(tmp_path, f"hv{i}", capable()) for i in (1, 2)]
    code, out, err = run(capsys, "fleet", "add", *files, "--pool", "rack3", *db)
    assert code == 0
    assert err.splitlines() == ["read 1/2 hv1", "read 2/2 hv2", "added 1/2 hv1", "added 2/2 hv2"]
    assert "2 host(s)" in out


def test_add_with_one_bad_snapshot_stores_none_of_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    good = snapshot_file(tmp_path, "hv1", capable())
    bad = tmp_path / "hv2.json"
    bad.write_text('{"schema": "cpuver-host/2", "host": "hv2"')
    code, _out, err = run(capsys, "fleet", "add", good, str(bad), "--pool", "rack3", *db)
    assert code == 1
    assert "hv2.json" in err
    code, out, _err = run(capsys, "fleet", "ls", "--json", *db)
    assert json.loads(out) == []


def test_ls_lists_the_pool_hosts_and_json_has_their_pools(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    _code, out, _err = run(capsys, "fleet", "ls", *rack3)
    assert [line.split()[0] for line in out.splitlines()] == ["hv1", "hv2", "hv3"]
    _code, out, _err = run(capsys, "fleet", "ls", "--json", *rack3)
    assert [(h["host"], h["pools"]) for h in json.loads(out)] == [
        ("hv1", ["rack3"]), ("hv2", ["rack3"]), ("hv3", ["rack3"]),
    ]  # fmt: skip


def test_re_adding_a_host_refreshes_it_and_counts_its_snapshots(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str]
) -> None:
    again = snapshot_file(tmp_path, "hv1", capable() - TSX)
    run(capsys, "fleet", "add", again, *rack3)
    _code, out, _err = run(capsys, "fleet", "ls", "--json", *rack3)
    assert {h["host"]: h["snapshots"] for h in json.loads(out)} == {"hv1": 2, "hv2": 1, "hv3": 1}


def test_rm_forgets_the_host_and_an_unknown_one_is_an_error(
    capsys: pytest.CaptureFixture[str], rack3: list[str], db: list[str]
) -> None:
    assert run(capsys, "fleet", "rm", "hv3", *db)[0] == 0
    _code, out, _err = run(capsys, "fleet", "ls", *db)
    assert [line.split()[0] for line in out.splitlines()] == ["hv1", "hv2"]
    code, _out, err = run(capsys, "fleet", "rm", "hv3", *db)
    assert code == 1
    assert "no host named 'hv3'" in err


def test_unknown_pool_is_an_error(capsys: pytest.CaptureFixture[str], rack3: list[str]) -> None:
    code, _out, err = run(capsys, "pool", "baseline", *rack3[:2], "--pool", "rack9")
    assert code == 1
    assert "no pool named 'rack9'" in err


# -- pool best / matrix / baseline ----------------------------------------------------------------


def test_pool_best_names_the_host_holding_tsx_versions_back_with_hle_rtm(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    code, out, _err = run(capsys, "pool", "best", "Haswell", *rack3)
    assert code == 0
    lines = out.splitlines()
    assert "Haswell: Haswell-v4" in lines
    assert "    Haswell-v3: hv3 lacks hle, rtm" in lines
    assert "    Haswell-v1: hv3 lacks hle, rtm" in lines


def test_pool_best_lists_every_blocked_newer_version_with_its_hosts(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    _code, out, _err = run(capsys, "pool", "best", "Cooperlake", "--json", *rack3)
    answer = json.loads(out)
    assert answer["best"] is None
    assert answer["blocked"] == {
        "Cooperlake-v2": {"hv3": ["hle", "rtm"]},
        "Cooperlake-v1": {"hv3": ["hle", "rtm"]},
    }


def test_pool_matrix_has_one_column_per_host(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    _code, out, _err = run(capsys, "pool", "matrix", *rack3)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert rows["Haswell-v3"] == ["++.", "2/3"]
    assert rows["Haswell-v4"] == ["+++", "3/3"]
    _code, out, _err = run(capsys, "pool", "matrix", "--json", *rack3)
    data = json.loads(out)
    column = data["versions"].index("Haswell-v1")
    assert data["hosts"] == ["hv1", "hv2", "hv3"]
    assert [row[column] for row in data["runs"]] == [True, True, False]


def test_pool_baseline_gives_each_family_its_pool_best(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    _code, out, _err = run(capsys, "pool", "baseline", *rack3)
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.splitlines()[1:]}
    assert rows["Haswell"] == "Haswell-v4"
    assert rows["Cooperlake"] == "(none runs on every host)"
    _code, out, _err = run(capsys, "pool", "baseline", "--json", *rack3)
    assert json.loads(out)["best"]["Haswell"] == "Haswell-v4"


# -- what-if, targets -----------------------------------------------------------------------------


def test_what_if_drop_tsx_lists_the_changed_pool_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    files = [snapshot_file(tmp_path, name, capable()) for name in ("hv1", "hv2")]
    run(capsys, "fleet", "add", *files, "--pool", "gold", *db)
    code, out, _err = run(
        capsys, "fleet", "what-if", "--drop", "hle,rtm", "--hosts", "hv1", "--pool", "gold", *db
    )
    assert code == 0
    assert "Cooperlake: Cooperlake-v2 -> (none runs on every host) (because of hv1)" in (
        out.splitlines()
    )
    assert "Haswell:" not in out  # Haswell-v4 runs without TSX


def test_what_if_of_some_hosts_keeps_the_rest_of_the_pool(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    """hv3 lacked TSX all along: hv1 losing it changes no answer of the pool rack3."""
    _code, out, _err = run(
        capsys, "fleet", "what-if", "--drop", "hle,rtm", "--hosts", "hv1", "--json", *rack3
    )
    assert json.loads(out)["answers"] == []


def test_what_if_strands_only_guests_left_with_no_host(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    """web1 (Haswell-v3, TSX) runs on hv1 and hv2: hv1 losing TSX leaves it hv2."""
    define_guest(capsys, tmp_path, db, "web1", "Haswell-v3")
    _code, out, _err = run(
        capsys, "fleet", "what-if", "--drop", "hle,rtm", "--hosts", "hv1", "--json", *rack3
    )
    data = json.loads(out)
    assert [(g["guest"], g["host"]) for g in data["guests"]] == [("web1", "hv1")]
    assert data["stranded"] == []
    _code, out, _err = run(
        capsys, "fleet", "what-if", "--drop", "hle,rtm", "--hosts", "hv1,hv2", "--json", *rack3
    )
    assert json.loads(out)["stranded"] == ["web1"]


def test_what_if_of_a_host_outside_the_pool_is_an_error(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    code, _out, err = run(capsys, "fleet", "what-if", "--drop", "hle", "--hosts", "hv9", *rack3)
    assert code == 1
    assert "not in pool 'rack3': hv9" in err


def test_what_if_lists_the_stored_guests_that_lose_hosts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    define_guest(capsys, tmp_path, db, "web1", "Haswell-v3")
    define_guest(capsys, tmp_path, db, "web2", "Haswell-v4")
    _code, out, _err = run(capsys, "fleet", "what-if", "--drop", "hle,rtm", "--json", *rack3)
    data = json.loads(out)
    assert [(g["guest"], g["host"], g["missing"]) for g in data["guests"]] == [
        ("web1", "hv1", ["hle", "rtm"]), ("web1", "hv2", ["hle", "rtm"]),
    ]  # fmt: skip
    assert data["stranded"] == ["web1"]


def test_what_if_with_an_unknown_feature_is_an_error(
    capsys: pytest.CaptureFixture[str], rack3: list[str]
) -> None:
    code, _out, err = run(capsys, "fleet", "what-if", "--drop", "hlee", *rack3)
    assert code == 1
    assert "hlee" in err


@pytest.mark.parametrize("group", ["fleet", "domain"])
def test_targets_names_the_hosts_a_guest_pin_runs_on(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    rack3: list[str],
    db: list[str],
    group: str,
) -> None:
    define_guest(capsys, tmp_path, db, "web1", "Haswell-v3")
    code, out, _err = run(capsys, group, "targets", "web1", *rack3)
    assert code == 0
    assert out.splitlines() == ["web1 can run on: hv1, hv2", "  not on hv3: lacks hle, rtm"]
    _code, out, _err = run(capsys, group, "targets", "web1", "--json", *db)
    assert json.loads(out)["targets"] == ["hv1", "hv2"]


# -- guests resolved against a whole pool ---------------------------------------------------------


def guest_file(tmp_path: Path, name: str, cpu: str) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu}))
    return str(path)


def pinned(capsys: pytest.CaptureFixture[str], db: list[str], name: str) -> str:
    code, out, err = run(capsys, "domain", "list", *db)
    assert code == 0, err
    return next(line.split()[2] for line in out.splitlines() if line.startswith(f"{name} "))


def test_define_with_pool_pins_the_pools_best_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    _code, out, _err = run(capsys, "pool", "best", "Haswell", "--json", *rack3)
    pool_best = json.loads(out)["best"]
    guest = guest_file(tmp_path, "web1", "Haswell,version=best")
    code, out, err = run(capsys, "domain", "define", guest, "--accel", "kvm", *rack3)
    assert code == 0, err
    assert "for pool rack3 (3 hosts)" in out
    assert pinned(capsys, db, "web1") == pool_best


def test_define_with_pool_refuses_what_one_host_lacks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    solo = guest_file(tmp_path, "solo", "Cooperlake,version=best")
    run(capsys, "domain", "define", solo, "--host", str(tmp_path / "hv1.json"), *db)
    assert pinned(capsys, db, "solo") == "Cooperlake-v2"
    pooled = guest_file(tmp_path, "pooled", "Cooperlake,version=best")
    code, _out, err = run(capsys, "domain", "define", pooled, "--accel", "kvm", *rack3)
    assert code == 3
    assert "can run on pool rack3 (3 hosts)" in err
    assert "Cooperlake-v2: missing hle, rtm" in err


def test_define_with_an_empty_pool_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    guest = guest_file(tmp_path, "web1", "Haswell,version=best")
    code, _out, err = run(capsys, "domain", "define", guest, "--pool", "nowhere", *db)
    assert code == 1
    assert "no pool named 'nowhere'" in err


def test_define_takes_a_host_or_a_pool_not_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str]
) -> None:
    guest = guest_file(tmp_path, "web1", "Haswell,version=best")
    assert main(["domain", "define", guest, "--host", str(tmp_path / "hv1.json"), *rack3]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_update_cpu_to_best_for_a_pool_moves_to_the_pools_best(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    define_guest(capsys, tmp_path, db, "web1", "Haswell-v2")
    accept = "--accept-signature-change"
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--to", "best", accept, *rack3)
    assert code == 0, err
    assert pinned(capsys, db, "web1") == "Haswell-v4"


def test_pool_best_groups_hosts_that_lack_the_same_features(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str]
) -> None:
    files = [snapshot_file(tmp_path, f"hv{i}", capable() - TSX) for i in range(1, 8)]
    files.append(snapshot_file(tmp_path, "hv8", capable() - {"spec-ctrl"}))
    run(capsys, "fleet", "add", *files, "--pool", "big", *db)
    code, out, _err = run(capsys, "pool", "best", "Haswell", "--pool", "big", *db)
    assert code == 0
    assert (
        "  Haswell-v3 blocked: hv1, hv2, hv3, hv4, hv5 and 2 more hosts lack hle, rtm; "
        "hv8 lacks spec-ctrl"
    ) in out.splitlines()


def test_targets_count_a_pending_update_the_next_cold_boot_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rack3: list[str], db: list[str]
) -> None:
    """web1 (Haswell-v4, runs everywhere) is to become Haswell-v3 (TSX): hv3 can no longer
    take it, since the next cold boot there would need hle and rtm."""
    define_guest(capsys, tmp_path, db, "web1", "Haswell-v4")
    run(capsys, "domain", "start", "web1", "--host", str(tmp_path / "hv1.json"), *db)
    code, _out, err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v3", "--accept-signature-change",
        "--force", *db,
    )  # fmt: skip
    assert code == 0, err
    _code, out, _err = run(capsys, "domain", "targets", "web1", "--json", *rack3)
    answer = json.loads(out)
    assert answer["targets"] == ["hv1", "hv2"]
    assert answer["blocked"] == {"hv3": ["hle", "rtm"]}
    assert answer["pending"] == "Haswell-v3"
