"""Running-guest use cases: a guest's pinned CPU in a real QEMU process that outlives cpuver's
command (start, live migration, save/restore, shutdown), verified over QMP at every step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuver.catalog import Catalog
from cpuver.errors import QemuError

if TYPE_CHECKING:
    from cpuver.domain.lifecycle import Guest
    from cpuver.host.launch import RunningVm
    from cpuver.host.qemu import QemuInstall
    from cpuver.store import GuestStore


def _pinned_cpu(guest: Guest, catalog: Catalog) -> tuple[str, frozenset[str], dict[str, Any]]:
    """The ``-cpu`` argument of a guest's pin, and the features and signature to verify."""
    from cpuver.domain.pinning import qemu_cpu_arg

    pin_ = guest.pin
    return qemu_cpu_arg(pin_, catalog), frozenset(pin_.features_on), pin_.signature.as_dict()


@dataclass(frozen=True, slots=True)
class RunningGuest:
    """Where a guest's QEMU runs on after cpuver's command ended: its directory and pid."""

    workdir: Path
    pid: int
    binary: Path
    socket: Path


def run_dir(store: GuestStore, name: str) -> Path:
    """Where cpuver keeps one guest's running QEMU (run.json, and one work directory per
    process with its QMP socket and stderr), per store."""
    import hashlib

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    store_key = hashlib.sha256(store.url.encode()).hexdigest()[:12]
    return state / "cpuver" / "run" / store_key / name


def _new_workdir(store: GuestStore, name: str) -> Path:
    """A fresh directory per QEMU process: a quitting QEMU removes its own socket path, so a
    new process must never reuse it."""
    import uuid

    return run_dir(store, name) / uuid.uuid4().hex[:12]


def running_guest(store: GuestStore, name: str) -> RunningGuest | None:
    """The QEMU process cpuver left running for guest ``name``, if it still runs."""
    from cpuver.host.qemu import process_alive

    record = run_dir(store, name) / "run.json"
    try:
        data = json.loads(record.read_text())
        found = RunningGuest(
            Path(data["workdir"]), int(data["pid"]), Path(data["binary"]), Path(data["socket"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if process_alive(found.pid) else None


def _record_running(
    store: GuestStore, name: str, vm: RunningVm, workdir: Path, binary: Path
) -> RunningGuest:
    socket = vm.session.socket_path
    assert socket is not None
    pid = vm.detach()
    record = {"pid": pid, "binary": str(binary), "socket": str(socket), "workdir": str(workdir)}
    (run_dir(store, name) / "run.json").write_text(json.dumps(record) + "\n")
    return RunningGuest(workdir, pid, binary, socket)


def _problems_or_stop(vm: RunningVm, guest: Guest, catalog: Catalog, what: str) -> None:
    """Compare the running vCPU with the pin; end the VM and refuse when they differ."""
    from cpuver.host.launch import verify

    _cpu, features, signature = _pinned_cpu(guest, catalog)
    problems = verify(vm, features, signature)
    if problems:
        vm.quit()
        raise QemuError(f"{what}: the running vCPU differs from the pin: {'; '.join(problems)}")


def launch_guest(store: GuestStore, guest: Guest, catalog: Catalog, binary: Path) -> RunningGuest:
    """Start the pinned CPU in a real QEMU, verify it over QMP, let it run on its own."""
    from cpuver.host.launch import start

    pin_ = guest.pin
    return _keep_running(
        store,
        guest,
        catalog,
        binary,
        "start",
        lambda install, cpu, workdir: start(
            install, pin_.machine, pin_.accel, cpu, workdir=workdir
        ),
    )


def _keep_running(
    store: GuestStore,
    guest: Guest,
    catalog: Catalog,
    binary: Path,
    what: str,
    boot: Callable[[QemuInstall, str, Path], RunningVm],
) -> RunningGuest:
    """Boot a new QEMU for ``guest`` with ``boot``, verify it, let it run on and record it."""
    from cpuver.host.qemu import QemuInstall

    if running_guest(store, guest.name) is not None:
        raise QemuError(f"guest {guest.name!r} already runs in QEMU")
    workdir = _new_workdir(store, guest.name)
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    vm = boot(QemuInstall(binary), cpu, workdir)
    try:
        _problems_or_stop(vm, guest, catalog, what)
        vm.session.command("cont")
        return _record_running(store, guest.name, vm, workdir, binary)
    except BaseException:
        vm.close()
        raise


def _attached(store: GuestStore, guest: Guest, catalog: Catalog) -> tuple[RunningVm, Path]:
    from cpuver.host.launch import attach
    from cpuver.host.qemu import QemuInstall

    found = running_guest(store, guest.name)
    if found is None:
        raise QemuError(f"guest {guest.name!r} does not run in QEMU (start it with --launch)")
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    install = QemuInstall(found.binary)
    vm = attach(
        install, guest.pin.machine, guest.pin.accel, cpu, found.workdir, found.pid, found.socket
    )
    return vm, found.binary


def migrate_running_guest(
    store: GuestStore, guest: Guest, catalog: Catalog, binary: Path | None = None
) -> RunningGuest:
    """Live-migrate the guest's running QEMU into a new process, verify it there, end the old."""
    from cpuver.host.launch import live_migrate
    from cpuver.host.qemu import QemuInstall

    source, source_binary = _attached(store, guest, catalog)
    old = running_guest(store, guest.name)
    target_binary = binary or source_binary
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    new_dir = _new_workdir(store, guest.name)
    try:
        target = live_migrate(
            source,
            QemuInstall(target_binary),
            guest.pin.machine,
            guest.pin.accel,
            cpu,
            run_dir=new_dir,
        )
    except BaseException:
        source.close()
        raise
    try:
        _problems_or_stop(target, guest, catalog, "migrate")
        target.session.command("cont")
        running = _record_running(store, guest.name, target, new_dir, target_binary)
    except BaseException:
        target.quit()
        shutil.rmtree(new_dir, ignore_errors=True)
        source.session.command("cont")
        source.close()
        raise
    source.quit()
    if old is not None:
        shutil.rmtree(old.workdir, ignore_errors=True)
    return running


def stop_running_guest(store: GuestStore, guest: Guest, catalog: Catalog) -> bool:
    """End the guest's QEMU if cpuver left one running; True when there was one."""
    if running_guest(store, guest.name) is None:
        return False
    vm, _binary = _attached(store, guest, catalog)
    vm.quit()
    shutil.rmtree(run_dir(store, guest.name), ignore_errors=True)
    return True


def save_running_guest(store: GuestStore, guest: Guest, catalog: Catalog, state: Path) -> None:
    """Write the running guest's state with QEMU's migration to a file, then end QEMU."""
    from cpuver.host.launch import save

    vm, _binary = _attached(store, guest, catalog)
    try:
        save(vm, state)
    finally:
        vm.quit()
    shutil.rmtree(run_dir(store, guest.name), ignore_errors=True)


def restore_running_guest(
    store: GuestStore, guest: Guest, catalog: Catalog, binary: Path, state: Path
) -> RunningGuest:
    """Load a state file into a new QEMU, verify the vCPU against the pin, let it run on."""
    from cpuver.host.launch import restore

    pin_ = guest.pin
    return _keep_running(
        store,
        guest,
        catalog,
        binary,
        "restore",
        lambda install, cpu, workdir: restore(
            install, pin_.machine, pin_.accel, cpu, state, workdir
        ),
    )
