"""Pins proven on real QEMU processes (TCG): the running vCPU is exactly the resolved definition.

Each test resolves a spec with cpuver, starts QEMU paused with cpuver's ``-cpu`` argument and
reads back the realized vCPU over QMP. The definition must survive live migration to a second
process and a save to a file restored in a new process. No QEMU process may outlive a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuver.api import open_catalog
from cpuver.emit.qemu import cpu_arg
from cpuver.errors import QemuError
from cpuver.host import qemu as host_qemu
from cpuver.host.launch import (
    RunningVm,
    launch,
    live_migrate,
    restore,
    save,
    vcpu_definition,
    verify,
)
from cpuver.resolve import Resolution, Resolver
from qemu_install import QemuInstall

pytestmark = pytest.mark.qemu

ACCEL = "tcg"


def child_pids() -> set[int]:
    """Live child processes of this test process (``/proc``, no psutil)."""
    found: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        found.update(int(pid) for pid in children.read_text().split())
    return found


def gone(pid: int | None) -> bool:
    return pid is not None and not Path(f"/proc/{pid}").exists()


@pytest.fixture(autouse=True)
def no_qemu_left_behind() -> Iterator[None]:
    before = child_pids()
    yield
    assert child_pids() <= before, "a QEMU process outlived the test"


def resolved(release: QemuInstall, spec: str) -> Resolution:
    catalog = open_catalog(release.release)
    return Resolver(catalog, machine=catalog.default_machine, accel=ACCEL).resolve(spec)


def with_enforce(resolution: Resolution) -> str:
    arg = cpu_arg(resolution)
    return arg if arg.endswith(",enforce") else f"{arg},enforce"


def start(release: QemuInstall, resolution: Resolution) -> tuple[host_qemu.QemuInstall, str]:
    return host_qemu.QemuInstall(release.binary), with_enforce(resolution)


def assert_runs_exactly(vm: RunningVm, resolution: Resolution) -> None:
    expected = resolution.definition
    assert verify(vm, expected.features, expected.signature.as_dict()) == []
    features, signature = vcpu_definition(vm)
    assert features == expected.features
    assert signature == expected.signature.as_dict()


@pytest.mark.parametrize("spec", ["Nehalem-v1", "Nehalem-v1,-popcnt,+aes"])
def test_running_vcpu_is_the_resolved_definition(qemu_release: QemuInstall, spec: str) -> None:
    resolution = resolved(qemu_release, spec)
    install, cpu = start(qemu_release, resolution)
    with launch(install, resolution.machine, ACCEL, cpu) as vm:
        assert vm.cpu_path.startswith("/machine/")
        assert vm.status() == "prelaunch"
        assert_runs_exactly(vm, resolution)
        pid = vm.pid
    assert gone(pid)


def test_verify_names_each_difference(qemu_release: QemuInstall) -> None:
    plain = resolved(qemu_release, "Nehalem-v1")
    install = host_qemu.QemuInstall(qemu_release.binary)
    with launch(install, plain.machine, ACCEL, "Nehalem-v1,popcnt=off,enforce") as vm:
        wanted = dict(plain.definition.signature.as_dict(), stepping=9)
        problems = verify(vm, plain.definition.features | {"aes"}, wanted)
    assert problems == [
        "aes: expected on, vCPU has it off",
        "popcnt: expected on, vCPU has it off",
        "stepping: expected 9, vCPU has 3",
    ]


def test_feature_the_accelerator_lacks_fails_under_enforce(qemu_release: QemuInstall) -> None:
    resolution = resolved(qemu_release, "Haswell-v4")
    assert resolution.missing, "TCG was expected to lack some of Haswell-v4's features"
    install, cpu = start(qemu_release, resolution)
    with pytest.raises(QemuError) as raised, launch(install, resolution.machine, ACCEL, cpu):
        pytest.fail("QEMU started a CPU it cannot provide under enforce")
    message = str(raised.value)
    assert f"missing features {', '.join(resolution.missing)} " in message
    assert "doesn't support requested feature" in message


def test_live_migration_keeps_the_exact_cpu(qemu_release: QemuInstall) -> None:
    resolution = resolved(qemu_release, "Nehalem-v1,-popcnt,+aes")
    install, cpu = start(qemu_release, resolution)
    with (
        launch(install, resolution.machine, ACCEL, cpu) as source,
        live_migrate(source, install, resolution.machine, ACCEL, cpu) as destination,
    ):
        assert source.status() == "postmigrate"
        assert destination.pid != source.pid
        assert_runs_exactly(destination, resolution)
        pids = (source.pid, destination.pid)
    assert all(gone(pid) for pid in pids)


def test_save_and_restore_keep_the_exact_cpu(qemu_release: QemuInstall, tmp_path: Path) -> None:
    resolution = resolved(qemu_release, "Nehalem-v1,-popcnt,+aes")
    install, cpu = start(qemu_release, resolution)
    state = tmp_path / "vm.state"
    with launch(install, resolution.machine, ACCEL, cpu) as vm:
        save(vm, state)
        assert vm.status() == "postmigrate"
        saved_pid = vm.pid
    assert gone(saved_pid)
    assert state.stat().st_size > 0
    with restore(install, resolution.machine, ACCEL, cpu, state) as restored:
        assert_runs_exactly(restored, resolution)
        restored_pid = restored.pid
    assert gone(restored_pid)


def test_restore_of_a_bad_state_file_fails_cleanly(
    qemu_release: QemuInstall, tmp_path: Path
) -> None:
    state = tmp_path / "garbage.state"
    state.write_bytes(b"not a migration stream" * 10)
    install = host_qemu.QemuInstall(qemu_release.binary)
    with pytest.raises(QemuError, match=r"incoming migration failed: .*Not a migration stream"):
        restore(install, "pc", ACCEL, "Nehalem-v1", state)
