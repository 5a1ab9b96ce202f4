"""The test set-up finds every real QEMU build and each is the release it claims to be."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from cpuver.host.qemu import QemuInstall as Adapter
from qemu_install import RELEASES, QemuInstall, configured_binary, kvm_available


def version_output(install: QemuInstall) -> str:
    adapter = Adapter(install.binary)
    proc = subprocess.run(
        [*adapter.command(), "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=adapter.environment(),
    )
    return proc.stdout


def test_release_fixture_reports_its_version(qemu_release: QemuInstall) -> None:
    first = version_output(qemu_release).splitlines()[0]
    assert re.match(rf"QEMU emulator version {re.escape(qemu_release.release)}(\.\d+)?\b", first)


def test_every_release_is_a_distinct_binary(
    qemu52: QemuInstall, qemu72: QemuInstall, qemu100: QemuInstall, qemu111: QemuInstall
) -> None:
    installs = (qemu52, qemu72, qemu100, qemu111)
    assert tuple(install.release for install in installs) == RELEASES
    assert len({install.binary.resolve() for install in installs}) == 4
    for install in installs:
        assert f"version {install.release}" in version_output(install)


@pytest.mark.parametrize("release", ["5.2", "10.0", "11.1"])
def test_a_qemu_of_another_debian_suite_runs_through_its_own_loader(
    qemu_binary: object, release: str
) -> None:
    """Unpacked with that suite's libraries: nothing of this machine's own is used."""
    install: QemuInstall = qemu_binary(release)  # type: ignore[operator]
    command = Adapter(install.binary).command()
    root = install.binary.resolve().parents[2]
    assert command[0].startswith(str(root)) and command[0].endswith("ld-linux-x86-64.so.2")
    assert command[1:3] == [
        "--library-path",
        f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu",
    ]


def test_fixtures_honour_the_environment(qemu72: QemuInstall, qemu100: QemuInstall) -> None:
    for install in (qemu72, qemu100):
        assert install.binary == configured_binary(install.release)
    if "CPUVER_QEMU_7_2" in os.environ:
        assert str(qemu72.binary) == os.environ["CPUVER_QEMU_7_2"]


def test_qemu_marker_is_added(request: pytest.FixtureRequest, qemu100: QemuInstall) -> None:
    assert request.node.get_closest_marker("qemu") is not None


def test_unknown_release_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"no QEMU '6\.0'"):
        configured_binary("6.0")
    assert set(RELEASES) == {"5.2", "7.2", "10.0", "11.1"}


def test_kvm_available_is_a_bool() -> None:
    assert isinstance(kvm_available(), bool)
