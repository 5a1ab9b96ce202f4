"""Guests running in real QEMU: started with the pin, live-migrated, saved and restored, verified.

`cpuver domain start --launch` leaves the QEMU process running after cpuver ends; migrate, save
and shutdown then act on that process. Every step reads the running vCPU over QMP and compares
it with the pin.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuver.host.qemu import process_alive
from qemu_install import QemuInstall

CPUVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cpuver"


@pytest.fixture
def cpuver(tmp_path: Path) -> Iterator[object]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    db = ["--db", f"sqlite:///{tmp_path / 'guests.db'}"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        store = db if argv[0] == "domain" else []
        done = subprocess.run(
            [str(CPUVER), *argv, *store],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert done.returncode == 0, (argv, done.stderr)
        return done

    yield run
    run_files = (tmp_path / "state").glob("cpuver/run/*/*/run.json")
    for record in run_files:  # a failing test must not leave QEMU behind
        pid = json.loads(record.read_text())["pid"]
        if process_alive(pid):
            os.kill(pid, 9)


def pid_in(output: str) -> int:
    return int(output.split("QEMU pid ")[1].split()[0].rstrip(","))


def test_a_guest_runs_migrates_saves_and_restores_in_real_qemu_with_the_exact_pin(
    cpuver: object, qemu100: QemuInstall, tmp_path: Path
) -> None:
    run = cpuver
    assert callable(run)
    guest = tmp_path / "web1.json"
    guest.write_text(
        json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Nehalem-v1,-popcnt"})
    )
    hv1, hv2 = tmp_path / "hv1.json", tmp_path / "hv2.json"
    run("host", "probe", "--via", "qemu", "--qemu", str(qemu100.binary), "-o", str(hv1))
    hv2.write_text(hv1.read_text().replace(json.loads(hv1.read_text())["host"], "hv2", 1))
    run("domain", "define", str(guest), "--accel", "tcg")
    binary = ["--qemu-binary", str(qemu100.binary)]

    started = run("domain", "start", "web1", "--host", str(hv1), "--launch", *binary).stdout
    first = pid_in(started)
    assert "verified over QMP" in started
    assert process_alive(first)

    migrated = run("domain", "migrate", "web1", "--to", str(hv2)).stdout
    second = pid_in(migrated)
    assert "live-migrated" in migrated
    assert process_alive(second)
    assert not process_alive(first)

    saved = tmp_path / "web1.saved"
    run("domain", "save", "web1", str(saved))
    assert (tmp_path / "web1.saved.qemu-state").stat().st_size > 0
    assert not process_alive(second)

    restored = run("domain", "restore", str(saved), "--host", str(hv1), "--launch", *binary)
    third = pid_in(restored.stdout)
    assert "verified over QMP" in restored.stdout
    assert process_alive(third)

    run("domain", "shutdown", "web1")
    assert not process_alive(third)
    history = run("domain", "history", "web1").stdout
    assert len(history.splitlines()) == 1  # the CPU never changed after define
