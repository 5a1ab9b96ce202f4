"""``cpuver domain ...``: define guests with a pinned CPU and move them through their life."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.cli.fleet import print_targets, show_targets
from cpuver.cli.output import EXIT_ERROR, EXIT_OK, UsageError, add_json, emit
from cpuver.errors import CpuverError, QemuError

ACTIONS_WITH_HOST = {"start": "--host", "restore": "--host", "migrate": "--to"}


def add_parser(sub: Any, catalog_options: Any) -> None:
    domain = sub.add_parser("domain", help="guests: pin the CPU at define time, keep it exact")
    actions = domain.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("--db", metavar="URL", help="guest store (default: SQLite file)")
        catalog_options(parser, machine=False)
        add_json(parser)
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
    undefine = action("undefine", "remove a shut-off guest; its CPU history stays for audit")
    undefine.add_argument("name", metavar="NAME")
    undefine.add_argument(
        "--delete-history", action="store_true", help="also delete the guest's CPU history"
    )
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
            help="target host: snapshot, QMP reply, -, local or a stored host name",
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
    snapshot = action("snapshot", "create, revert or list snapshots (the pin never changes)")
    snapshot.add_argument("verb", choices=("create", "revert", "list"))
    snapshot.add_argument("name", metavar="NAME")
    snapshot.add_argument("snapshot", metavar="SNAPSHOT", nargs="?", help="(create, revert)")
    update = action("update-cpu", "move the pin to another version, showing the difference")
    update.add_argument("name", metavar="NAME")
    update.add_argument("--to", help="best, latest or vN (default: latest)")
    update.add_argument(
        "--cancel", action="store_true", help="drop the guest's pending CPU update instead"
    )
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
    return api.read_host(args.host, db=args.db) if args.host else None


def _done(
    args: argparse.Namespace, guest: Any, text: str, running: Any = None, **extra: Any
) -> int:
    """A lifecycle step's answer: the guest as it is now (and its QEMU process, if any)."""
    qemu = {"pid": running.pid, "verified": True} if running is not None else None
    data = {"action": args.action, "guest": api.guest_json(guest), "qemu": qemu, **extra}
    emit(args.json, data, lambda: [text])
    return EXIT_OK


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
        print(f"ended QEMU pid {pid}: its command ended before it kept a record", file=sys.stderr)
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
        return _done(
            args,
            guest,
            f"defined {guest.name}: {guest.pin.name} on {guest.pin.machine} "
            f"({guest.pin.accel}{against}), fingerprint {guest.pin.fingerprint[:16]}",
        )
    if args.action == "targets":
        hosts = api.open_host_store(args.db)
        return show_targets(hosts, store, args.name, args.pool, args.json)
    if args.action == "list":
        guests = api.list_guests(store)
        emit(args.json, [api.guest_json(g) for g in guests], lambda: map(_list_line, guests))
        return EXIT_OK
    if args.action == "dumpxml":
        xml = api.guest_xml(store, args.name, catalog)
        emit(args.json, {"guest": args.name, "xml": xml}, lambda: [xml])
        return EXIT_OK
    if args.action == "history":
        entries = store.history(args.name)
        emit(args.json, [_history_json(e) for e in entries], lambda: map(_history_line, entries))
        return EXIT_OK
    if args.action == "check":
        problems = api.check_guests(store, catalog)
        emit(
            args.json,
            [{"guest": name, "problems": lines} for name, lines in problems],
            lambda: (f"{name}: {'; '.join(lines)}" for name, lines in problems),
        )
        return EXIT_ERROR if problems else EXIT_OK
    if args.action == "update-cpu":
        return _update(args, store, catalog)
    if args.action == "undefine":
        gone = api.undefine_guest(store, args.name, keep_history=not args.delete_history)
        kept = "deleted" if args.delete_history else f"kept: cpuver domain history {gone.name}"
        history = "deleted" if args.delete_history else "kept"
        return _done(args, gone, f"{gone.name} undefined (CPU history {kept})", history=history)
    if args.action == "snapshot":
        return _snapshot(args, store)
    if args.action == "save":
        return _save(args, store, catalog)
    if args.action == "restore":
        return _restore(args, store, catalog)
    if args.action == "shutdown":
        api.guest_transition(store, args.name, "shutdown", dry_run=True)
        ended = api.stop_running_guest(store, api.get_guest(store, args.name), catalog)
        guest = api.guest_transition(store, args.name, "shutdown")
        text = (
            f"{args.name}: its QEMU process ended\n" if ended else ""
        ) + f"{guest.name} is shut off"
        return _done(args, guest, text, qemu_ended=ended)
    host = api.read_host(args.target, db=args.db)
    api.guest_transition(store, args.name, args.action, host=host, dry_run=True)
    before = api.get_guest(store, args.name)
    running, said = None, ""
    try:
        # from the launch until the store says the guest runs, any failure or signal ends the
        # QEMU: no process is left that the store does not know of (nothing ran before)
        if args.action == "start" and args.launch:
            running = api.launch_guest(store, before, catalog, _binary(args))
            said = (
                f"{before.name}: QEMU pid {running.pid} runs {before.pin.name}, verified over QMP\n"
            )
        elif args.action == "migrate" and (args.launch or api.running_guest(store, args.name)):
            running = api.migrate_running_guest(store, before, catalog, args.qemu_binary)
            said = f"{before.name}: live-migrated to QEMU pid {running.pid}, verified over QMP\n"
        guest = api.guest_transition(store, args.name, args.action, host=host)
    except BaseException:
        if args.action == "start" or running is not None:
            api.stop_running_guest(store, before, catalog)
        raise
    return _done(
        args,
        guest,
        f"{said}{guest.name} {guest.state} on {guest.host} with {guest.pin.name}",
        running,
    )


