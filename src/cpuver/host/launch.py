"""Run a pinned CPU in a real QEMU process and prove what the running vCPU has.

:func:`launch` starts QEMU paused (``-S``) with a ``-cpu`` argument; :func:`vcpu_definition`
reads back what the *realized* vCPU 0 has (QEMU clears features the accelerator cannot give at
realize time, so a feature property of the live CPU object is what the guest sees);
:func:`verify` compares that with an expected definition. :func:`live_migrate`, :func:`save`
and :func:`restore` move the VM to a new process over a loopback unix socket or a file, so a
caller can verify the CPU survived.

Everything here works with plain values (feature names, signature dicts with QEMU's property
names, ``-cpu`` strings); QMP itself stays in :mod:`cpuver.host.qemu`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from cpuver.errors import QemuError
from cpuver.features import FeatureTable
from cpuver.host.qemu import QemuInstall, QmpSession
from cpuver.models import SIGNATURE_FIELDS

MIGRATION_TIMEOUT_S = 30.0
_POLL_S = 0.01

_MISSING_FEATURE = re.compile(
    r"doesn't support requested feature: "
    r"(?:CPUID\.[0-9A-Fa-f]+H:[A-Z]{3}|CPUID\[[^\]]*\]\.[A-Z]{3}|MSR\([0-9A-Fa-f]+H\))"
    r"\.(\S+) \[bit"
)
"""``... TCG doesn't support requested feature: CPUID.07H:EBX.invpcid [bit 10]`` -> invpcid."""


class RunningVm:
    """One paused QEMU process with a vCPU; close it (or use ``with``) to end the process."""

    def __init__(self, session: QmpSession, cpu_path: str, cpu: str) -> None:
        self.session = session
        self.cpu_path = cpu_path
        """QOM path of vCPU 0 (``query-cpus-fast``)."""
        self.cpu = cpu
        """The ``-cpu`` argument QEMU was started with."""
        self._properties: frozenset[str] | None = None

    @property
    def install(self) -> QemuInstall:
        return self.session.install

    @property
    def machine(self) -> str:
        return self.session.machine

    @property
    def accel(self) -> str:
        return self.session.accel

    @property
    def pid(self) -> int | None:
        """The QEMU process id while it runs, else None."""
        return self.session.pid

    def properties(self) -> frozenset[str]:
        """Names of every property of the vCPU object (``qom-list``)."""
        if self._properties is None:
            listed = self.session.command("qom-list", path=self.cpu_path)
            self._properties = frozenset(str(prop["name"]) for prop in listed)
        return self._properties

    def get(self, prop: str) -> Any:
        """``qom-get`` of one property of the vCPU."""
        return self.session.command("qom-get", path=self.cpu_path, property=prop)

    def status(self) -> str:
        """``query-status``: ``prelaunch``, ``inmigrate``, ``paused``, ``postmigrate`` ..."""
        return str(self.session.command("query-status")["status"])

    def close(self) -> None:
        self.session.close()

    def detach(self) -> int:
        """Let the guest run on after this process ends (started with a ``workdir``); its pid."""
        return self.session.detach()

    def quit(self) -> None:
        """End the QEMU process, also one this process did not start."""
        self.session.quit()

    def __enter__(self) -> RunningVm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start(
    install: QemuInstall,
    machine: str,
    accel: str,
    cpu: str,
    *,
    incoming: str | None = None,
    workdir: Path | None = None,
) -> RunningVm:
    """Start QEMU paused with ``-cpu cpu``; the caller must close the returned VM.

    With ``incoming`` (a migration URI such as ``unix:/path`` or ``exec:cat file``) QEMU
    listens for that migration stream; this returns as soon as it listens. With ``workdir`` (a
    lasting directory) the VM can be left running on its own with :meth:`RunningVm.detach`.
    """
    vm = _start(install, machine, accel, cpu, defer=incoming is not None, workdir=workdir)
    if incoming is not None:
        _listen(vm, incoming)
    return vm


