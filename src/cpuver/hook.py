"""cpuver's libvirt ``qemu`` hook: refuse to start, restore or receive a pinned domain on a host
that cannot run its pin, or whose ``<cpu>`` no longer is its pin.

libvirt runs ``/etc/libvirt/hooks/qemu DOMAIN OPERATION SUBOP EXTRA`` with the domain XML on
standard input; a non-zero exit at ``prepare begin`` (start), ``restore begin`` or ``migrate
begin`` (on the destination) refuses the operation, and virsh shows the hook's standard error at
the end of its message. Every other call, and every domain without cpuver's metadata, passes
untouched: a failure while reading such a domain never blocks it.

The hook answers from a cached snapshot of this host (``cpuver-hook/1``: what it offers per
accelerator, its name, the libvirt spellings of feature names), re-probed only when what it was
taken from changes: the QEMU binary the domain names, the kernel, the CPU microcode or the KVM
modules. Or from a snapshot given once (``cpuver libvirt install-hook --host FILE``), never
re-probed. So this module imports only :mod:`cpuver.domain.pinmeta` and
:mod:`cpuver.host.hookcache`, which use only modules built into the interpreter: it runs on
every domain start and must not slow libvirt down; the probe (the whole of cpuver) is imported
only when the cache is stale.
"""

from __future__ import annotations

import sys
from xml.parsers.expat import ExpatError

from cpuver.domain import pinmeta
from cpuver.host.hookcache import DEFAULT_CACHE, cached

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook ~3 ms
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TextIO

__all__ = ["DEFAULT_CACHE", "GUARDED", "Refused", "check", "main"]

GUARDED = {
    ("prepare", "begin"): "start",
    ("restore", "begin"): "restore",
    ("migrate", "begin"): "receive the migration of",
}
_ACCELS = {"qemu": "tcg", "kvm": "kvm"}
_DEFAULT_EMULATOR = "/usr/bin/qemu-system-x86_64"


class Refused(Exception):
    """The operation is refused; the message is the line virsh shows."""


def main(
    argv: Sequence[str],
    cache: str = DEFAULT_CACHE,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The hook protocol: 0 lets libvirt go on, 1 refuses (with one line on ``stderr``)."""
    text = (stdin or sys.stdin).read()  # libvirt writes the domain XML: always take it
    action = GUARDED.get(tuple(argv[1:3]))  # type: ignore[arg-type]
    if action is None:
        return 0
    try:
        domain = pinmeta.parse(text)
    except ExpatError:
        return 0  # not ours to judge
    if pinmeta.find(domain) is None:
        return 0
    guest = argv[0]
    try:
        check(domain, guest, action, cache)
    except Refused as err:
        print(f"cpuver: {err}", file=stderr or sys.stderr)
        return 1
    return 0


def check(domain: pinmeta.Element, guest: str, action: str, cache: str) -> None:
    """Refuse (:class:`Refused`) when this host cannot run the domain's pin."""
    emulator = (domain.findtext("devices/emulator") or "").strip() or _DEFAULT_EMULATOR
    try:
        host = cached(cache, emulator, _probe)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Refused(
            f"cannot {action} guest {guest!r}: cannot tell what this host offers "
            f"({type(err).__name__}: {err})"
        ) from err
    try:
        meta, on = pinmeta.read_pin(domain, host["libvirt-names"])
    except pinmeta.MetadataError as err:
        raise Refused(f"cannot {action} guest {guest!r}: {err}") from err
    accel = _ACCELS.get(domain.get("type") or "", meta.accel or "")
    offered = host["offers"].get(accel)
    name = host["host"]
    pinned = meta.pinned or meta.base
    if offered is None:
        raise Refused(
            f"cannot {action} guest {guest!r} (pinned {pinned}) on host {name!r}: "
            f"the host has no {accel} (probed: {', '.join(sorted(host['offers']))})"
        )
    missing = sorted(on - set(offered))
    if missing:
        raise Refused(
            f"cannot {action} guest {guest!r} (pinned {pinned}) on host {name!r}: "
            f"it lacks pinned feature(s) {', '.join(missing)} under {accel}"
        )


def _probe(emulator: str, key: dict[str, Any]) -> dict[str, Any]:
    from cpuver.api.libvirt_domains import hook_snapshot  # the whole of cpuver: only now

    return hook_snapshot(emulator, key)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
