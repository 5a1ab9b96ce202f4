"""The test set-up finds both real QEMU builds and each is the release it claims to be."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from qemu_install import RELEASES, QemuInstall, configured_binary, kvm_available


def version_output(install: QemuInstall) -> str:
    proc = subprocess.run(
        [str(install.binary), "-version"], capture_output=True, text=True, timeout=30, check=True
    )
    return proc.stdout


def test_release_fixture_reports_its_version(qemu_release: QemuInstall) -> None:
    first = version_output(qemu_release).splitlines()[0]
    assert re.match(rf"QEMU emulator version {re.escape(qemu_release.release)}(\.\d+)?\b", first)


def test_both_releases_are_distinct_binaries(qemu72: QemuInstall, qemu100: QemuInstall) -> None:
    assert (qemu72.release, qemu100.release) == ("7.2", "10.0")
    assert qemu72.binary.resolve() != qemu100.binary.resolve()
    assert "version 7.2" in version_output(qemu72)
    assert "version 10.0" in version_output(qemu100)


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
    assert set(RELEASES) == {"7.2", "10.0"}


def test_kvm_available_is_a_bool() -> None:
    assert isinstance(kvm_available(), bool)