def _start(
    install: QemuInstall,
    machine: str,
    accel: str,
    cpu: str,
    *,
    defer: bool,
    workdir: Path | None = None,
) -> RunningVm:
    # "defer": the URI is given over QMP (migrate-incoming), so a bad one is a QMP error.
    extra = ["-incoming", "defer"] if defer else []
    session = QmpSession(install, machine, accel, cpu, extra_args=extra, workdir=workdir)
    try:
        session.__enter__()
    except QemuError as err:
        raise _start_error(session, cpu, err) from err
    try:
        cpus = session.command("query-cpus-fast")
        if not cpus:
            raise QemuError(f"QEMU -machine {machine} started without a vCPU")
        return RunningVm(session, str(cpus[0]["qom-path"]), cpu)
    except BaseException:
        session.close()
        raise


def _listen(vm: RunningVm, uri: str) -> None:
    try:
        vm.session.command("migrate-incoming", uri=uri)
    except BaseException:
        vm.close()
        raise


@contextmanager
def launch(
    install: QemuInstall, machine: str, accel: str, cpu: str, *, incoming: str | None = None
) -> Iterator[RunningVm]:
    """:func:`start` as a context manager: the QEMU process is gone when the block ends."""
    with start(install, machine, accel, cpu, incoming=incoming) as vm:
        yield vm


def _start_error(session: QmpSession, cpu: str, err: QemuError) -> QemuError:
    table = FeatureTable.bundled()
    named = (m[1] for line in session.failure_stderr if (m := _MISSING_FEATURE.search(line)))
    missing = sorted({table.canonical(name) if name in table else name for name in named})
    if not missing:
        return err
    said = "; ".join(_without_program(line) for line in session.failure_stderr)
    return QemuError(
        f"QEMU refused -cpu {cpu} under {session.accel}: missing features "
        f"{', '.join(missing)} (QEMU said: {said})"
    )


def _without_program(line: str) -> str:
    program, sep, rest = line.partition(": ")
    return rest if sep and program.endswith(("qemu-system-x86_64", "qemu-kvm")) else line


def vcpu_definition(
    vm: RunningVm, features: FeatureTable | None = None
) -> tuple[frozenset[str], dict[str, Any]]:
    """What the running vCPU has: its enabled features (QEMU names) and its signature.

    Each known feature is read as a property of the realized CPU object (``qom-get``): that
    covers CPUID bits and MSR-based features alike (``feature-words`` has CPUID words only).
    The signature has QEMU's property names: vendor, family, model, stepping, model-id,
    min-level, min-xlevel (those the CPU object has).
    """
    table = features or FeatureTable.bundled()
    present = vm.properties()
    enabled = frozenset(name for name in table if name in present and vm.get(name) is True)
    signature = {name: vm.get(name) for name in SIGNATURE_FIELDS if name in present}
    return enabled, signature


def verify(
    vm: RunningVm,
    features: frozenset[str],
    signature: Mapping[str, Any],
    table: FeatureTable | None = None,
) -> list[str]:
    """Differences between the running vCPU and the expected definition; empty when exact.

    Every feature the CPU object knows is compared (expected ones on, all others off); an
    expected feature this QEMU has no property for is a mismatch too. Only the signature
    fields given are compared.
    """
    table = table or FeatureTable.bundled()
    expected = frozenset(table.canonical(name) if name in table else name for name in features)
    actual, _ = vcpu_definition(vm, table)
    present = vm.properties()
    problems = [f"{name}: QEMU's vCPU has no such feature" for name in sorted(expected - present)]
    problems += [
        f"{name}: expected on, vCPU has it off" for name in sorted((expected & present) - actual)
    ]
    problems += [f"{name}: expected off, vCPU has it on" for name in sorted(actual - expected)]
    for name, want in signature.items():
        if name not in present:
            problems.append(f"{name}: QEMU's vCPU has no such property")
            continue
        got = vm.get(name)
        if got != want:
            problems.append(f"{name}: expected {want!r}, vCPU has {got!r}")
    return problems


