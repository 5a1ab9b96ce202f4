"""`cpuver domain start --launch` killed while it launches leaves no QEMU that nothing knows.

The launching command is killed (SIGKILL, or SIGTERM) at moments spread over its launch: before
QEMU starts, while QMP verifies the vCPU, after the record is written but before the store says
the guest runs. The next cpuver command ends every QEMU that no record and no store state keeps:
afterwards either no QEMU of the guest runs (and the guest is shut off), or exactly the recorded
one runs and the store says the guest is running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fakes import processes_running
from qemu_install import QemuInstall
from servers import cpuver_script

SIGKILL_AFTER_S = (0.3, 0.7, 1.0, 1.2, 1.4, 1.7, 2.0, 2.6)
SIGTERM_AFTER_S = (0.9, 1.3, 1.8)


@pytest.fixture
def world(tmp_path: Path, qemu100: QemuInstall) -> dict[str, object]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    db = f"sqlite:///{tmp_path / 'guests.db'}"

    def cpuver(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [cpuver_script(), *argv, "--db", db], capture_output=True, text=True, timeout=120,
            env=env, check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done

    guest = tmp_path / "web1.json"
    guest.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Nehalem-v1"}))
    hv1 = tmp_path / "hv1.json"
    subprocess.run(
        [cpuver_script(), "host", "probe", "--via", "qemu", "--qemu", str(qemu100.binary),
         "-o", str(hv1)], check=True, capture_output=True, timeout=120, env=env,
    )  # fmt: skip
    assert cpuver("domain", "define", str(guest), "--accel", "tcg").returncode == 0
    launch = [cpuver_script(), "domain", "start", "web1", "--host", str(hv1), "--launch",
              "--qemu-binary", str(qemu100.binary), "--db", db]  # fmt: skip
    return {"cpuver": cpuver, "launch": launch, "env": env, "state": str(tmp_path / "state")}


def guest_state(world: dict[str, object]) -> str:
    listed = world["cpuver"]("domain", "list")  # type: ignore[operator]
    return str(listed.stdout.split()[1])


@pytest.mark.parametrize(
    ("how", "delays"),
    [(signal.SIGKILL, SIGKILL_AFTER_S), (signal.SIGTERM, SIGTERM_AFTER_S)],
    ids=["SIGKILL", "SIGTERM"],
)
def test_a_killed_launch_leaves_no_qemu_that_nothing_knows(
    world: dict[str, object], how: signal.Signals, delays: tuple[float, ...]
) -> None:
    state = str(world["state"])
    outcomes = []
    for delay in delays:
        process = subprocess.Popen(
            world["launch"], env=world["env"], stdout=subprocess.DEVNULL,  # type: ignore[arg-type]
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        process.send_signal(how)
        _out, err = process.communicate(timeout=60)
        assert "Traceback" not in err, err
        time.sleep(0.1)
        left = processes_running(state)
        status = guest_state(world)  # this command ends the strays
        qemus = processes_running(state)
        if status == "running":
            assert len(qemus) == 1, (delay, qemus)
            outcomes.append("kept")
            assert world["cpuver"]("domain", "shutdown", "web1").returncode == 0  # type: ignore[operator]
        else:
            assert (status, qemus) == ("shutoff", []), delay
            outcomes.append("ended" if left else "none")
        assert processes_running(state) == []
    if how == signal.SIGKILL:  # the kills did leave QEMUs behind, and the next command ended them
        assert "ended" in outcomes, outcomes
    else:  # SIGTERM: cpuver cleaned up itself
        assert "ended" not in outcomes, outcomes
