"""``cpuver fleet ...`` and ``cpuver pool ...``: stored hosts in pools, and what a pool can run.

``fleet add|rm|ls`` keep host snapshots in the store (the guest store's database) and in pools;
``fleet what-if`` and ``fleet targets`` ask about changes and guests; ``pool best|matrix|
baseline`` answer for the hosts of one pool under one catalog, accelerator and machine type.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cpuver import api
from cpuver.cli.output import EXIT_OK, UsageError, add_json, emit
from cpuver.cli.progress import Progress

MATRIX_RUNS, MATRIX_BLOCKED = "+", "."


def add_parser(sub: Any, catalog_options: Any) -> None:
    fleet = sub.add_parser("fleet", help="hosts in pools: add snapshots, list, what-if, targets")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    add = fleet_sub.add_parser("add", help="store host snapshots (a re-add refreshes the host)")
    add.add_argument(
        "files", nargs="*", metavar="SNAPSHOT",
        help="host snapshot file (or local, or libvirt's domcapabilities XML)",
    )  # fmt: skip
    add.add_argument(
        "-c", "--connect", action="append", default=[], metavar="URI",
        help="also the host behind this libvirt connection (its domcapabilities; repeat)",
    )  # fmt: skip
    add.add_argument(
        "--pool", action="append", required=True, metavar="P", help="pool to put them in (repeat)"
    )
    rm = fleet_sub.add_parser("rm", help="forget a host, its snapshot history and memberships")
    rm.add_argument("host", metavar="HOST")
    ls = fleet_sub.add_parser("ls", help="stored hosts and their pools")
    ls.add_argument("--pool", metavar="P", help="only the hosts of this pool")

    what_if = fleet_sub.add_parser(
        "what-if",
        help="which pool answers and stored guests change if hosts lose/gain features, or "
        "(--qemu X.Y alone) if the pool's QEMU became release X.Y",
    )
    what_if.add_argument("--drop", metavar="F,F", help="features the hosts lose (hle,rtm)")
    what_if.add_argument("--add", metavar="F,F", help="features the hosts gain")
    what_if.add_argument("--hosts", metavar="H,H", help="only these hosts of the pool")
    what_if.add_argument("--pool", metavar="P", required=True)
    what_if.add_argument(
        "--from-qemu",
        metavar="X.Y",
        help="with --qemu and no --drop/--add: the release the pool runs now (default: 10.0)",
    )
    _pool_options(what_if, catalog_options)

    targets = fleet_sub.add_parser("targets", help="hosts a stored guest's pinned CPU runs on")
    targets.add_argument("guest", metavar="GUEST")
    targets.add_argument("--pool", metavar="P", help="only the hosts of this pool")
    for parser in (add, rm, ls, targets):
        parser.add_argument("--db", metavar="URL", help="store (default: SQLite file)")
        add_json(parser)

    pool = sub.add_parser("pool", help="what every host of a pool can run")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")
    best = pool_sub.add_parser(
        "best", help="newest version every host runs; which hosts block newer ones, with what"
    )
    best.add_argument("spec", metavar="SPEC", help="model name (or Model,version=best,-feature)")
    matrix = pool_sub.add_parser("matrix", help="hosts x model versions: which runs where")
    baseline = pool_sub.add_parser("baseline", help="per model family: the pool's best version")
    for parser in (best, matrix, baseline):
        parser.add_argument("--pool", metavar="P", required=True)
        _pool_options(parser, catalog_options)


def _pool_options(parser: argparse.ArgumentParser, catalog_options: Any) -> None:
    parser.add_argument("--db", metavar="URL", help="store (default: SQLite file)")
    catalog_options(parser, machine=False)
    parser.add_argument("--machine", metavar="M", help="machine type (default: newest pc-q35)")
    parser.add_argument("--accel", choices=("kvm", "tcg"), default="kvm", help="default: kvm")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    if args.command == "pool":
        return _pool(args)
    store = api.open_host_store(args.db)
    if args.fleet_command == "add":
        if not args.files and not args.connect:
            raise UsageError("fleet add: give host snapshot files or --connect URI")
        progress = Progress().step if len(args.files) + len(args.connect) > 1 else None
        added = api.add_host_files(store, args.files, args.pool, progress, args.connect)
        pools = list(dict.fromkeys(args.pool))
        emit(
            args.json,
            {"added": [record.name for record in added], "pools": pools},
            lambda: [f"{len(added)} host(s) in pool(s) {', '.join(pools)}"],
        )
        return EXIT_OK
    if args.fleet_command == "rm":
        store.remove(args.host)
        emit(args.json, {"removed": args.host}, lambda: [f"removed {args.host}"])
        return EXIT_OK
    if args.fleet_command == "ls":
        return _ls(store, args.pool, args.json)
    if args.fleet_command == "targets":
        return show_targets(store, api.open_store(args.db), args.guest, args.pool, args.json)
    return _what_if(args, store)


def _ls(store: Any, pool: str | None, as_json: bool) -> int:
    rows = [api.host_json(record) for record in store.list(pool)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["host"]) for r in rows), default=4)
    for r in rows:
        qemu = f" QEMU {', '.join(r['releases'])}" if r["releases"] else ""
        print(
            f"{r['host']:<{width}}  pools {','.join(r['pools'])}  {'/'.join(r['accelerators'])}"
            f"{qemu}  updated {r['updated']} ({r['snapshots']} snapshot(s))"
        )
    return 0


def _fleet(args: argparse.Namespace) -> Any:
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    store = api.open_host_store(args.db)
    return api.pool_fleet(store, args.pool, catalog, args.accel, args.machine)


def _header(args: argparse.Namespace, fleet: Any) -> str:
    catalog = fleet.catalog
    return (
        f"# pool {args.pool}: {len(fleet.hosts)} host(s); catalog QEMU {catalog.release}; "
        f"machine {fleet.machine}; accel {fleet.accel}"
    )


NAMED_HOSTS = 5
"""Hosts named per group of hosts lacking the same features; the rest are counted."""


def _lacks(hosts: Any) -> str:
    """``hv3, hv7 lack hle, rtm; hv9 lacks spec-ctrl``: hosts grouped by what they lack, the
    biggest group first, so a pool of thousands stays one readable line per version."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for host, missing in hosts:
        groups.setdefault(missing, []).append(host)
    parts = []
    for missing, names in sorted(groups.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(names[:NAMED_HOSTS])
        if len(names) > NAMED_HOSTS:
            shown += f" and {len(names) - NAMED_HOSTS:,} more hosts"
        verb = "lacks" if len(names) == 1 else "lack"
        parts.append(f"{shown} {verb} {', '.join(missing)}")
    return "; ".join(parts)


def _pool(args: argparse.Namespace) -> int:
    fleet = _fleet(args)
    if args.pool_command == "best":
        found = api.pool_best(fleet, args.spec)
        answer = found.answer
        if args.json:
            print(json.dumps(api.pool_best_json(args.pool, found), indent=2))
            return 0
        print(_header(args, fleet))
        best = answer.best or "(no version runs on every host)"
        print(f"{answer.model}: {best}")
        for version, hosts in answer.blocked:
            print(f"  {version} blocked: {_lacks(hosts)}")
        if found.held_back:
            print("  older versions not every host runs:")
            for version, hosts in found.held_back:
                print(f"    {version}: {_lacks(hosts)}")
        return 0
    if args.pool_command == "matrix":
        return _matrix(args, fleet)
    baseline = fleet.baseline()
    if args.json:
        print(json.dumps({"pool": args.pool, "hosts": list(fleet.hosts), "best": baseline}))
        return 0
    print(_header(args, fleet))
    width = max((len(m) for m in baseline), default=5)
    for model, best in baseline.items():
        print(f"{model:<{width}}  {best or '(none runs on every host)'}")
    return 0


def _matrix(args: argparse.Namespace, fleet: Any) -> int:
    runs = fleet.matrix()
    hosts, versions = fleet.hosts, fleet.versions
    if args.json:
        data = {
            "pool": args.pool,
            "hosts": list(hosts),
            "versions": list(versions),
            "runs": [[bool(x) for x in row] for row in runs.tolist()],
        }
        print(json.dumps(data))
        return 0
    print(_header(args, fleet))
    print(
        f"# one column per host ({MATRIX_RUNS} runs, {MATRIX_BLOCKED} does not): "
        + ", ".join(f"{i} {h}" for i, h in enumerate(hosts, 1))
    )
    width = max((len(v) for v in versions), default=7)
    digits = "".join(str(i % 10) for i in range(1, len(hosts) + 1))
    print(f"{'version':<{width}}  {digits}  runs on")
    for column, version in enumerate(versions):
        cells = "".join(
            MATRIX_RUNS if runs[row, column] else MATRIX_BLOCKED for row in range(len(hosts))
        )
        count = cells.count(MATRIX_RUNS)
        print(f"{version:<{width}}  {cells}  {count}/{len(hosts)}")
    return 0


def _what_if(args: argparse.Namespace, store: Any) -> int:
    drop, add = api.feature_names(args.drop), api.feature_names(args.add)
    if not drop and not add and args.qemu:
        return _upgrade_what_if(args, store)
    if not drop and not add:
        raise UsageError("what-if needs --drop and/or --add features, or --qemu X.Y alone")
    if args.from_qemu:
        raise UsageError("--from-qemu goes with --qemu X.Y alone (a QEMU upgrade what-if)")
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()] if args.hosts else None
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    outcome = api.fleet_what_if(
        store,
        api.open_store(args.db),
        args.pool,
        catalog,
        drop,
        add,
        hosts,
        args.accel,
        args.machine,
    )
    if args.json:
        print(json.dumps(api.what_if_json(args.pool, drop, add, hosts, outcome), indent=2))
        return 0
    change = " ".join([f"-{f}" for f in sorted(drop)] + [f"+{f}" for f in sorted(add)])
    where = f"hosts {', '.join(hosts)} of pool {args.pool}" if hosts else f"pool {args.pool}"
    print(f"# what if {where} change {change}")
    if not outcome.changes:
        print("no pool answer changes")
    for c in outcome.changes:
        print(
            f"{c.model}: {c.before or '(none)'} -> {c.after or '(none runs on every host)'}"
            f" (because of {', '.join(c.hosts)})"
        )
    if not outcome.guests:
        print("no stored guest loses a host")
    for g in outcome.guests:
        now = " (it is there now: could not start again)" if g.current else ""
        print(
            f"guest {g.guest} ({g.pin}) could no longer start on or migrate to {g.host}: "
            f"needs {', '.join(g.missing)}{now}"
        )
    for name in outcome.stranded:
        print(f"guest {name} could run on no host of the pool any more")
    return 0


