"""The ``cpuver`` command as a user runs it: output shapes, catalogs, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cpuver.catalog.files import bundled_dir, dump, load
from cpuver.cli import main
from cpuver.cli.output import EXIT_ERROR, EXIT_REFUSED, EXIT_USAGE
from cpuver.host.capabilities import SNAPSHOT_SCHEMA_V1 as SNAPSHOT_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "cpuver"

RESOLUTION_KEYS = {
    "spec",
    "name",
    "model",
    "version",
    "features",
    "signature",
    "rule",
    "blockers",
    "qemu_cpu_arg",
    "libvirt_xml",
}
IDENTITY = ("vendor", "family", "model", "stepping", "model-id")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def tcg_features(capsys: pytest.CaptureFixture[str], spec: str) -> list[str]:
    features: list[str] = run_json(capsys, "resolve", spec, "--accel", "tcg")[0]["features"]
    return features


@pytest.fixture
def host_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A TCG host snapshot offering what Haswell-v4 needs, without TSX and without avx2."""
    features = set(tcg_features(capsys, "Haswell-v4")) - {"avx2"}
    path = tmp_path / "host.json"
    snapshot = {
        "schema": SNAPSHOT_SCHEMA,
        "host": "node7",
        "accelerators": {"tcg": {"features": sorted(features)}},
    }
    path.write_text(json.dumps(snapshot))
    return path


