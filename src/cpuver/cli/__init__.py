"""The ``cpuver`` command: argument parsing, rendering and exit codes; the work is in api.

Exit codes: 0 success, 1 a cpuver error (one line on stderr, never a traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.errors import CpuverError, InvalidSpec
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

REPORT_FEATURES = 6
"""Blocking features shown per line of ``cpuver report`` (``--json`` has them all)."""


def _catalog_options(parser: argparse.ArgumentParser, *, machine: bool = True) -> None:
    group = parser.add_argument_group("catalog")
    group.add_argument(
        "--qemu",
        metavar="X.Y",
        help="QEMU release whose catalog to use (default: the newest bundled one)",
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
            help="host capabilities: snapshot, QMP expansion reply, - or local",
        )
        group.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpuver", description="Versioned CPU models for virtual machines, exact to QEMU."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="every CPU model name (like query-cpu-definitions)")
    _catalog_options(models)

    resolve = sub.add_parser("resolve", help="resolve specs to exact definitions")
    resolve.add_argument("specs", nargs="+", metavar="SPEC")
    _catalog_options(resolve)

    show = sub.add_parser("show", help="a model's version history")
    show.add_argument("model", metavar="MODEL")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    _catalog_options(show, machine=False)

    diff = sub.add_parser("diff", help="features and signature fields that differ")
    diff.add_argument("spec_a", metavar="SPEC_A")
    diff.add_argument("spec_b", metavar="SPEC_B")
    _catalog_options(diff)

    report = sub.add_parser("report", help="every model family on this host: bare, best, blockers")
    _catalog_options(report)

    catalog = sub.add_parser("catalog", help="catalog maintenance")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    importer = catalog_sub.add_parser("import", help="import a catalog from a QEMU binary")
    importer.add_argument(
        "--qemu", metavar="PATH", type=Path, required=True, help="qemu-system-x86_64 binary"
    )
    importer.add_argument("-o", "--output", metavar="DIR", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except InvalidSpec as err:
        print(f"cpuver: error: {err}", file=sys.stderr)
        return 1
    except CpuverError as err:
        print(f"cpuver: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cpuver: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "catalog":
        catalog = api.import_catalog(args.qemu, args.output, progress=_progress)
        print(
            f"imported {len(catalog.models)} models, "
            f"{sum(len(m.versions) for m in catalog.models.values())} versions, "
            f"{len(catalog.machines)} machine types from {catalog.build} into {args.output}"
        )
        return 0
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
    return api.read_host(args.host) if args.host else None


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _header(resolver: Resolver) -> str:
    catalog = resolver.catalog
    host = f", host {resolver.host.name}" if resolver.host else ""
    return (
        f"# catalog QEMU {catalog.release} ({catalog.build}); machine "
        f"{resolver.machine.name}; accel {resolver.accel}{host}"
    )


def _models(resolver: Resolver, as_json: bool) -> int:
    entries = api.definitions_json(resolver)
    if as_json:
        _print_json(entries)
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
        print(f"{entry['name']:<{width}}  {'; '.join(notes)}")
    return 0


def _resolve(resolver: Resolver, specs: Sequence[str], as_json: bool) -> int:
    results = [api.resolution_json(resolver.resolve(spec)) for spec in specs]
    if as_json:
        _print_json(results if len(results) > 1 else results[0])
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
        if result["missing"]:
            print(
                f"  warning: this host lacks {', '.join(result['missing'])} (add enforce to refuse)"
            )
    return 0


def _show(catalog: Any, model: str, as_json: bool) -> int:
    if as_json:
        _print_json(
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
        _print_json(
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
        _print_json(
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
