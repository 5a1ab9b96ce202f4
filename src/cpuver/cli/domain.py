"""``cpuver domain ...``: define guests with a pinned CPU and move them through their life."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.cli.fleet import print_targets, show_targets
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
    _best_against(define)
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
            help="also prove it on real QEMU: boot the pinned CPU (migrate: live-migrate the "
            "running QEMU into a new one), verify it over QMP and keep it running",
        )
        parser.add_argument("--qemu-binary", type=Path, metavar="PATH")
    save = action("save", "save a guest's state to FILE (QEMU's, if it runs in QEMU)")
    save.add_argument("name", metavar="NAME")
    save.add_argument("file", type=Path, metavar="FILE")
    restore = action("restore", "restore a saved guest on a host that runs the pin")
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument("--host", dest="target", metavar="FILE", required=True)
    restore.add_argument(
        "--launch",
        action="store_true",
        help="load FILE.qemu-state (written when a guest running in QEMU was saved) into a "
        "new QEMU, verify it over QMP and keep it running",
    )
    restore.add_argument("--qemu-binary", type=Path, metavar="PATH")
    snapshot = action("snapshot", "create or revert a snapshot (the pin never changes)")
    snapshot.add_argument("verb", choices=("create", "revert"))
    snapshot.add_argument("name", metavar="NAME")
    snapshot.add_argument("snapshot", metavar="SNAPSHOT")
    update = action("update-cpu", "move the pin to another version, showing the difference")
    update.add_argument("name", metavar="NAME")
    update.add_argument("--to", default="latest", help="best, latest or vN (default: latest)")
    _best_against(update)
    update.add_argument(
        "--force", action="store_true", help="update even if the host or pool cannot run it"
    )
    connect_option(update, "the libvirt domain NAME instead of a stored guest")
    pin = action("pin", "pin a libvirt domain's CPU in place (or a domain XML: - or FILE)")
    pin.add_argument("name", metavar="NAME", help="libvirt domain, or - / FILE (filter form)")
    pin.add_argument("--spec", metavar="SPEC", help="pin this spec instead of the XML's <cpu>")
    _best_against(pin)
    pin.add_argument("--force", action="store_true", help="pin again a domain edited since")
    connect_option(pin)
    verify = action("verify", "compare a running libvirt domain's vCPU with its pin")
    verify.add_argument("name", metavar="NAME")
    connect_option(verify)
    targets = action("targets", "hosts (of a pool) the guest's pinned CPU can start or migrate on")
    targets.add_argument("name", metavar="NAME")
    targets.add_argument("--pool", metavar="P", help="only the hosts of this pool")
    targets.add_argument("--json", action="store_true", help="machine-readable output")
    connect_option(targets, "the libvirt domain NAME instead of a stored guest")
    update.add_argument("--dry-run", action="store_true")
    update.add_argument("--accept-signature-change", action="store_true")


def connect_option(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    """``-c/--connect URI`` as virsh has it (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)."""
    parser.add_argument(
        "-c",
        "--connect",
        metavar="URI",
        help=(what + ": " if what else "")
        + "libvirt connection URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)",
    )


def _best_against(parser: argparse.ArgumentParser) -> None:
    """--host or --pool: what version=best must run on."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--host", metavar="FILE", help="host for version=best (or local)")
    where.add_argument(
        "--pool",
        metavar="P",
        help="stored pool for version=best: the newest version every host of it runs "
        "(migration-safe)",
    )


def _best_host(args: argparse.Namespace, catalog: Any, accel: str | None) -> Any:
    """The host (or the pool as one host) version=best is resolved for, if any."""
    if args.pool:
        return api.pool_host(api.open_host_store(args.db), args.pool, catalog, accel or "kvm")
    return api.read_host(args.host) if args.host else None


# commands that may start, move or end a guest's QEMU: they hold the guest's lock meanwhile
QEMU_ACTIONS = ("start", "migrate", "save", "restore", "shutdown")