def assert_one_error(
    code: int, out: str, err: str, *fragments: str, exit_code: int = EXIT_ERROR
) -> None:
    assert code == exit_code
    assert out == ""
    assert err.startswith("cpuver: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# ------------------------------------------------------------------------------ models


def test_models_json_has_the_shape_of_query_cpu_definitions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = run_json(capsys, "models", "--machine", "pc-q35-10.0", "--accel", "kvm")
    assert all({"name", "deprecated", "migration-safe"} <= set(e) for e in entries)
    assert all(isinstance(e["deprecated"], bool) for e in entries)
    assert not any("unavailable-features" in e for e in entries)


def test_models_json_reports_alias_of_only_for_aliases_under_the_machine_type(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = by_name(run_json(capsys, "models", "--machine", "pc-q35-10.0", "--accel", "tcg"))
    assert entries["Haswell"]["alias-of"] == "Haswell-v1"
    assert entries["Haswell-noTSX"]["alias-of"] == "Haswell-v2"
    assert "alias-of" not in entries["Haswell-v1"]


def test_models_json_under_microvm_maps_bare_names_to_the_latest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = by_name(run_json(capsys, "models", "--machine", "microvm", "--accel", "tcg"))
    assert entries["Haswell"]["alias-of"] == "Haswell-v4"


def test_models_json_under_a_legacy_machine_reports_no_alias_for_bare_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = by_name(run_json(capsys, "models", "--machine", "pc-i440fx-2.4", "--accel", "tcg"))
    assert "alias-of" not in entries["Haswell"]


def test_models_json_with_a_host_reports_unavailable_features(
    capsys: pytest.CaptureFixture[str], host_file: Path
) -> None:
    entries = by_name(run_json(capsys, "models", "--host", str(host_file), "--accel", "tcg"))
    assert entries["Haswell-v4"]["unavailable-features"] == ["avx2"]
    assert entries["Haswell-v3"]["unavailable-features"] == ["avx2", "hle", "rtm"]
    assert entries["486-v1"]["unavailable-features"] == []


def test_models_text_starts_with_a_header_naming_catalog_machine_and_accel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _err = run(capsys, "models", "--accel", "tcg")
    assert code == 0
    header = out.splitlines()[0]
    assert header.startswith("# catalog QEMU 10.0.13")
    assert "machine pc-q35-10.0; accel tcg" in header


def test_host_file_with_one_accelerator_picks_it(
    capsys: pytest.CaptureFixture[str], host_file: Path
) -> None:
    assert run_json(capsys, "resolve", "Haswell-v4", "--host", str(host_file))[0]["accel"] == "tcg"


# ------------------------------------------------------------------------------ resolve


def test_resolve_json_of_several_specs_is_a_list_in_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = run_json(capsys, "resolve", "Haswell-noTSX", "Haswell", "--accel", "tcg")
    assert [r["spec"] for r in results] == ["Haswell-noTSX", "Haswell"]
    assert [r["name"] for r in results] == ["Haswell-v2", "Haswell-v1"]


def test_resolve_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    results = run_json(capsys, "resolve", "Haswell", "Haswell-v4", "--accel", "tcg")
    for result in results:
        assert set(result) >= RESOLUTION_KEYS
        assert set(IDENTITY) <= set(result["signature"])


def test_resolve_json_describes_the_resolution(capsys: pytest.CaptureFixture[str]) -> None:
    [result] = run_json(capsys, "resolve", "Haswell,version=2.4.0", "--accel", "tcg")
    assert (result["name"], result["model"], result["version"]) == (
        "Haswell-2.4.0",
        "Haswell",
        "Haswell-v1",
    )
    assert result["rule"] == "release"
    assert result["signature"]["stepping"] == 1
    assert "abm" not in result["features"]
    assert result["features"] == sorted(result["features"])
    assert result["qemu_cpu_arg"] == "Haswell-v1,stepping=1,abm=off"
    assert result["libvirt_xml"].startswith("<cpu mode='custom'")


def test_resolve_json_of_best_lists_blockers(
    capsys: pytest.CaptureFixture[str], host_file: Path
) -> None:
    host = ["--host", str(host_file)]
    [result] = run_json(capsys, "resolve", "486,version=best", *host)
    assert (result["name"], result["rule"], result["blockers"]) == ("486-v1", "best", {})


def test_resolve_text_shows_name_rule_and_cpu_arg(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "resolve", "Haswell-noTSX", "--accel", "tcg")
    assert code == 0
    assert out.startswith("Haswell-noTSX -> Haswell-v2  (alias: ")
    assert "  -cpu Haswell-v2\n" in out


def test_qemu_option_selects_the_7_2_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "models", "--qemu", "7.2", "--accel", "tcg")
    assert code == 0
    assert out.splitlines()[0].startswith("# catalog QEMU 7.2.22 ")
    assert "pc-q35-7.2" in out.splitlines()[0]
    assert "\nEPYC-Genoa " not in out


def test_qemu_option_changes_the_default_machine_type(capsys: pytest.CaptureFixture[str]) -> None:
    [result] = run_json(capsys, "resolve", "Haswell", "--qemu", "7.2", "--accel", "tcg")
    assert result["machine"] == "pc-q35-7.2"


def test_catalog_option_reads_a_catalog_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dump(load(bundled_dir("10.0")), tmp_path)
    spec = ("resolve", "Haswell,version=2.4.0", "--accel", "tcg")
    assert run_json(capsys, *spec, "--catalog", str(tmp_path)) == run_json(capsys, *spec)


def test_catalog_option_header_names_the_catalog_build(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dump(load(bundled_dir("7.2")), tmp_path)
    code, out, _err = run(capsys, "models", "--catalog", str(tmp_path), "--accel", "tcg")
    assert code == 0
    assert out.startswith("# catalog QEMU 7.2.22 (QEMU emulator version 7.2.22 ")


# ------------------------------------------------------------------------------ show, diff


def test_show_lists_every_version_with_what_it_added_and_removed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _err = run(capsys, "show", "Haswell")
    assert code == 0
    lines = out.splitlines()
    versions = [line.split()[0] for line in lines if line.startswith("Haswell-v")]
    assert versions == ["Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4"]
    assert "Haswell-v2 (alias Haswell-noTSX) since 4.1.0" in lines
    assert lines[lines.index("Haswell-v2 (alias Haswell-noTSX) since 4.1.0") + 1].startswith(
        "  -hle -rtm stepping=1"
    )
    assert any(line.startswith("  +hle +rtm +spec-ctrl") for line in lines)


def test_show_lists_how_old_machine_types_changed_the_bare_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _code, out, _err = run(capsys, "show", "Haswell")
    assert "  up to pc-i440fx-2.4: then +abm" in out.splitlines()


def test_show_json_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _err = run(capsys, "show", "Haswell", "--json")
    json.loads(out)


def test_diff_shows_lost_features_and_signature_changes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _err = run(capsys, "diff", "Haswell-v1", "Haswell-v2", "--accel", "tcg")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Haswell-v1 -> Haswell-v2"
    assert "  lost:   hle rtm" in lines
    assert "  gained: -" in lines
    assert "  stepping: 4 -> 1" in lines


def test_diff_warns_that_a_signature_change_may_trigger_reactivation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _code, out, _err = run(capsys, "diff", "Haswell-v1", "Haswell-v2", "--accel", "tcg")
    assert "note: the CPU signature changes; guests like Windows may re-activate" in out


def test_diff_without_identity_change_has_no_reactivation_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _code, out, _err = run(capsys, "diff", "Haswell-v1", "Haswell-v1,-hle", "--accel", "tcg")
    assert "  lost:   hle" in out.splitlines()
    assert "re-activate" not in out


def test_diff_json(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "diff", "Haswell-v1", "Haswell-v2", "--accel", "tcg")
    assert result["lost"] == ["hle", "rtm"]
    assert result["signature"]["stepping"] == {"a": 4, "b": 1}
    assert result["identity-changed"] is True


# ------------------------------------------------------------------------------ errors


def test_unknown_model_is_one_line_with_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve", "Haswel", "--accel", "tcg")
    assert_one_error(code, out, err, "unknown CPU model 'Haswel'", "did you mean Haswell")
    assert err.count("\n") == 1


def test_bad_spec_points_at_the_bad_item_with_a_caret(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve", "Haswell,+pcid,bogus", "--accel", "tcg")
    assert_one_error(code, out, err, "unknown item 'bogus'")
    text_line, marker_line = err.splitlines()[1:3]
    assert text_line.strip() == "Haswell,+pcid,bogus"
    assert marker_line.index("^") == text_line.index("bogus")
    assert marker_line.strip() == "^^^^^"


def test_unknown_machine_type_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve", "Haswell", "--machine", "pc-q99", "--accel", "tcg")
    assert_one_error(code, out, err, "unknown machine type 'pc-q99'")


def test_unreadable_host_file_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"
    code, out, err = run(capsys, "resolve", "Haswell", "--host", str(missing))
    assert_one_error(code, out, err, f"cannot read host file {missing}")


def test_malformed_host_json_is_an_error_with_line_and_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "host.json"
    path.write_text('{"schema":\n}\n')
    code, out, err = run(capsys, "resolve", "Haswell", "--host", str(path))
    assert_one_error(code, out, err, f"{path}: not valid JSON at line 2 column 1")


def test_host_file_of_the_wrong_schema_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"schema": "other/9", "host": "h", "accelerators": {}}))
    code, out, err = run(capsys, "models", "--host", str(path))
    assert_one_error(code, out, err, "schema: 'other/9'")


