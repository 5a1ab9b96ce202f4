"""``cpuver domain ...``: define guests with a pinned CPU and move them through their life."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.errors import CpuverError, QemuError

ACTIONS_WITH_HOST = {"start": "--host", "restore": "--host", "migrate": "--to"}


def add_parser(sub: Any, catalog_options: Any) -> None:
    domain = sub.add_parser("domain", help="guests: pin the CPU at define time, keep it exact")
    actions = domain.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("--db", metavar="URL", help="guest store (default: SQLite file)")
        catalog_options(parser, machine=False)
        return parser

    define = action("define", "resolve a domain XML or guest file fully and store the guest")
    define.add_argument("file", type=Path, metavar="FILE")
    define.add_argument("--host", metavar="FILE", help="host for version=best (or local)")
    define.add_argument("--accel", choices=("kvm", "tcg"))
    define.add_argument("--machine", metavar="M", help="machine type if the file names none")
    for name, help_text in (
        ("dumpxml", "the expanded libvirt domain XML"),
        ("history", "every change of the guest's CPU"),
        ("shutdown", "shut the guest off"),
    ):
        action(name, help_text).add_argument("name", metavar="NAME")
    action("list", "every guest with its pinned CPU")
    action("check", "guests whose pinned version is gone or deprecated in the catalog")
    for name, flag, help_text in (
        ("start", "--host", "start on a host that runs the pin"),
        ("migrate", "--to", "migrate to a host that runs the pin"),
    ):
        parser = action(name, help_text)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument(
            flag,
            dest="target",
            metavar="FILE",
            required=True,
            help="target host: snapshot, QMP reply, - or local",
        )
        parser.add_argument(
            "--launch",
            action="store_true",
            help="also prove it on real QEMU: boot the pinned CPU (and live-"
            "migrate it between two processes), verify over QMP, stop",
        )
        parser.add_argument("--qemu-binary", type=Path, metavar="PATH")
    save = action("save", "save a running guest's state to FILE")
    save.add_argument("name", metavar="NAME")
    save.add_argument("file", type=Path, metavar="FILE")
    restore = action("restore", "restore a saved guest on a host that runs the pin")
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument("--host", dest="target", metavar="FILE", required=True)
    for parser in (save, restore):
        parser.add_argument(
            "--launch",
            action="store_true",
            help="also with real QEMU: its migration stream to FILE.qemu-state "
            "(save) and back in a new process, verified over QMP (restore)",
        )
        parser.add_argument("--qemu-binary", type=Path, metavar="PATH")
    snapshot = action("snapshot", "create or revert a snapshot (the pin never changes)")
    snapshot.add_argument("verb", choices=("create", "revert"))
    snapshot.add_argument("name", metavar="NAME")
    snapshot.add_argument("snapshot", metavar="SNAPSHOT")
    update = action("update-cpu", "move the pin to another version, showing the difference")
    update.add_argument("name", metavar="NAME")
    update.add_argument("--to", default="latest", help="best, latest or vN (default: latest)")
    update.add_argument("--host", metavar="FILE", help="host for --to best (or local)")
    update.add_argument("--dry-run", action="store_true")
    update.add_argument("--accept-signature-change", action="store_true")


def run(args: argparse.Namespace) -> int:
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    store = api.open_store(args.db)
    if args.action == "define":
        host = api.read_host(args.host) if args.host else None
        guest = api.define_guest(
            store, args.file, catalog, api.pick_accel(args.accel, host), host, args.machine
        )
        print(
            f"defined {guest.name}: {guest.pin.name} on {guest.pin.machine} "
            f"({guest.pin.accel}), fingerprint {guest.pin.fingerprint[:16]}"
        )
        return 0
    if args.action == "list":
        for record in store.list():
            guest = api.get_guest(store, record.name)
            where = f" on {guest.host}" if guest.host else ""
            pending = f" (pending {guest.pending.name})" if guest.pending else ""
            print(
                f"{guest.name}  {guest.state}{where}  {guest.pin.name}{pending}  "
                f"{guest.pin.fingerprint[:16]}"
            )
        return 0
    if args.action == "dumpxml":
        print(api.guest_xml(store, args.name, catalog))
        return 0
    if args.action == "history":
        for entry in store.history(args.name):
            old = entry.old_fingerprint[:16] if entry.old_fingerprint else "-"
            print(
                f"{entry.at:%Y-%m-%d %H:%M:%S} {entry.actor}: {entry.reason} "
                f"({old} -> {entry.new_fingerprint[:16]})"
            )
        return 0
    if args.action == "check":
        problems = api.check_guests(store, catalog)
        for name, lines in problems:
            print(f"{name}: {'; '.join(lines)}")
        return 1 if problems else 0
    if args.action == "update-cpu":
        return _update(args, store, catalog)
    if args.action == "save":
        if args.launch:
            api.guest_transition(store, args.name, "save", dry_run=True)
            guest = api.get_guest(store, args.name)
            _verified(api.launch_save(guest, catalog, _binary(args), _state(args.file)))
            print(
                f"{guest.name}: {guest.pin.name} booted, verified and saved by QEMU to "
                f"{_state(args.file)}"
            )
        guest = api.guest_transition(store, args.name, "save")
        args.file.write_text(json.dumps(guest.to_json(), indent=2) + "\n")
        print(f"saved {guest.name} to {args.file}")
        return 0
    if args.action == "restore":
        return _restore(args, store, catalog)
    if args.action == "snapshot":
        guest = api.guest_transition(
            store, args.name, f"snapshot-{args.verb}", snapshot=args.snapshot
        )
        print(f"{guest.name}: snapshot {args.snapshot} {args.verb}d; CPU {guest.pin.name}")
        return 0
    if args.action == "shutdown":
        guest = api.guest_transition(store, args.name, "shutdown")
        print(f"{guest.name} is shut off")
        return 0
    host = api.read_host(args.target)
    if args.launch:
        api.guest_transition(store, args.name, args.action, host=host, dry_run=True)
        _prove_on_qemu(args, store, catalog)
    guest = api.guest_transition(store, args.name, args.action, host=host)
    print(f"{guest.name} {guest.state} on {guest.host} with {guest.pin.name}")
    return 0


def _binary(args: argparse.Namespace) -> Path:
    found = shutil.which("qemu-system-x86_64")
    binary: Path | None = args.qemu_binary or (Path(found) if found else None)
    if binary is None:
        raise QemuError("--launch needs a QEMU binary: --qemu-binary PATH")
    return binary


def _state(saved: Path) -> Path:
    """Where ``save --launch`` puts QEMU's migration stream, next to cpuver's saved guest."""
    return saved.with_name(saved.name + ".qemu-state")


def _verified(problems: list[str]) -> None:
    if problems:
        raise QemuError(f"the running vCPU differs from the pin: {'; '.join(problems)}")


def _prove_on_qemu(args: argparse.Namespace, store: Any, catalog: Any) -> None:
    guest = api.get_guest(store, args.name)
    check = api.launch_migrate_check if args.action == "migrate" else api.launch_check
    _verified(check(guest, catalog, _binary(args)))
    what = "live-migrated between two QEMU processes" if args.action == "migrate" else "booted"
    print(f"{guest.name}: {guest.pin.name} {what} and verified over QMP: exact")


def _restore(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    try:
        saved = json.loads(args.file.read_text())
        name, fingerprint = saved["name"], saved["pin"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CpuverError(f"{args.file}: not a guest saved by cpuver ({err})") from err
    current = api.get_guest(store, name)
    if current.pin.fingerprint != fingerprint:
        raise CpuverError(
            f"{args.file}: saved with another CPU than guest {name!r} has now "
            f"({fingerprint[:16]} vs {current.pin.fingerprint[:16]})"
        )
    host = api.read_host(args.target)
    if args.launch:
        api.guest_transition(store, name, "restore", host=host, dry_run=True)
        _verified(api.launch_restore_check(current, catalog, _binary(args), _state(args.file)))
        print(f"{name}: QEMU state restored in a new process and verified over QMP: exact")
    guest = api.guest_transition(store, name, "restore", host=host)
    print(f"{guest.name} restored on {guest.host} with {guest.pin.name}")
    return 0


def _update(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    host = api.read_host(args.host) if args.host else None
    accept = args.accept_signature_change or args.dry_run  # a dry run only shows the diff
    guest, diff = api.update_guest_cpu(
        store, args.name, catalog, args.to, host, accept, args.dry_run
    )
    for line in diff.lines():
        print(line)
    if args.dry_run:
        if diff.identity_changed and not args.accept_signature_change:
            print("applying it needs --accept-signature-change")
        print("(dry run: nothing changed)")
    elif guest.pending is not None:
        print(f"{guest.name} is {guest.state}: {guest.pending.name} applies at its next cold boot")
    else:
        print(f"{guest.name} now has {guest.pin.name}")
    return 0