def _upgrade_what_if(args: argparse.Namespace, store: Any) -> int:
    """``fleet what-if --qemu X.Y --pool P``: the pool's hosts as they are, under QEMU X.Y."""
    if args.hosts:
        raise UsageError("--hosts goes with --drop/--add; a QEMU upgrade what-if takes the pool")
    before = api.open_catalog(args.from_qemu, None, args.overlay)
    after = api.open_catalog(args.qemu, args.catalog, args.overlay)
    outcome = api.fleet_upgrade_what_if(
        store, api.open_store(args.db), args.pool, before, after, args.accel, args.machine
    )
    if args.json:
        print(json.dumps(api.upgrade_what_if_json(args.pool, outcome), indent=2))
        return 0
    print(f"# what if pool {args.pool} ran QEMU {outcome.after} instead of {outcome.before}")
    if not outcome.changes:
        print("no pool answer changes")
    for model, was, now in outcome.changes:
        print(f"{model}: {was or '(none)'} -> {now or '(none runs on every host)'}")
    everywhere = [v for v, ran, blocked in outcome.new_versions if ran and not blocked]
    if everywhere:
        print(f"new versions every host runs: {', '.join(everywhere)}")
    for version, ran, blocked in outcome.new_versions:
        if ran and blocked:
            print(f"new version {version} runs on {', '.join(ran)}; {_lacks(blocked)}")
    for version, ran, blocked in outcome.new_versions:
        maybe = [h for h, m in blocked if set(m) <= set(outcome.unknown.get(h, {}))]
        if not ran and maybe:
            print(f"new version {version} may run on {', '.join(maybe)} (only unknown features)")
    nowhere = [
        v
        for v, ran, blocked in outcome.new_versions
        if not ran and not any(set(m) <= set(outcome.unknown.get(h, {})) for h, m in blocked)
    ]
    if nowhere:
        print(f"new versions no host runs ({len(nowhere)}): {', '.join(nowhere)}")
    if not outcome.guests:
        print("every stored guest still runs where it ran")
    for g in outcome.guests:
        why = "; ".join([*g.problems, *(f"{h} would lack {', '.join(m)}" for h, m in g.lost)])
        verdict = "could run on no host of the pool" if g.stranded else "would lose hosts"
        print(f"guest {g.guest} ({g.pin}) {verdict}: {why}")
    for host, features in sorted(outcome.unknown.items()):
        for why, names in by_reason(features):
            print(f"unknown on {host}: {', '.join(names)} ({why})")
    return 0