def _migrate(source: RunningVm, uri: str, timeout: float = MIGRATION_TIMEOUT_S) -> None:
    """Send ``source`` to ``uri`` and wait until the source says completed."""
    source.session.command("migrate", uri=uri)
    _wait_for_migration(source, f"migration to {uri}", timeout)


def _await_incoming(vm: RunningVm, timeout: float = MIGRATION_TIMEOUT_S) -> None:
    """Wait until ``vm`` has loaded its incoming migration stream (QEMU exits if it cannot)."""
    _wait_for_migration(vm, "incoming migration", timeout)


def _wait_for_migration(vm: RunningVm, what: str, timeout: float) -> None:
    """Poll ``query-migrate`` on ``vm`` until completed; QEMU's reason when it fails or exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = vm.session.command("query-migrate")
        except QemuError as err:
            said = "; ".join(_without_program(line) for line in vm.session.stderr_lines())
            raise QemuError(f"{what} failed: {said or err}") from err
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            reason = info.get("error-desc", "no reason given")
            raise QemuError(f"{what} {status}: {reason}")
        if time.monotonic() > deadline:
            raise QemuError(f"{what} did not finish in {timeout:.0f} s ({status})")
        time.sleep(_POLL_S)


def live_migrate(
    source: RunningVm,
    install: QemuInstall,
    machine: str,
    accel: str,
    cpu: str,
    run_dir: Path | None = None,
) -> RunningVm:
    """Migrate ``source`` into a new QEMU process over a loopback unix socket.

    Returns the destination (the caller closes it); the source stays open, in ``postmigrate``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="cpuver-migrate-"))
    try:
        uri = f"unix:{workdir / 'migration.sock'}"
        destination = start(install, machine, accel, cpu, incoming=uri, workdir=run_dir)
        try:
            _migrate(source, uri)
            _await_incoming(destination)
        except BaseException:
            destination.close()
            raise
        return destination
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _state_uri(vm: RunningVm, path: Path, command: str) -> str:
    """``file:PATH`` on QEMU 9.0 and later, else ``exec:<command>PATH`` (7.2 has no file:)."""
    version = vm.session.command("query-version")["qemu"]
    if (int(version["major"]), int(version["minor"])) >= (9, 0):
        return f"file:{path}"
    return f"exec:{command}{shlex.quote(str(path))}"


def save(vm: RunningVm, path: Path | str) -> None:
    """Stop ``vm`` and write its state to ``path`` (``file:`` URI, or ``exec:cat`` before 9.0)."""
    if vm.status() == "running":
        vm.session.command("stop")
    _migrate(vm, _state_uri(vm, Path(path), "cat > "))


def restore(
    install: QemuInstall,
    machine: str,
    accel: str,
    cpu: str,
    path: Path | str,
    workdir: Path | None = None,
) -> RunningVm:
    """Start a new QEMU process from a state file written by :func:`save` (caller closes it)."""
    path = Path(path)
    if not path.is_file():
        raise QemuError(f"no saved state at {path}")
    vm = _start(install, machine, accel, cpu, defer=True, workdir=workdir)
    try:
        _listen(vm, _state_uri(vm, path, "cat "))
        _await_incoming(vm)
    except BaseException:
        vm.close()
        raise
    return vm


def attach(
    install: QemuInstall, machine: str, accel: str, cpu: str, workdir: Path, pid: int, socket: Path
) -> RunningVm:
    """The VM a detached QEMU in ``workdir`` runs (closing it leaves QEMU running)."""
    session = QmpSession.attach(install, machine, accel, workdir, pid, socket)
    try:
        cpus = session.command("query-cpus-fast")
        return RunningVm(session, str(cpus[0]["qom-path"]), cpu)
    except BaseException:
        session.close()
        raise
