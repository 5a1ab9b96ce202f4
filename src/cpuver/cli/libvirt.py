"""``cpuver libvirt install-hook`` and ``cpuver libvirt-hook`` (libvirt's qemu hook protocol)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.cli.output import EXIT_OK, add_json, emit
from cpuver.host.hookcache import DEFAULT_CACHE

DEFAULT_HOOKS = Path("/etc/libvirt/hooks")


def add_parser(sub: Any) -> None:
    libvirt = sub.add_parser("libvirt", help="libvirt integration: the hook that guards pins")
    actions = libvirt.add_subparsers(dest="libvirt_command", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install-hook",
        help="install cpuver's qemu hook (refuses pinned domains a host cannot run)",
    )
    install.add_argument(
        "--hooks-dir", type=Path, default=DEFAULT_HOOKS, metavar="DIR",
        help=f"libvirt's hooks folder (default: {DEFAULT_HOOKS})",
    )  # fmt: skip
    install.add_argument(
        "--cache", type=Path, default=Path(DEFAULT_CACHE), metavar="FILE",
        help=f"where the hook keeps this host's snapshot (default: {DEFAULT_CACHE})",
    )  # fmt: skip
    install.add_argument(
        "--host", metavar="FILE",
        help="answer from this host snapshot (never probed again) instead of probing this host",
    )  # fmt: skip
    add_json(install)
    hook = sub.add_parser(
        "libvirt-hook",
        help="libvirt's qemu hook protocol: DOMAIN OPERATION SUBOP EXTRA, XML on stdin",
    )
    hook.add_argument("hook_args", nargs="*", metavar="ARG")
    hook.add_argument("--cache", default=DEFAULT_CACHE, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    if args.command == "libvirt-hook":
        from cpuver.hook import main

        return main(args.hook_args, args.cache)
    host = api.read_host(args.host) if args.host else None
    path, how = api.install_hook(args.hooks_dir, args.cache, host)
    source = f"snapshot of {host.name}" if host else "this host, probed again when it changes"
    data = {
        "hook": str(path),
        "done": how,
        "cache": str(args.cache),
        "host": host.name if host else None,
    }
    emit(args.json, data, lambda: [
        f"{how} {path} (answers from {source}; cache {args.cache})",
        "libvirt reads its hooks when the daemon starts: restart it if it runs",
    ])  # fmt: skip
    return EXIT_OK