def run(args: argparse.Namespace) -> int:
    if args.action == "pin":
        return _pin(args)
    if args.action == "verify":
        return _verify(args)
    if args.action == "update-cpu" and args.connect:
        return _update_domain(args)
    if args.action == "targets" and args.connect:
        return _domain_targets(args)
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    store = api.open_store(args.db)
    for pid in api.end_strays(store):
        print(
            f"ended QEMU pid {pid}: its command ended before it kept a record", file=sys.stderr
        )
    if args.action == "restore":
        return _restore(args, store, catalog)
    if args.action in QEMU_ACTIONS:
        with api.guest_lock(store, args.name):
            return _act(args, store, catalog)
    return _act(args, store, catalog)


def _act(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    if args.action == "define":
        host = _best_host(args, catalog, args.accel)
        guest = api.define_guest(
            store, args.file, catalog, api.pick_accel(args.accel, host), host, args.machine
        )
        against = f", for {host.source}" if args.pool else ""
        print(
            f"defined {guest.name}: {guest.pin.name} on {guest.pin.machine} "
            f"({guest.pin.accel}{against}), fingerprint {guest.pin.fingerprint[:16]}"
        )
        return 0
    if args.action == "targets":
        hosts = api.open_host_store(args.db)
        return show_targets(hosts, store, args.name, args.pool, args.json)
    if args.action == "list":
        for guest in api.list_guests(store):
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
        api.guest_transition(store, args.name, "save", dry_run=True)
        if api.running_guest(store, args.name) is not None:
            current = api.get_guest(store, args.name)
            api.save_running_guest(store, current, catalog, _state(args.file))
            print(f"{current.name}: QEMU saved its state to {_state(args.file)} and stopped")
        guest = api.guest_transition(store, args.name, "save")
        args.file.write_text(json.dumps(guest.to_json(), indent=2) + "\n")
        print(f"saved {guest.name} to {args.file}")
        return 0
    if args.action == "snapshot":
        guest = api.guest_transition(
            store, args.name, f"snapshot-{args.verb}", snapshot=args.snapshot
        )
        print(f"{guest.name}: snapshot {args.snapshot} {args.verb}d; CPU {guest.pin.name}")
        return 0
    if args.action == "shutdown":
        api.guest_transition(store, args.name, "shutdown", dry_run=True)
        if api.stop_running_guest(store, api.get_guest(store, args.name), catalog):
            print(f"{args.name}: its QEMU process ended")
        guest = api.guest_transition(store, args.name, "shutdown")
        print(f"{guest.name} is shut off")
        return 0
    host = api.read_host(args.target)
    api.guest_transition(store, args.name, args.action, host=host, dry_run=True)
    before = api.get_guest(store, args.name)
    if args.action == "start" and args.launch:
        running = api.launch_guest(store, before, catalog, _binary(args))
        print(f"{before.name}: QEMU pid {running.pid} runs {before.pin.name}, verified over QMP")
    elif args.action == "migrate" and (args.launch or api.running_guest(store, args.name)):
        running = api.migrate_running_guest(store, before, catalog, args.qemu_binary)
        print(f"{before.name}: live-migrated to QEMU pid {running.pid}, verified over QMP")
    try:
        guest = api.guest_transition(store, args.name, args.action, host=host)
    except BaseException:
        api.stop_running_guest(store, before, catalog)  # no QEMU the store does not know of
        raise
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


def _restore(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    try:
        saved = json.loads(args.file.read_text())
        name, fingerprint = saved["name"], saved["pin"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        reason = err.strerror if isinstance(err, OSError) else type(err).__name__
        raise CpuverError(f"{args.file}: not a guest saved by cpuver ({reason})") from err
    with api.guest_lock(store, name):
        return _restore_guest(args, store, catalog, name, fingerprint)


def _restore_guest(
    args: argparse.Namespace, store: Any, catalog: Any, name: str, fingerprint: str
) -> int:
    current = api.get_guest(store, name)
    if current.pin.fingerprint != fingerprint:
        raise CpuverError(
            f"{args.file}: saved with another CPU than guest {name!r} has now "
            f"({fingerprint[:16]} vs {current.pin.fingerprint[:16]})"
        )
    host = api.read_host(args.target)
    api.guest_transition(store, name, "restore", host=host, dry_run=True)
    if args.launch:
        running = api.restore_running_guest(
            store, current, catalog, _binary(args), _state(args.file)
        )
        print(f"{name}: QEMU pid {running.pid} restored the state, verified over QMP")
    guest = api.guest_transition(store, name, "restore", host=host)
    print(f"{guest.name} restored on {guest.host} with {guest.pin.name}")
    return 0


def _update(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    accel = api.get_guest(store, args.name).pin.accel
    host = _best_host(args, catalog, accel)
    run_on = api.update_hosts(api.open_host_store(args.db), catalog, accel, host, args.pool)
    accept = args.accept_signature_change or args.dry_run  # a dry run only shows the diff
    guest, diff = api.update_guest_cpu(
        store, args.name, catalog, args.to, host, accept, args.dry_run, run_on, args.force
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


def _domain_host(args: argparse.Namespace, catalog: Any, accel: str) -> Any:
    if args.pool:
        return api.pool_host(api.open_host_store(args.db), args.pool, catalog, accel)
    return api.read_host(args.host) if args.host else None


def _pin(args: argparse.Namespace) -> int:
    """``domain pin NAME`` (a libvirt domain, in place) or ``domain pin -|FILE`` (filter)."""
    filter_form = not args.connect and (args.name == "-" or Path(args.name).is_file())

    def host(catalog: Any, accel: str) -> Any:
        return _domain_host(args, catalog, accel)

    if not filter_form:
        done = api.pin_domain(
            args.connect, args.name, host, args.spec, args.force, args.catalog, args.overlay
        )
        if done.changed:
            print(
                f"pinned {done.name}: {done.pin.name} as <model>{done.model}</model> on "
                f"{done.pin.machine} ({done.pin.accel}), fingerprint {done.pin.fingerprint[:16]}"
            )
        else:
            print(f"{done.name} is pinned already: {done.pin.name} ({done.pin.fingerprint[:16]})")
        for note in done.notes:
            print(f"  note: {note}")
        return 0
    try:
        text = sys.stdin.read() if args.name == "-" else Path(args.name).read_text()
    except OSError as err:
        raise CpuverError(f"cannot read {args.name}: {err.strerror}") from err
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    source = "standard input" if args.name == "-" else args.name
    done = api.pin_definition(text, source, catalog, host, args.spec, force=args.force)
    sys.stdout.write(done.xml)
    for note in done.notes:
        print(f"cpuver: note: {note}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    pinned, problems = api.verify_domain(args.connect, args.name)
    if not problems:
        print(
            f"{args.name}: the running vCPU is its pin {pinned.name} "
            f"({len(pinned.on) + len(pinned.off)} features and the signature)"
        )
        return 0
    print(f"{args.name}: the running vCPU differs from its pin {pinned.name}:")
    for line in problems:
        print(f"  {line}")
    return 1


def _update_domain(args: argparse.Namespace) -> int:
    def hosts(catalog: Any, accel: str) -> list[Any]:
        host = _domain_host(args, catalog, accel)
        return api.update_hosts(api.open_host_store(args.db), catalog, accel, host, args.pool)

    accept = args.accept_signature_change or args.dry_run
    diff = api.update_domain_cpu(
        args.connect, args.name, args.to, hosts, accept, args.dry_run, args.force,
        best_host=lambda catalog, accel: _domain_host(args, catalog, accel),
    )  # fmt: skip
    for line in diff.lines() or ["no change"]:
        print(line)
    if args.dry_run:
        if diff.identity_changed and not args.accept_signature_change:
            print("applying it needs --accept-signature-change")
        print("(dry run: nothing changed)")
    elif diff.pending:
        print(
            f"{args.name} runs: {diff.new} is in its persistent definition and applies at its "
            "next cold boot"
        )
    elif diff.applied:
        print(f"{args.name} now has {diff.new}")
    return 0


def _domain_targets(args: argparse.Namespace) -> int:
    hosts = api.stored_hosts(api.open_host_store(args.db), args.pool)
    rows = api.domain_targets(args.connect, args.name, hosts)
    return print_targets(args.name, rows, args.json)
