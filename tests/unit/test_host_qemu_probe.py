"""`cpuver host probe --via qemu` with real QEMU 7.2 and 10.0, end to end, and no QEMU process
left behind when the probe is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpuver import api
from cpuver.cli import main
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver
from qemu_install import QemuInstall

CONSOLE_SCRIPT = Path(sys.executable).parent / "cpuver"


@pytest.fixture(scope="module")
def snapshot_file(
    qemu72: QemuInstall, qemu100: QemuInstall, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("probe") / "host.json"
    argv = ["host", "probe", "--via", "qemu", "--qemu", str(qemu72.binary)]
    assert main([*argv, "--qemu", str(qemu100.binary), "-o", str(path)]) == 0
    return path


def test_probe_via_qemu_records_each_release_and_its_build(snapshot_file: Path) -> None:
    data = json.loads(snapshot_file.read_text())
    assert data["schema"] == "cpuver-host/2"
    assert set(data["releases"]) == {"7.2", "10.0"}
    provenance = data["releases"]["7.2"]["tcg"]["provenance"]
    assert provenance["method"] == "qemu"
    assert provenance["qemu"].startswith("QEMU emulator version 7.2")


def test_probe_via_qemu_then_show_summarises_it(
    snapshot_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["host", "show", str(snapshot_file)]) == 0
    out = capsys.readouterr().out
    assert "QEMU 7.2:" in out
    assert "QEMU 10.0:" in out
    assert "APPROXIMATE" not in out


def test_probe_via_qemu_then_resolve_with_it(
    snapshot_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["resolve", "Westmere,version=best", "--host", str(snapshot_file), "--accel", "tcg"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rule"] == "best"


def test_resolver_takes_the_offers_of_its_catalogs_release(snapshot_file: Path) -> None:
    host = api.read_host(str(snapshot_file))
    assert isinstance(host, HostCapabilities)
    for release in ("7.2", "10.0"):
        resolver = Resolver(api.open_catalog(release), None, "tcg", host)
        assert resolver.offers == host.offered("tcg", release)


def qemu_processes_under(folder: Path) -> list[int]:
    """Processes whose command line mentions ``folder`` (QEMU's QMP socket lives there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in cmdline and b"qemu-system" in cmdline:
            found.append(int(proc.name))
    return found


def test_interrupted_probe_leaves_no_qemu_process(qemu100: QemuInstall, tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    # The same QEMU three times: the probe is still busy when the signal comes, even where it
    # asks TCG only (no KVM) and each QEMU lives for a few milliseconds.
    qemus = [arg for _ in range(3) for arg in ("--qemu", str(qemu100.binary))]
    argv = [str(CONSOLE_SCRIPT), "host", "probe", "--via", "qemu", *qemus]
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as probe:
        deadline = time.monotonic() + 30
        while not qemu_processes_under(tmp_path):
            assert probe.poll() is None, "the probe ended before it started QEMU"
            assert time.monotonic() < deadline, "no QEMU process appeared"
            time.sleep(0.01)
        probe.send_signal(signal.SIGINT)
        _out, err = probe.communicate(timeout=30)
    assert probe.returncode == 130, err
    assert "interrupted" in err
    assert qemu_processes_under(tmp_path) == []
    assert list(tmp_path.glob("cpuver-qmp-*")) == []
