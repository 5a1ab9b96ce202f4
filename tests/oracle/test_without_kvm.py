"""Where KVM does not answer on /dev/kvm, cpuver and QEMU agree that it does not.

These run instead of the tests marked ``kvm`` on a machine without a usable KVM (see
``tests/conftest.py``); ``tests/e2e/test_kvm_hidden.py`` also runs them on a machine that has KVM,
in a mount namespace where ``/dev/kvm`` is ``/dev/null``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cpuver import api
from cpuver.errors import QemuError
from cpuver.host.qemu import QemuInstall as Qemu
from cpuver.host.qemu import QmpSession
from qemu_install import QemuInstall
from servers import cpuver_script

pytestmark = pytest.mark.nokvm


def cpuver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cpuver_script(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_qemu_refuses_kvm_and_cpuver_says_kvm_is_unusable(qemu_release: QemuInstall) -> None:
    session = QmpSession(Qemu(qemu_release.binary), "none", "kvm")
    with pytest.raises(QemuError, match="-accel kvm"), session:
        pass
    assert not api.kvm_usable()


def test_qemu_still_runs_tcg(qemu_release: QemuInstall) -> None:
    with QmpSession(Qemu(qemu_release.binary), "none", "tcg") as session:
        assert session.command("query-kvm")["enabled"] is False


def test_auto_probe_falls_back_to_qemu_and_offers_tcg_only(
    qemu100: QemuInstall, tmp_path: Path
) -> None:
    out = tmp_path / "host.json"
    done = cpuver("host", "probe", "--qemu", str(qemu100.binary), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "not usable; asking QEMU" in done.stderr
    releases = json.loads(out.read_text())["releases"]
    assert {accel for offers in releases.values() for accel in offers} == {"tcg"}


def test_resolve_defaults_to_tcg() -> None:
    done = cpuver("resolve", "Westmere", "--json")
    assert done.returncode == 0, done.stderr
    [answer] = json.loads(done.stdout)
    assert answer["accel"] == "tcg"
