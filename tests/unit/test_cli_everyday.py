"""Everyday use of the CLI: undefine, cancelling an update, snapshots, exit codes, ``--json``.

As a libvirt administrator expects from virsh: a name is free again after ``undefine``; a pending
update that no host can run can be dropped; every command that prints answers ``--json`` with one
stable shape; errors are JSON then too; exit codes tell success, error, usage and refusal apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from cpuver.api import open_catalog
from cpuver.cli import build_parser, main
from cpuver.cli.output import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from fleet_hosts import tcg_host_file


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'guests.db'}"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = EXIT_OK) -> Any:
    got, out, err = run(capsys, *argv, "--json")
    assert got == code, err
    return json.loads(out)


@pytest.fixture
def host(tmp_path: Path) -> str:
    return tcg_host_file(tmp_path)


@pytest.fixture
def web1(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], host: str) -> str:
    """Guest web1 defined (Westmere-v1 under TCG, shut off)."""
    path = tmp_path / "web1.json"
    path.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Westmere"}))
    code, _out, err = run(capsys, "domain", "define", str(path), "--accel", "tcg", *db)
    assert code == EXIT_OK, err
    return str(path)


# -- undefine --------------------------------------------------------------------------------------


def test_undefine_removes_the_guest_and_keeps_its_history(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    code, out, _err = run(capsys, "domain", "undefine", "web1", *db)
    assert code == EXIT_OK
    assert out.strip() == "web1 undefined (CPU history kept: cpuver domain history web1)"
    assert run_json(capsys, "domain", "list", *db) == []
    reasons = [entry["reason"] for entry in run_json(capsys, "domain", "history", "web1", *db)]
    assert reasons[-1] == "undefine"


def test_a_name_can_be_defined_again_after_undefine(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    run(capsys, "domain", "undefine", "web1", *db)
    again = run_json(capsys, "domain", "define", web1, "--accel", "tcg", *db)
    assert (again["guest"]["name"], again["guest"]["generation"]) == ("web1", 1)


def test_undefine_with_delete_history_leaves_no_trace(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    run(capsys, "domain", "undefine", "web1", "--delete-history", *db)
    code, _out, err = run(capsys, "domain", "history", "web1", *db)
    assert code == EXIT_ERROR
    assert "no guest named 'web1'" in err


def test_undefine_of_a_running_guest_is_refused(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str], host: str
) -> None:
    run(capsys, "domain", "start", "web1", "--host", host, *db)
    code, _out, err = run(capsys, "domain", "undefine", "web1", *db)
    assert code == EXIT_REFUSED
    assert "cannot undefine guest 'web1': it is running on 'hv1'" in err


# -- update-cpu --cancel ---------------------------------------------------------------------------


def pending_update(capsys: pytest.CaptureFixture[str], db: list[str], host: str) -> None:
    """web1 runs on hv1 with an update to Westmere-v2 waiting for its next cold boot."""
    run(capsys, "domain", "start", "web1", "--host", host, *db)
    code, _out, err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v2", "--accept-signature-change", *db
    )
    assert code == EXIT_OK, err


def test_cancel_drops_a_pending_update_and_keeps_the_cpu(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str], host: str
) -> None:
    pending_update(capsys, db, host)
    answer = run_json(capsys, "domain", "update-cpu", "web1", "--cancel", *db)
    assert answer["cancelled"] == "Westmere-v2"
    assert (answer["guest"]["cpu"], answer["guest"]["pending"]) == ("Westmere-v1", None)


def test_after_cancel_the_guest_can_be_updated_again(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str], host: str
) -> None:
    pending_update(capsys, db, host)
    run(capsys, "domain", "update-cpu", "web1", "--cancel", *db)
    code, _out, err = run(
        capsys, "domain", "update-cpu", "web1", "--to", "v2", "--accept-signature-change", *db
    )
    assert code == EXIT_OK, err


def test_cancel_without_a_pending_update_is_refused(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    code, _out, err = run(capsys, "domain", "update-cpu", "web1", "--cancel", *db)
    assert code == EXIT_REFUSED
    assert "has no pending CPU update to cancel" in err


def test_cancel_with_a_target_version_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    code, _out, _err = run(capsys, "domain", "update-cpu", "web1", "--cancel", "--to", "v2", *db)
    assert code == EXIT_USAGE


# -- snapshots -------------------------------------------------------------------------------------


def test_snapshot_list_names_every_snapshot_in_order(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    for name in ("before-upgrade", "after-upgrade"):
        run(capsys, "domain", "snapshot", "create", "web1", name, *db)
    _code, out, _err = run(capsys, "domain", "snapshot", "list", "web1", *db)
    assert out.splitlines() == ["before-upgrade", "after-upgrade"]


def test_snapshot_revert_says_what_it_did(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    run(capsys, "domain", "snapshot", "create", "web1", "s1", *db)
    _code, out, _err = run(capsys, "domain", "snapshot", "revert", "web1", "s1", *db)
    assert out.strip() == "web1: snapshot s1 reverted to; CPU Westmere-v1 (unchanged)"


def test_snapshot_create_needs_a_snapshot_name(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    code, _out, err = run(capsys, "domain", "snapshot", "create", "web1", *db)
    assert code == EXIT_USAGE
    assert "needs a SNAPSHOT name" in err


# -- --json and exit codes -------------------------------------------------------------------------


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += leaf_parsers(child, (*path, name))
    return found or [(path, parser)]


SPEAKS_ANOTHER_PROTOCOL = {("serve",), ("libvirt-hook",)}
"""The service speaks HTTP; the hook answers libvirt with its exit code and one line."""


def test_every_command_that_prints_takes_json() -> None:
    lacking = [
        " ".join(path)
        for path, parser in leaf_parsers(build_parser())
        if path not in SPEAKS_ANOTHER_PROTOCOL and "--json" not in parser._option_string_actions
    ]
    assert lacking == []


def test_resolve_json_is_a_list_even_for_one_spec(capsys: pytest.CaptureFixture[str]) -> None:
    answer = run_json(capsys, "resolve", "Haswell-v4", "--accel", "tcg")
    assert [entry["name"] for entry in answer] == ["Haswell-v4"]


def test_domain_list_json_has_the_guest_shape(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str]
) -> None:
    [guest] = run_json(capsys, "domain", "list", *db)
    assert set(guest) == {
        "name", "state", "host", "cpu", "machine", "accel", "pending", "fingerprint", "generation"
    }  # fmt: skip
    assert (guest["name"], guest["state"], guest["cpu"]) == ("web1", "shutoff", "Westmere-v1")


def test_a_bad_spec_with_json_is_a_json_error_with_the_position(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = run_json(capsys, "resolve", "Haswell,verison=best", code=EXIT_ERROR)
    assert error["exit"] == EXIT_ERROR
    assert error["error"].startswith("unknown option 'verison' (did you mean version?)")
    assert (error["spec"], error["position"], error["end"]) == ("Haswell,verison=best", 8, 15)


def test_a_refusal_with_json_is_a_json_error_with_exit_3(
    capsys: pytest.CaptureFixture[str], web1: str, db: list[str], host: str
) -> None:
    error = run_json(capsys, "domain", "migrate", "web1", "--to", host, *db, code=EXIT_REFUSED)
    assert error["exit"] == EXIT_REFUSED
    assert "cannot migrate guest 'web1'" in error["error"]


def test_a_usage_error_with_json_is_a_json_error_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = run_json(capsys, "resolve", "Haswell", "--accel", "hvf", code=EXIT_USAGE)
    assert error["exit"] == EXIT_USAGE
    assert "invalid choice: 'hvf'" in error["error"]


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for code in ("0 success", "1 error", "2 usage error", "3 refused", "130 interrupted"):
        assert code in shown


# -- host arguments --------------------------------------------------------------------------------


def test_a_stored_host_is_named_where_a_host_file_is_taken(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], host: str, web1: str
) -> None:
    run(capsys, "fleet", "add", host, "--pool", "rack3", *db)
    Path(host).unlink()  # the fleet has it now
    [answer] = run_json(capsys, "resolve", "Westmere,version=best", "--host", "hv1", *db)
    assert answer["name"] == "Westmere-v1"
    started = run_json(capsys, "domain", "start", "web1", "--host", "hv1", *db)
    assert started["guest"]["host"] == "hv1"


def test_a_host_that_is_neither_a_file_nor_stored_is_named(
    capsys: pytest.CaptureFixture[str], db: list[str]
) -> None:
    code, _out, err = run(capsys, "resolve", "Westmere", "--host", "hv7", *db)
    assert code == EXIT_ERROR
    assert "no host file hv7 and no stored host named 'hv7'" in err


def test_an_xml_document_as_host_file_is_named_for_what_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    domain = tmp_path / "web1.xml"
    domain.write_text("<?xml version='1.0'?>\n<!-- a guest -->\n<domain type='kvm'/>\n")
    code, _out, err = run(capsys, "resolve", "Westmere", "--host", str(domain))
    assert code == EXIT_ERROR
    assert f"{domain}: an XML document (<domain>), not a host snapshot (expected a cpuver" in err


def test_a_saved_guest_as_host_file_is_named_for_what_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: list[str], host: str, web1: str
) -> None:
    saved = tmp_path / "web1.saved"
    run(capsys, "domain", "start", "web1", "--host", host, *db)
    run(capsys, "domain", "save", "web1", str(saved), *db)
    code, _out, err = run(capsys, "resolve", "Westmere", "--host", str(saved))
    assert code == EXIT_ERROR
    assert "a saved cpuver guest (cpuver domain save), not a host snapshot" in err


def test_a_host_probed_for_another_qemu_release_is_said(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "hv1-7.2.json"
    path.write_text(json.dumps(probed_for_7_2_only("hv1")))
    [answer] = run_json(capsys, "resolve", "Westmere", "--host", str(path), "--qemu", "10.0")
    assert answer["notes"] == [
        "host hv1 was probed for QEMU 7.2, not 10.0: its QEMU 7.2 offers are used "
        "(probe it with QEMU 10.0, or choose --qemu 7.2)"
    ]


def probed_for_7_2_only(name: str) -> dict[str, Any]:
    """A cpuver-host/2 snapshot whose only probe is QEMU 7.2's TCG."""
    offers = sorted(open_catalog("7.2").tcg_offers)
    return {
        "schema": "cpuver-host/2",
        "host": name,
        "cpu": {"vendor": "GenuineIntel", "brand": "test"},
        "vulnerabilities": {},
        "releases": {"7.2": {"tcg": {"features": offers, "provenance": {"method": "qemu"}}}},
    }


def test_best_without_a_host_says_how_to_give_one_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = run(capsys, "resolve", "Haswell,version=best", "--accel", "kvm")
    assert code == EXIT_ERROR
    assert "version=best needs what the host offers under kvm (give --host FILE" in err
