"""The ``cpuver`` command: argument parsing, rendering and exit codes; the work is in api.

Exit codes (:mod:`cpuver.cli.output`): 0 success, 1 a cpuver error (one line on stderr, never a
traceback), 2 usage error, 3 refused (the state of a guest, host or store says no), 130
interrupted. Every command that prints takes ``--json``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from cpuver import api
from cpuver.cli import domain, fleet, libvirt, serve
from cpuver.cli.output import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Parser,
    UsageError,
    add_json,
    emit,
    fail,
    print_json,
)
from cpuver.errors import CpuverError, HostNeeded
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

if TYPE_CHECKING:
    from cpuver.host.explain import HostDiff

REPORT_FEATURES = 6
"""Blocking features shown per line of ``cpuver report`` (``--json`` has them all)."""


def _catalog_options(parser: argparse.ArgumentParser, *, machine: bool = True) -> None:
    group = parser.add_argument_group("catalog")
    group.add_argument(
        "--qemu",
        metavar="X.Y",
        help="QEMU release whose catalog to use (default: 10.0, Debian 13's own)",
    )
    group.add_argument(
        "--catalog",
        metavar="DIR",
        type=Path,
        help="use this catalog directory instead of a bundled one",
    )
    group.add_argument(
        "--overlay",
        metavar="DIR",
        type=Path,
        action="append",
        default=[],
        help="merge extra models/versions from DIR (repeatable)",
    )
    if machine:
        group.add_argument("--machine", metavar="M", help="machine type (default: newest pc-q35)")
        group.add_argument(
            "--accel",
            choices=("kvm", "tcg"),
            help="accelerator (default: the host file's, else kvm when usable)",
        )
        group.add_argument(
            "--host",
            metavar="FILE",
            help="host capabilities: snapshot (cpuver-host/1 or /2), QMP expansion reply, "
            "- (standard input), local (probe this host now) or a stored host's name",
        )
        _store_option(group)


def _store_option(parser: Any) -> None:
    parser.add_argument(
        "--db", metavar="URL", help="store whose fleet hosts --host may name (default: SQLite)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cpuver",
        description="Versioned CPU models for virtual machines, exact to QEMU.",
        epilog=EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="every CPU model name (like query-cpu-definitions)")
    _catalog_options(models)

    resolve = sub.add_parser(
        "resolve", help="resolve specs to exact definitions (--json: always a list)"
    )
    resolve.add_argument("specs", nargs="+", metavar="SPEC")
    _catalog_options(resolve)

    show = sub.add_parser("show", help="a model's version history")
    show.add_argument("model", metavar="MODEL")
    _catalog_options(show, machine=False)

    diff = sub.add_parser("diff", help="features and signature fields that differ")
    diff.add_argument("spec_a", metavar="SPEC_A")
    diff.add_argument("spec_b", metavar="SPEC_B")
    _catalog_options(diff)

    report = sub.add_parser("report", help="every model family on this host: bare, best, blockers")
    _catalog_options(report)
    for parser_ in (models, resolve, show, diff, report):
        add_json(parser_)

    host_actions = _host_parser(sub)
    domain.add_parser(sub, _catalog_options)
    fleet.add_parser(sub, _catalog_options)
    libvirt.add_parser(sub)
    serve.add_parser(sub, host_actions)

    catalog = sub.add_parser("catalog", help="catalog maintenance")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    importer = catalog_sub.add_parser("import", help="import a catalog from a QEMU binary")
    importer.add_argument(
        "--qemu", metavar="PATH", type=Path, required=True, help="qemu-system-x86_64 binary"
    )
    importer.add_argument("-o", "--output", metavar="DIR", type=Path, required=True)
    add_json(importer)
    return parser


def _host_parser(sub: Any) -> Any:
    """The ``host`` command; returns its subcommands so ``host push`` can join them."""
    host = sub.add_parser("host", help="host snapshots: probe this host, show one, diff two")
    host_sub = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    probe = host_sub.add_parser("probe", help="snapshot what this host can give a guest")
    probe.add_argument(
        "--via",
        choices=(*api.PROBE_METHODS, "libvirt"),
        default="auto",
        help="kvm (ioctls), qemu (QEMU's own filter), cpuinfo (approximate), libvirt (the "
        "daemon's domcapabilities), auto (default: kvm when /dev/kvm is usable, else qemu, "
        "else cpuinfo)",
    )
    domain.connect_option(probe, "with --via libvirt")
    probe.add_argument(
        "--qemu",
        metavar="PATH",
        type=Path,
        action="append",
        default=[],
        help="qemu-system-x86_64 to ask with --via qemu (repeatable; default: the one on PATH)",
    )
    probe.add_argument("-o", "--output", metavar="FILE", type=Path, help="write the snapshot here")
    add_json(probe)
    show = host_sub.add_parser("show", help="a host snapshot in words")
    show.add_argument(
        "file", metavar="FILE", help="snapshot, QMP expansion reply, -, local or a stored host"
    )
    show.add_argument("--json", action="store_true", help="the snapshot as cpuver reads it")
    _store_option(show)
    diff = host_sub.add_parser(
        "diff", help="what changed between two snapshots of a host, or across QEMU releases"
    )
    diff.add_argument("file_a", metavar="A")
    diff.add_argument("file_b", metavar="B", nargs="?", help="(not with --to-qemu)")
    diff.add_argument(
        "--to-qemu",
        metavar="X.Y",
        help="the host as it is under this QEMU release instead of --qemu's",
    )
    diff.add_argument(
        "--accel",
        choices=("kvm", "tcg"),
        action="append",
        help="accelerator(s) to compare (default: every one both snapshots have)",
    )
    _catalog_options(diff, machine=False)
    _store_option(diff)
    add_json(diff)
    return host_sub


def _terminated(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM ends cpuver as Ctrl-C does: every cleanup runs (a QEMU being launched is
    ended, nothing is half-written), instead of the process vanishing mid-way; during an
    exchange with QEMU, as soon as it is over (:mod:`cpuver.host.termination`)."""
    from cpuver.host import termination

    def end() -> None:
        raise SystemExit(128 + signum)

    termination.request(end)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(build_parser().parse_args(argv))
    except UsageError as err:
        if not as_json and err.usage:
            sys.stderr.write(err.usage)
        return fail(err, EXIT_USAGE, as_json, api.error_json(err))
    except HostNeeded as err:
        said = HostNeeded(f"{err} (give --host FILE, --host local or a stored host's name)")
        return fail(said, EXIT_ERROR, as_json, api.error_json(said))
    except CpuverError as err:
        code = EXIT_REFUSED if api.is_refusal(err) else EXIT_ERROR
        return fail(err, code, as_json, api.error_json(err))
    except KeyboardInterrupt:
        print("cpuver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.command == "catalog":
        catalog = api.import_catalog(args.qemu, args.output, progress=_progress)
        imported = {
            "output": str(args.output),
            "release": catalog.release,
            "build": catalog.build,
            "models": len(catalog.models),
            "versions": sum(len(m.versions) for m in catalog.models.values()),
            "machines": len(catalog.machines),
        }
        said = (
            f"imported {imported['models']} models, {imported['versions']} versions, "
            f"{imported['machines']} machine types from {catalog.build} into {args.output}"
        )
        emit(args.json, imported, lambda: [said])
        return EXIT_OK
    if args.command == "serve" or getattr(args, "host_command", None) == "push":
        return serve.run(args)
    if args.command == "host":
        return _host_command(args)
    if args.command == "domain":
        return domain.run(args)
    if args.command in ("fleet", "pool"):
        return fleet.run(args)
    if args.command in ("libvirt", "libvirt-hook"):
        return libvirt.run(args)
    catalog = api.open_catalog(args.qemu, args.catalog, args.overlay)
    if args.command == "show":
        return _show(catalog, args.model, args.json)
    host = _host(args)
    resolver = Resolver(catalog, args.machine, api.pick_accel(args.accel, host), host)
    if args.command == "models":
        return _models(resolver, args.json)
    if args.command == "resolve":
        return _resolve(resolver, args.specs, args.json)
    if args.command == "diff":
        return _diff(resolver, args.spec_a, args.spec_b, args.json)
    return _report(resolver, args.json)


def _host(args: argparse.Namespace) -> HostCapabilities | None:
    if args.command == "report" and args.host is None:
        return api.read_host("local")
    return api.read_host(args.host, db=args.db) if args.host else None


def _host_command(args: argparse.Namespace) -> int:
    if args.host_command == "probe":
        if args.via == "libvirt":
            host = api.probe_libvirt(args.connect)
        else:
            host = api.probe_host(args.via, args.qemu, progress=_progress)
        text = api.write_host(host, args.output)
        if args.output is None:
            sys.stdout.write(text)  # the snapshot is JSON already
        elif args.json:
            print_json({"written": str(args.output), "host": host.name, "method": host.method})
        else:
            print(f"wrote {args.output} (method {host.method})", file=sys.stderr)
        return EXIT_OK
    if args.host_command == "show":
        host = api.read_host(args.file, db=args.db)
        if args.json:
            print_json(host.to_json())
        else:
            print("\n".join(_host_lines(host)))
        return 0
    if args.to_qemu:
        return _release_diff(args)
    if args.file_b is None:
        raise UsageError("host diff needs two snapshots A B, or one with --to-qemu X.Y")
    a, b = api.read_host(args.file_a, db=args.db), api.read_host(args.file_b, db=args.db)
    diff, usability = api.host_diff(a, b, args.qemu, args.accel, args.catalog, args.overlay)
    if args.json:
        print_json(_host_diff_json(diff, usability))
    else:
        print("\n".join(_host_diff_lines(diff, usability)))
    return 0


def _release_diff(args: argparse.Namespace) -> int:
    """``host diff FILE --qemu X.Y --to-qemu Z.W``: one host, two QEMU releases."""
    if args.file_b is not None:
        raise UsageError("host diff --to-qemu compares one host across releases: give one file")
    host = api.read_host(args.file_a, db=args.db)
    before = api.open_catalog(args.qemu, args.catalog, args.overlay)
    after = api.open_catalog(args.to_qemu, None, args.overlay)
    accels = args.accel or sorted(set(host.offers) | ({"tcg"} if "kvm" in host.offers else set()))
    changes = [api.release_change(host, before, after, accel) for accel in accels]
    if args.json:
        print_json(api.release_change_json(host.name, changes))
        return 0
    print(f"host {host.name}: QEMU {before.release} -> QEMU {after.release}")
    for c in changes:
        print(f"  {c.accel}:")
        if c.lost:
            print(f"    offers no more: {', '.join(c.lost)}")
        if c.gained:
            print(f"    offers too: {', '.join(c.gained)}")
        for version, missing in c.unusable:
            print(f"    now unusable: {version} (needs {', '.join(missing)})")
        if c.usable:
            print(f"    now usable: {', '.join(c.usable)}")
        if c.new_usable:
            print(f"    new versions it runs: {', '.join(c.new_usable)}")
        undecided = [(v, m) for v, m in c.new_blocked if set(m) <= set(c.unknown)]
        blocked = [v for v, m in c.new_blocked if not set(m) <= set(c.unknown)]
        for version, missing in undecided:
            print(f"    new version it may run: {version} (unknown: {', '.join(missing)})")
        if blocked:
            print(f"    new versions it cannot run ({len(blocked)}): {', '.join(blocked)}")
        if c.gone:
            print(f"    versions QEMU {c.after} no longer has: {', '.join(c.gone)}")
        for why, names in fleet.by_reason(c.unknown):
            print(f"    unknown: {', '.join(names)} ({why})")
        if not (c.lost or c.gained or c.unusable or c.usable or c.new_usable or c.new_blocked):
            print("    no change")
    return 0


def _host_lines(host: HostCapabilities) -> list[str]:
    lines = [f"host {host.name}" + (f" (probed {host.probed})" if host.probed else "")]
    facts = host.facts
    if facts is not None:
        signature = ""
        if facts.family is not None:
            signature = f", family {facts.family} model {facts.model} stepping {facts.stepping}"
        lines.append(f"cpu:       {facts.vendor} {facts.brand}{signature}".rstrip())
        lines.append(f"microcode: {facts.microcode or '(unknown)'}")
        lines.append(f"kernel:    {facts.kernel or '(unknown)'}")
        vulns = facts.vulnerabilities
        affected = {k: v for k, v in vulns.items() if v != "Not affected"}
        lines.append(
            f"vulnerabilities: {len(vulns) - len(affected)} of {len(vulns)} not affected"
            + (":" if affected else "")
        )
        width = max((len(k) for k in affected), default=0)
        lines += [f"  {name:<{width}}  {text}" for name, text in sorted(affected.items())]
    elif host.vendor:
        lines.append(f"cpu:       {host.vendor}")
    if host.releases:
        for release in sorted(host.releases, key=lambda r: tuple(map(int, r.split(".")))):
            lines.append(f"QEMU {release}:")
            for accel, offer in sorted(host.releases[release].items()):
                how = offer.method + (f", {offer.qemu}" if offer.qemu else "")
                lines.append(f"  {accel}: {len(offer.features)} features ({how})")
                if offer.approximate:
                    lines.append(
                        "    APPROXIMATE: the CPU as /proc/cpuinfo shows it, not what KVM offers"
                    )
                elif offer.note:
                    lines.append(f"    {offer.note}")
                for why, names in fleet.by_reason(dict(offer.unknown)):
                    lines.append(f"    unknown: {', '.join(names)} ({why})")
    else:
        how = ", ".join(f"{k} {v}" for k, v in sorted(host.provenance.items()))
        for accel, features in sorted(host.offers.items()):
            lines.append(f"{accel}: {len(features)} features" + (f" ({how})" if how else ""))
    return lines


def _host_diff_lines(diff: HostDiff, usability: Sequence[api.UsabilityChange]) -> list[str]:
    lines = [f"host {diff.host_a}"]
    if diff.host_a != diff.host_b:
        lines = [f"hosts {diff.host_a} -> {diff.host_b} (note: two different hosts)"]
    lines += [f"  {change}" for change in diff.facts]
    if diff.vulnerabilities:
        lines.append("  vulnerabilities:")
        lines += [f"    {change}" for change in diff.vulnerabilities]
    by_accel = {(u.release, u.accel): u for u in usability}
    for accel_diff in diff.accels:
        release = f"QEMU {accel_diff.release}, " if accel_diff.release else ""
        lines.append(f"  {release}{accel_diff.accel}:")
        if not accel_diff.changes:
            lines.append("    no feature changed")
        lines += [f"    {change}" for change in accel_diff.changes]
        found = by_accel.get((accel_diff.release, accel_diff.accel))
        if found is None:
            continue
        for version, missing in found.unusable:
            lines.append(f"    now unusable: {version} (needs {', '.join(missing)})")
        if found.usable:
            lines.append(f"    now usable: {', '.join(found.usable)}")
        if not found.unusable and not found.usable:
            lines.append("    no model version became usable or unusable")
    if len(lines) == 1:
        lines.append("  nothing changed")
    return lines


def _host_diff_json(diff: HostDiff, usability: Sequence[api.UsabilityChange]) -> dict[str, Any]:
    by_accel = {(u.release, u.accel): u for u in usability}
    accels = []
    for d in diff.accels:
        found = by_accel.get((d.release, d.accel))
        accels.append(
            {
                "release": d.release,
                "accel": d.accel,
                "lost": sorted(d.lost),
                "gained": sorted(d.gained),
                "explained": [
                    {"direction": c.direction, "features": list(c.features), "reason": c.reason}
                    for c in d.changes
                ],
                "now-unusable": {n: list(m) for n, m in found.unusable} if found else {},
                "now-usable": list(found.usable) if found else [],
            }
        )
    return {
        "host": {"a": diff.host_a, "b": diff.host_b},
        "facts": {c.field: {"a": c.old, "b": c.new} for c in diff.facts},
        "vulnerabilities": {c.field: {"a": c.old, "b": c.new} for c in diff.vulnerabilities},
        "accelerators": accels,
    }


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _header(resolver: Resolver) -> str:
    catalog = resolver.catalog
    host = f", host {resolver.host.name}" if resolver.host else ""
    notes = "".join(f"\n# note: {note}" for note in resolver.notes)
    return (
        f"# catalog QEMU {catalog.release} ({catalog.build}); machine "
        f"{resolver.machine.name}; accel {resolver.accel}{host}{notes}"
    )


def _models(resolver: Resolver, as_json: bool) -> int:
    entries = api.definitions_json(resolver)
    if as_json:
        print_json(entries)
        return 0
    print(_header(resolver))
    width = max(len(e["name"]) for e in entries)
    for entry in entries:
        notes = []
        if "alias-of" in entry:
            notes.append(f"alias of {entry['alias-of']}")
        if entry["deprecated"]:
            notes.append("deprecated")
        if "unavailable-features" in entry:
            missing = entry["unavailable-features"]
            notes.append(f"missing: {' '.join(missing)}" if missing else "runnable")
            if entry.get("unknown"):
                notes.append(f"unknown: {', '.join(entry['unknown'])}, not in QEMU's expansion")
        print(f"{entry['name']:<{width}}  {'; '.join(notes)}")
    return 0


def _resolve(resolver: Resolver, specs: Sequence[str], as_json: bool) -> int:
    results = [
        api.resolution_json(resolver.resolve(spec), resolver.catalog, libvirt=as_json)
        for spec in specs
    ]
    if as_json:
        print_json(results)
        return 0
    for result in results:
        print(f"{result['spec']} -> {result['name']}  ({result['rule']}: {result['reason']})")
        print(f"  -cpu {result['qemu_cpu_arg']}")
        sig = result["signature"]
        print(
            f"  signature: {sig['vendor']} family {sig['family']} model {sig['model']} "
            f'stepping {sig["stepping"]} "{sig["model-id"]}"'
        )
        print(f"  features ({len(result['features'])}): {' '.join(result['features'])}")
        for name, missing in result["blockers"].items():
            print(f"  rejected {name}: missing {', '.join(missing)}")
        for note in result["notes"]:
            print(f"  note: {note}")
        if result["missing"]:
            print(
                f"  warning: this host lacks {', '.join(result['missing'])} (add enforce to refuse)"
            )
        for feature, why in result["unknown"].items():
            print(f"  unknown: {feature}, {why}")
    return 0


def _show(catalog: Any, model: str, as_json: bool) -> int:
    if as_json:
        print_json(
            {
                "model": catalog.model(model).name,
                "catalog": {"release": catalog.release, "build": catalog.build},
                "versions": api.history(catalog, model),
                "revisions": [{"until": m, "then": c} for m, c in api.revisions(catalog, model)],
            }
        )
        return 0
    print(f"# {catalog.model(model).name} in QEMU {catalog.release} ({catalog.build})")
    for row in api.history(catalog, model):
        aliases = f" (alias {', '.join(row['aliases'])})" if row["aliases"] else ""
        since = f" since {row['since']}" if row["since"] else ""
        note = f" [{row['note']}]" if row["note"] else ""
        print(f"{row['version']}{aliases}{since}{note}")
        if "features" in row:
            print(f"  features: {' '.join(row['features'])}")
        else:
            changes = [f"+{f}" for f in row["added"]] + [f"-{f}" for f in row["removed"]]
            changes += [f"{k}={api.signature_text(k, v)}" for k, v in row["signature"].items()]
            print(f"  {' '.join(changes) if changes else '(no guest-visible change)'}")
    revisions = api.revisions(catalog, model)
    if revisions:
        print("before versions (bare name under old machine types; changed after):")
        for machine, change in revisions:
            print(f"  up to {machine}: then {change}")
    return 0


def _diff(resolver: Resolver, spec_a: str, spec_b: str, as_json: bool) -> int:
    a, b = resolver.resolve(spec_a), resolver.resolve(spec_b)
    d = api.difference(a, b)
    if as_json:
        print_json(
            {
                "a": a.name,
                "b": b.name,
                "gained": list(d.gained),
                "lost": list(d.lost),
                "signature": {k: {"a": old, "b": new} for k, old, new in d.signature},
                "identity-changed": d.identity_changed,
            }
        )
        return 0
    print(f"{a.name} -> {b.name}")
    print(f"  gained: {' '.join(d.gained) or '-'}")
    print(f"  lost:   {' '.join(d.lost) or '-'}")
    for name, old, new in d.signature:
        print(f"  {name}: {old!r} -> {new!r}")
    if d.identity_changed:
        print("  note: the CPU signature changes; guests like Windows may re-activate")
    return 0


def _report(resolver: Resolver, as_json: bool) -> int:
    rows = api.report(resolver)
    if as_json:
        print_json(
            [
                {
                    "model": r.model,
                    "bare": r.bare,
                    "best": r.best,
                    "blockers": {n: list(m) for n, m in r.blockers},
                }
                for r in rows
            ]
        )
        return 0
    print(_header(resolver))
    width = max(len(r.model) for r in rows)
    print(
        f"{'model':<{width}}  {'bare name means':<22}  {'best here':<22}  next version blocked by"
    )
    for r in rows:
        blocked = "-"
        if r.blockers:
            name, missing = r.blockers[-1]
            shown = " ".join(missing[:REPORT_FEATURES])
            more = (
                f" (+{len(missing) - REPORT_FEATURES} more)"
                if len(missing) > REPORT_FEATURES
                else ""
            )
            blocked = f"{name}: {shown}{more}"
        print(f"{r.model:<{width}}  {r.bare:<22}  {r.best or '(none runs)':<22}  {blocked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
