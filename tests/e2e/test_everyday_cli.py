"""Everyday use through the ``cpuver`` command as a process, as a virsh user scripts it: the exit
code says success (0), error (1), usage (2) or refusal (3); ``--json`` gives one document on
stdout, for errors too (with the exit code in it; the one-line message stays on stderr); a guest
undefined frees its name; a pending update is cancelled; snapshots are listed and a revert says
what it did; a stored host is named as ``--host``.
(The same behaviours one by one, in-process: tests/unit/test_cli_everyday.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleet_hosts import tcg_host_file
from servers import cpuver_script

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cpuver(tmp_path: Path) -> Run:
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    db = ["--db", f"sqlite:///{tmp_path / 'guests.db'}"]

    def run(*argv: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [cpuver_script(), *argv, *db], capture_output=True, text=True, timeout=120, env=env,
            check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, done.stderr
        return done

    return run


@pytest.fixture
def hv1(tmp_path: Path) -> str:
    return tcg_host_file(tmp_path)


@pytest.fixture
def web1(tmp_path: Path, cpuver: Run) -> str:
    """Guest web1 defined (Westmere-v1 under TCG, shut off); the path of its definition."""
    path = tmp_path / "web1.json"
    path.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Westmere"}))
    cpuver("domain", "define", str(path), "--accel", "tcg")
    return str(path)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_undefine_frees_the_name_for_a_new_definition(cpuver: Run, web1: str) -> None:
    cpuver("domain", "undefine", "web1")
    assert as_json(cpuver("domain", "list", "--json")) == []
    again = as_json(cpuver("domain", "define", web1, "--accel", "tcg", "--json"))
    assert again["guest"]["name"] == "web1"


def test_a_pending_update_is_cancelled_and_the_pin_kept(cpuver: Run, web1: str, hv1: str) -> None:
    cpuver("domain", "start", "web1", "--host", hv1)
    cpuver("domain", "update-cpu", "web1", "--to", "v2", "--accept-signature-change")
    answer = as_json(cpuver("domain", "update-cpu", "web1", "--cancel", "--json"))
    assert (answer["cancelled"], answer["guest"]["cpu"]) == ("Westmere-v2", "Westmere-v1")


def test_snapshots_are_listed_and_a_revert_says_what_it_did(cpuver: Run, web1: str) -> None:
    cpuver("domain", "snapshot", "create", "web1", "before-upgrade")
    listed = as_json(cpuver("domain", "snapshot", "list", "web1", "--json"))
    assert listed["snapshots"] == ["before-upgrade"]
    reverted = cpuver("domain", "snapshot", "revert", "web1", "before-upgrade").stdout
    assert "snapshot before-upgrade reverted to; CPU Westmere-v1 (unchanged)" in reverted


def test_a_refusal_exits_3_with_a_json_error(cpuver: Run, web1: str) -> None:
    error = as_json(cpuver("domain", "update-cpu", "web1", "--cancel", "--json", code=3))
    assert error["exit"] == 3
    assert "no pending CPU update" in error["error"]


def test_a_usage_error_exits_2_with_a_json_error(cpuver: Run) -> None:
    error = as_json(cpuver("domain", "snapshot", "create", "web1", "--json", code=2))
    assert error["exit"] == 2
    assert "needs a SNAPSHOT name" in error["error"]


def test_an_error_exits_1_with_the_bad_spans_position(cpuver: Run) -> None:
    done = cpuver("resolve", "Haswell,verison=best", "--accel", "tcg", "--json", code=1)
    error = as_json(done)
    assert "unknown option 'verison' (did you mean version?)" in error["error"]
    assert (error["exit"], error["position"]) == (1, len("Haswell,"))
    assert "Haswell,verison=best\n            ^^^^^^^" in done.stderr


def test_resolve_json_is_a_list_for_one_spec(cpuver: Run) -> None:
    answer = as_json(cpuver("resolve", "Haswell-v4", "--accel", "tcg", "--json"))
    assert [entry["name"] for entry in answer] == ["Haswell-v4"]


def test_a_stored_host_is_named_as_host(cpuver: Run, web1: str, hv1: str) -> None:
    cpuver("fleet", "add", hv1, "--pool", "rack1")
    started = as_json(cpuver("domain", "start", "web1", "--host", "hv1", "--json"))
    assert (started["guest"]["state"], started["guest"]["host"]) == ("running", "hv1")