def _list_line(guest: Any) -> str:
    where = f" on {guest.host}" if guest.host else ""
    pending = f" (pending {guest.pending.name})" if guest.pending else ""
    fingerprint = guest.pin.fingerprint[:16]
    return f"{guest.name}  {guest.state}{where}  {guest.pin.name}{pending}  {fingerprint}"


def _history_json(entry: Any) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(timespec="seconds"),
        "actor": entry.actor,
        "reason": entry.reason,
        "old-fingerprint": entry.old_fingerprint,
        "new-fingerprint": entry.new_fingerprint,
    }


def _history_line(entry: Any) -> str:
    old = entry.old_fingerprint[:16] if entry.old_fingerprint else "-"
    return (
        f"{entry.at:%Y-%m-%d %H:%M:%S} {entry.actor}: {entry.reason} "
        f"({old} -> {entry.new_fingerprint[:16]})"
    )


def _binary(args: argparse.Namespace) -> Path:
    import shutil  # here: it imports bz2 and lzma (start-up time)

    found = shutil.which("qemu-system-x86_64")
    binary: Path | None = args.qemu_binary or (Path(found) if found else None)
    if binary is None:
        raise QemuError("--launch needs a QEMU binary: --qemu-binary PATH")
    return binary


def _state(saved: Path) -> Path:
    """Where ``save --launch`` puts QEMU's migration stream, next to cpuver's saved guest."""
    return saved.with_name(saved.name + ".qemu-state")


