"""Shared test set-up: real QEMU binaries and KVM.

Fixtures
    ``qemu52``, ``qemu72``, ``qemu100``, ``qemu111``  the QEMU 5.2 / 7.2 / 10.0 / 11.1 builds
                             (:class:`qemu_install.QemuInstall`)
    ``qemu_release``         parametrised over every release (test ids ``[5.2]`` … ``[11.1]``)
    ``qemu_binary``          a function ``release -> QemuInstall`` for tests that pick at run time

Tests that use any of them are marked ``qemu`` automatically. A missing (or wrong) binary skips
the test, except when ``CI=true``: then it fails, so CI never goes green without the oracle tests.

The suite runs on any x86-64 machine, whatever its CPU and whether or not KVM works there. Tests
marked ``kvm`` compare live cpuver with live QEMU under KVM; tests marked ``nokvm`` check that,
where KVM does not answer, cpuver and QEMU agree it does not. Only one of the two sets applies to
a machine: the other is deselected (never skipped), and the run's header says which.
``postgres`` (a throwaway PostgreSQL cluster) comes from ``postgres.py``, ``serve`` (real
``cpuver serve`` processes), ``client`` and ``db_url`` (the service in process on a fresh SQLite
store) from ``servers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from postgres import postgres  # noqa: F401  (fixture, for every test)
from qemu_install import RELEASES, QemuInstall, find, kvm_available
from servers import client, db_url, serve  # noqa: F401  (fixtures, for every test)

QEMU_FIXTURES = frozenset({"qemu52", "qemu72", "qemu100", "qemu111", "qemu_release", "qemu_binary"})


USER_DIRS = ("XDG_DATA_HOME", "XDG_STATE_HOME")
"""Where cpuver keeps its default store and its running guests' files."""


@pytest.fixture(scope="session", autouse=True)
def private_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads or writes the user's own cpuver store or run files: a command a test runs
    without ``--db`` (and every process it starts) uses a store of the test session's own."""
    base = tmp_path_factory.mktemp("user-dirs")
    saved = {name: os.environ.get(name) for name in USER_DIRS}
    for name in USER_DIRS:
        os.environ[name] = str(base / name.lower())
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


TEST_QEMU_TIMEOUT_S = "60"
"""The QEMU timeout (``CPUVER_QEMU_TIMEOUT``) of every test that does not set its own. These
machines are VMs whose host sometimes stalls them: once, QEMU 5.2 under nested KVM did not greet
within the product's 10 s for a minute while the VM's memory was being reclaimed. The tests check
QEMU's answers, not how fast it starts; the tests of the timeout itself set theirs (2 s)."""


@pytest.fixture(scope="session", autouse=True)
def patient_qemu() -> Iterator[None]:
    saved = os.environ.get("CPUVER_QEMU_TIMEOUT")
    os.environ.setdefault("CPUVER_QEMU_TIMEOUT", TEST_QEMU_TIMEOUT_S)
    yield
    if saved is None:
        os.environ.pop("CPUVER_QEMU_TIMEOUT", None)


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def qemu_binary(release: str) -> QemuInstall:
    """The QEMU build of ``release`` (one of ``RELEASES``); skips (CI: fails) if missing."""
    found = find(release)
    if isinstance(found, QemuInstall):
        return found
    if in_ci():
        pytest.fail(f"{found} [CI=true: tests needing QEMU fail, never skip]", pytrace=False)
    pytest.skip(found)


@pytest.fixture(scope="session", name="qemu_binary")
def qemu_binary_fixture() -> Callable[[str], QemuInstall]:
    return qemu_binary


@pytest.fixture(scope="session")
def qemu52() -> QemuInstall:
    return qemu_binary("5.2")


@pytest.fixture(scope="session")
def qemu72() -> QemuInstall:
    return qemu_binary("7.2")


@pytest.fixture(scope="session")
def qemu100() -> QemuInstall:
    return qemu_binary("10.0")


@pytest.fixture(scope="session")
def qemu111() -> QemuInstall:
    return qemu_binary("11.1")


@pytest.fixture(scope="session", params=RELEASES)
def qemu_release(request: pytest.FixtureRequest) -> QemuInstall:
    release: str = request.param
    return qemu_binary(release)


def pytest_report_header(config: pytest.Config) -> str:
    if kvm_available():
        return "KVM answers on /dev/kvm: tests marked kvm run, tests marked nokvm are deselected"
    return "no KVM answers on /dev/kvm: tests marked nokvm run, tests marked kvm are deselected"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    other = "nokvm" if kvm_available() else "kvm"
    kept, deselected = [], []
    for item in items:
        if QEMU_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qemu)
        (deselected if item.get_closest_marker(other) is not None else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
