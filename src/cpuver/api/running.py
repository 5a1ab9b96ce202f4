"""Running-guest use cases: a guest's pinned CPU in a real QEMU process that outlives cpuver's
command (start, live migration, save/restore, shutdown), verified over QMP at every step.

Where they live: ``$XDG_STATE_HOME/cpuver/run/<store>/<guest name>/`` (the name checked by
:func:`cpuver.names.check_name`), with ``run.json`` (the QEMU that runs the guest) and one work
directory per QEMU process. cpuver marks every directory it makes and removes only marked ones
under that root, never following a link. A command acting on a guest's QEMU holds the guest's
lock (:func:`guest_lock`) until the store says what it did; a QEMU that no record and no lock
holder knows (its command was killed) is found by its command line and ended by the next
command (:func:`end_strays`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuver.catalog import Catalog
from cpuver.errors import QemuError
from cpuver.names import check_name

MARK = ".cpuver-run"
"""The file that marks a directory as made by cpuver (only those are ever removed)."""
LOCK = ".lock"
RUNNING_STATES = ("running", "paused")

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


def _store_dir(store: GuestStore) -> Path:
    """The run directories of one store's guests."""
    import hashlib

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    store_key = hashlib.sha256(store.url.encode()).hexdigest()[:12]
    return state / "cpuver" / "run" / store_key


def run_dir(store: GuestStore, name: str) -> Path:
    """Where cpuver keeps one guest's running QEMU (run.json, and one work directory per
    process with its QMP socket and stderr), per store; ``name`` must be a valid guest name."""
    return _store_dir(store) / check_name("guest", name)


def _made(path: Path) -> Path:
    """Make ``path`` (and its parents) and mark it as cpuver's."""
    path.mkdir(parents=True, exist_ok=True)
    (path / MARK).touch()
    return path


def _remove_own(path: Path, store: GuestStore) -> None:
    """Remove ``path`` only when cpuver made it: marked, under the store's run directory, and
    no link on the way (a record that was changed by hand cannot aim this anywhere else)."""
    root = _store_dir(store)
    try:
        inside = path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return
    if inside and not path.is_symlink() and (path / MARK).is_file():
        shutil.rmtree(path, ignore_errors=True)


def _new_workdir(store: GuestStore, name: str) -> Path:
    """A fresh directory per QEMU process: a quitting QEMU removes its own socket path, so a
    new process must never reuse it."""
    import uuid

    _made(run_dir(store, name))
    return _made(run_dir(store, name) / uuid.uuid4().hex[:12])


@contextlib.contextmanager
def guest_lock(store: GuestStore, name: str) -> Iterator[None]:
    """Hold guest ``name``'s lock while a command starts, moves or ends its QEMU and stores
    what it did: :func:`end_strays` of another command leaves that QEMU alone meanwhile. The
    lock goes with the process holding it, however it ends (kill -9 too)."""
    directory = _made(run_dir(store, name))
    with (directory / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record(store: GuestStore, name: str) -> RunningGuest | None:
    """What ``run.json`` says runs guest ``name`` (its work directory must be the guest's)."""
    directory = run_dir(store, name)
    try:
        data = json.loads((directory / "run.json").read_text())
        found = RunningGuest(
            Path(data["workdir"]), int(data["pid"]), Path(data["binary"]), Path(data["socket"])
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return found if found.workdir.parent == directory else None


def running_guest(store: GuestStore, name: str) -> RunningGuest | None:
    """The QEMU process cpuver left running for guest ``name``, if it still runs."""
    from cpuver.host.qemu import process_alive

    found = _record(store, name)
    return found if found is not None and process_alive(found.pid) else None


def end_strays(store: GuestStore) -> list[int]:
    """End every QEMU cpuver started for a guest of ``store`` that nothing may keep: no
    ``run.json`` names it, or its guest is not running in the store (its command was killed
    before it could record or undo it). Guests whose lock another command holds are left
    alone. Returns the pids ended."""
    from cpuver.host.qemu import end_process, processes_under
    from cpuver.names import is_name
    from cpuver.store import GuestNotFound

    root = _store_dir(store)
    if not root.is_dir():
        return []
    by_guest: dict[str, list[tuple[int, Path]]] = {}
    for pid, workdir in processes_under(root):
        if workdir.parent.parent == root and is_name(workdir.parent.name):
            by_guest.setdefault(workdir.parent.name, []).append((pid, workdir))
    ended = []
    for name, processes in sorted(by_guest.items()):
        with _unless_locked(store, name) as free:
            if not free:
                continue
            record = _record(store, name)
            try:
                runs = store.get(name).state in RUNNING_STATES
            except GuestNotFound:
                runs = False
            for pid, workdir in processes:
                if runs and record is not None and (record.pid, record.workdir) == (pid, workdir):
                    continue
                end_process(pid)
                _remove_own(workdir, store)
                ended.append(pid)
            if not runs or record is None or record.pid in ended:
                with contextlib.suppress(OSError):
                    (run_dir(store, name) / "run.json").unlink()
    return ended


@contextlib.contextmanager
def _unless_locked(store: GuestStore, name: str) -> Iterator[bool]:
    """The guest's lock when no other command holds it (True), else nothing (False)."""
    with (_made(run_dir(store, name)) / LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    from cpuver.host.qemu import end_process, processes_under

    workdir = _new_workdir(store, guest.name)
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    vm: RunningVm | None = None
    try:
        vm = boot(QemuInstall(binary), cpu, workdir)
        _problems_or_stop(vm, guest, catalog, what)
        vm.session.command("cont")
        return _record_running(store, guest.name, vm, workdir, binary)
    except BaseException:
        if vm is not None:
            vm.close()
        for pid, _workdir in processes_under(workdir):  # interrupted before it knew the process
            end_process(pid)
        _remove_own(workdir, store)
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
        _remove_own(new_dir, store)
        source.session.command("cont")
        source.close()
        raise
    source.quit()
    if old is not None:
        _remove_own(old.workdir, store)
    return running


def stop_running_guest(store: GuestStore, guest: Guest, catalog: Catalog) -> bool:
    """End the guest's QEMU if cpuver left one running; True when there was one."""
    if running_guest(store, guest.name) is None:
        return False
    vm, _binary = _attached(store, guest, catalog)
    vm.quit()
    _forget(store, guest.name)
    return True


def _forget(store: GuestStore, name: str) -> None:
    """Remove the guest's record and work directories (the lock file stays: a command may be
    waiting on it)."""
    directory = run_dir(store, name)
    with contextlib.suppress(OSError):
        (directory / "run.json").unlink()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.is_dir():
                _remove_own(entry, store)


def save_running_guest(store: GuestStore, guest: Guest, catalog: Catalog, state: Path) -> None:
    """Write the running guest's state with QEMU's migration to a file, then end QEMU."""
    from cpuver.host.launch import save

    vm, _binary = _attached(store, guest, catalog)
    try:
        save(vm, state)
    finally:
        vm.quit()
    _forget(store, guest.name)


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