def _save(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    api.guest_transition(store, args.name, "save", dry_run=True)
    said, state = "", None
    if api.running_guest(store, args.name) is not None:
        current = api.get_guest(store, args.name)
        state = _state(args.file)
        api.save_running_guest(store, current, catalog, state)
        said = f"{current.name}: QEMU saved its state to {state} and stopped\n"
    guest = api.guest_transition(store, args.name, "save")
    args.file.write_text(json.dumps(guest.to_json(), indent=2) + "\n")
    return _done(
        args,
        guest,
        f"{said}saved {guest.name} to {args.file}",
        file=str(args.file),
        qemu_state=str(state) if state else None,
    )


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
    host = api.read_host(args.target, db=args.db)
    api.guest_transition(store, name, "restore", host=host, dry_run=True)
    running, said = None, ""
    if args.launch:
        running = api.restore_running_guest(
            store, current, catalog, _binary(args), _state(args.file)
        )
        said = f"{name}: QEMU pid {running.pid} restored the state, verified over QMP\n"
    guest = api.guest_transition(store, name, "restore", host=host)
    return _done(
        args, guest, f"{said}{guest.name} restored on {guest.host} with {guest.pin.name}", running
    )


def _snapshot(args: argparse.Namespace, store: Any) -> int:
    if args.verb == "list":
        snapshots = api.get_guest(store, args.name).snapshots
        emit(args.json, {"guest": args.name, "snapshots": list(snapshots)}, lambda: snapshots)
        return EXIT_OK
    if args.snapshot is None:
        raise UsageError(f"snapshot {args.verb} needs a SNAPSHOT name")
    guest = api.guest_transition(store, args.name, f"snapshot-{args.verb}", snapshot=args.snapshot)
    done = {"create": "created", "revert": "reverted to"}[args.verb]
    return _done(
        args,
        guest,
        f"{guest.name}: snapshot {args.snapshot} {done}; CPU {guest.pin.name} (unchanged)",
        snapshot=args.snapshot,
    )


def _update(args: argparse.Namespace, store: Any, catalog: Any) -> int:
    if args.cancel:
        if args.to or args.dry_run or args.accept_signature_change or args.host or args.pool:
            raise UsageError("--cancel takes no --to, --dry-run, --host, --pool or --accept-*")
        before = api.get_guest(store, args.name)
        guest = api.cancel_cpu_update(store, args.name)
        assert before.pending is not None
        return _done(
            args,
            guest,
            f"{guest.name}: pending update to {before.pending.name} cancelled; "
            f"keeps {guest.pin.name}",
            cancelled=before.pending.name,
        )
    accel = api.get_guest(store, args.name).pin.accel
    host = _best_host(args, catalog, accel)
    run_on = api.update_hosts(api.open_host_store(args.db), catalog, accel, host, args.pool)
    accept = args.accept_signature_change or args.dry_run  # a dry run only shows the diff
    guest, diff = api.update_guest_cpu(
        store, args.name, catalog, args.to or "latest", host, accept, args.dry_run, run_on,
        args.force,
    )  # fmt: skip

    def lines() -> list[str]:
        out = diff.lines()
        if args.dry_run:
            if diff.identity_changed and not args.accept_signature_change:
                out.append("applying it needs --accept-signature-change")
            out.append("(dry run: nothing changed)")
        elif guest.pending is not None:
            out.append(
                f"{guest.name} is {guest.state}: {guest.pending.name} applies at its next cold boot"
            )
        else:
            out.append(f"{guest.name} now has {guest.pin.name}")
        return out

    data = {
        "action": "update-cpu",
        "guest": api.guest_json(guest),
        "diff": api.cpu_diff_json(diff),
        "dry-run": args.dry_run,
    }
    emit(args.json, data, lines)
    return EXIT_OK


def _domain_host(args: argparse.Namespace, catalog: Any, accel: str) -> Any:
    if args.pool:
        return api.pool_host(api.open_host_store(args.db), args.pool, catalog, accel)
    return api.read_host(args.host, db=args.db) if args.host else None


def _pin(args: argparse.Namespace) -> int:
    """``domain pin NAME`` (a libvirt domain, in place) or ``domain pin -|FILE`` (filter)."""
    filter_form = not args.connect and (args.name == "-" or Path(args.name).is_file())

    def host(catalog: Any, accel: str) -> Any:
        return _domain_host(args, catalog, accel)

    if not filter_form:
        done = api.pin_domain(
            args.connect, args.name, host, args.spec, args.force, args.catalog, args.overlay
        )

        def said() -> list[str]:
            if done.changed:
                first = (
                    f"pinned {done.name}: {done.pin.name} as <model>{done.model}</model> on "
                    f"{done.pin.machine} ({done.pin.accel}), "
                    f"fingerprint {done.pin.fingerprint[:16]}"
                )
            else:
                first = (
                    f"{done.name} is pinned already: {done.pin.name} ({done.pin.fingerprint[:16]})"
                )
            return [first, *(f"  note: {note}" for note in done.notes)]

        data = {
            "action": "pin",
            "domain": done.name,
            "changed": done.changed,
            "cpu": done.pin.name,
            "model": done.model,
            "machine": done.pin.machine,
            "accel": done.pin.accel,
            "fingerprint": done.pin.fingerprint,
            "notes": list(done.notes),
        }
        emit(args.json, data, said)
        return EXIT_OK
    try:
        text = sys.stdin.read() if args.name == "-" else Path(args.name).read_text()
    except OSError as err:
        raise CpuverError(f"cannot read {args.name}: {err.strerror}") from err
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    source = "standard input" if args.name == "-" else args.name
    pinned = api.pin_definition(text, source, catalog, host, args.spec, force=args.force)
    if args.json:
        emit(True, {"action": "pin", "xml": pinned.xml, "notes": list(pinned.notes)}, list)
        return EXIT_OK
    sys.stdout.write(pinned.xml)
    for note in pinned.notes:
        print(f"cpuver: note: {note}", file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    pinned, problems = api.verify_domain(args.connect, args.name)

    def said() -> list[str]:
        if not problems:
            return [
                f"{args.name}: the running vCPU is its pin {pinned.name} "
                f"({len(pinned.on) + len(pinned.off)} features and the signature)"
            ]
        return [
            f"{args.name}: the running vCPU differs from its pin {pinned.name}:",
            *(f"  {line}" for line in problems),
        ]

    data = {"domain": args.name, "cpu": pinned.name, "equal": not problems, "differences": problems}
    emit(args.json, data, said)
    return EXIT_ERROR if problems else EXIT_OK


def _update_domain(args: argparse.Namespace) -> int:
    def hosts(catalog: Any, accel: str) -> list[Any]:
        host = _domain_host(args, catalog, accel)
        return api.update_hosts(api.open_host_store(args.db), catalog, accel, host, args.pool)

    accept = args.accept_signature_change or args.dry_run
    diff = api.update_domain_cpu(
        args.connect, args.name, args.to or "latest", hosts, accept, args.dry_run, args.force,
        best_host=lambda catalog, accel: _domain_host(args, catalog, accel),
    )  # fmt: skip

    def said() -> list[str]:
        out = diff.lines() or ["no change"]
        if args.dry_run:
            if diff.identity_changed and not args.accept_signature_change:
                out.append("applying it needs --accept-signature-change")
            out.append("(dry run: nothing changed)")
        elif diff.pending:
            out.append(
                f"{args.name} runs: {diff.new} is in its persistent definition and applies at "
                "its next cold boot"
            )
        elif diff.applied:
            out.append(f"{args.name} now has {diff.new}")
        return out

    data = {
        "action": "update-cpu",
        "domain": args.name,
        "diff": api.cpu_diff_json(diff),
        "dry-run": args.dry_run,
    }
    emit(args.json, data, said)
    return EXIT_OK


def _domain_targets(args: argparse.Namespace) -> int:
    hosts = api.stored_hosts(api.open_host_store(args.db), args.pool)
    rows = api.domain_targets(args.connect, args.name, hosts)
    return print_targets(args.name, rows, args.json)