def test_unknown_qemu_release_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--qemu", "banana")
    assert_one_error(code, out, err, "unknown QEMU release 'banana'")


def test_missing_catalog_directory_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "models", "--catalog", str(tmp_path / "none"))
    assert_one_error(code, out, err, "not a catalog directory")


def test_best_that_nothing_satisfies_lists_blockers_and_fails(
    capsys: pytest.CaptureFixture[str], host_file: Path
) -> None:
    code, out, err = run(capsys, "resolve", "Haswell,version=best", "--host", str(host_file))
    assert_one_error(
        code,
        out,
        err,
        "Haswell-v4: missing avx2",
        "Haswell-v1: missing avx2, hle",
        exit_code=EXIT_REFUSED,
    )


def test_usage_error_exits_2_with_the_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith("usage: cpuver resolve")
    assert "cpuver: error: cpuver resolve: the following arguments are required: SPEC" in err


# ------------------------------------------------------------------------------ console script


def test_console_script_runs_and_prints_json() -> None:
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), "resolve", "Haswell-noTSX", "--accel", "tcg", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert (completed.returncode, completed.stderr) == (0, "")
    assert json.loads(completed.stdout)[0]["qemu_cpu_arg"] == "Haswell-v2"


def test_console_script_error_exits_1_without_traceback() -> None:
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), "resolve", "Nehalem-v99", "--accel", "tcg"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith("cpuver: error: unknown CPU model version 'Nehalem-v99'")
    assert "Traceback" not in completed.stderr