def by_reason(features: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Unknown features grouped by why they are unknown."""
    groups: dict[str, list[str]] = {}
    for feature, why in sorted(features.items()):
        groups.setdefault(why, []).append(feature)
    return sorted(groups.items())


def show_targets(
    host_store: Any, guest_store: Any, guest: str, pool: str | None, as_json: bool
) -> int:
    """Hosts a stored guest's pin runs on (``fleet targets`` and ``domain targets``)."""
    found_guest, found = api.guest_targets(host_store, guest_store, guest, pool)
    pending = found_guest.pending.name if found_guest.pending else None
    return print_targets(guest, found, as_json, pending)


def print_targets(guest: str, found: Any, as_json: bool, pending: str | None = None) -> int:
    """Every host with what the guest's pin (and a pending update, the next cold boot's CPU)
    lacks there, for a stored guest or a libvirt domain."""
    if as_json:
        print(json.dumps(api.targets_json(guest, found, pending), indent=2))
        return 0
    runs = [h for h, missing in found if not missing]
    print(f"{guest} can run on: {', '.join(runs) if runs else '(no host)'}")
    if pending is not None:
        print(f"  (counting its pending update to {pending}: its next cold boot runs that)")
    for host, missing in found:
        if missing:
            print(f"  not on {host}: lacks {', '.join(missing)}")
    return 0
