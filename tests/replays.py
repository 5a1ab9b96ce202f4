"""Replays of real hosts: what QEMU answered on real Intel and AMD machines, as libvirt recorded it.

``tests/data/libvirt/`` keeps, from libvirt's source packages (7.0.0, 9.0.0 and 11.3.0, see
``replays.json`` and ``tools/extract_libvirt_replays.py``), the CPU part of libvirt's QMP
recordings (``*.replies.gz``: QEMU's ``host``/``max`` expansions and ``query-cpu-definitions``,
KVM and TCG), the capabilities cache libvirt wrote from them (``*.xml.gz``), and a few hosts of
libvirt's CPU test data (``*.json.gz``, KVM only). :func:`replay` reads one of them as cpuver
reads any host file's evidence, *without* its ``query-cpu-definitions``, and compares what cpuver
then says of every name QEMU listed (``alias-of``, blockers) with what QEMU said.
Used by tests/oracle/test_replays.py and bench/bench_replay.py.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuver.api.catalogs import open_catalog
from cpuver.api.evidence import offers_of
from cpuver.catalog import NameKind
from cpuver.features import FeatureTable
from cpuver.host import libvirt_caps, qmp_replies
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.evidence import QemuEvidence
from cpuver.resolve import Resolver

DATA = Path(__file__).parent / "data" / "libvirt"
FORMS = ("replies", "caps")
NOT_CPU_MODELS = frozenset({"base", "host", "max"})

KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {
    ("10.0", "YongFeng-v2"): "cpuver's 10.0 is Debian's 10.0.13, which backports YongFeng-v2 "
    "from upstream 10.1; libvirt recorded upstream 10.0.0, which has no such name",
}
"""(release, name) cpuver and the recorded QEMU build rightly disagree on, and why."""


def manifest() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((DATA / "replays.json").read_text())
    return data


def cases() -> Iterator[tuple[dict[str, Any], str]]:
    """Every (recording, form) pair: the QMP replies, and libvirt's cache where it wrote one."""
    for entry in manifest():
        yield entry, "replies"
        if "caps" in entry:
            yield entry, "caps"


def case_id(entry: dict[str, Any], form: str) -> str:
    return f"{entry[form if form == 'caps' else 'replies'].split('.gz')[0]}"


def text_of(entry: dict[str, Any], form: str) -> str:
    return gzip.decompress((DATA / entry[form]).read_bytes()).decode()


def evidence_of(entry: dict[str, Any], form: str) -> QemuEvidence:
    name = entry[form]
    text = text_of(entry, form)
    return libvirt_caps.read(text, name) if form == "caps" else qmp_replies.read(text, name)


def short(release: str) -> str:
    return ".".join(release.split(".")[:2])


@dataclass
class Replay:
    """What one recording gave: names compared, names equal, every difference in words."""

    compared: int = 0
    equal: int = 0
    problems: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    unknown: dict[str, dict[str, str]] = field(default_factory=dict)


def replay(entry: dict[str, Any], form: str, table: FeatureTable | None = None) -> Replay:
    """Compare cpuver with QEMU on one recording, every accelerator, every name QEMU listed.

    Under the machine type QEMU was asked with (``none`` for libvirt's probe); where the
    recording does not say (``machine`` null), only ``-vN`` names, which no machine type
    changes, and no ``alias-of``.
    """
    table = table or FeatureTable.bundled()
    evidence = evidence_of(entry, form)
    release = short(entry["release"])
    catalog = open_catalog(release)
    machine = catalog.machine(entry["machine"] or "none")
    names = {ref.name: ref for ref in catalog.names()}
    result = Replay()
    for accel, found in sorted(evidence.accels.items()):
        offer = offers_of(found, release, catalog, use_definitions=False)
        result.unknown[accel] = dict(offer.unknown)
        host = HostCapabilities(entry["host"], {accel: offer.features}, found.vendor)
        resolver = Resolver(catalog, machine.name, accel, host)
        theirs = {n: u for n, u in (found.definitions or {}).items() if n not in NOT_CPU_MODELS}
        listed = set(theirs)
        for name in sorted(listed | set(names)):
            ref = names.get(name)
            if entry["machine"] is None and (ref is None or ref.kind is not NameKind.VERSIONED):
                continue
            where = f"{entry['release']} {accel} {name}"
            result.compared += 1
            aliases = found.aliases if entry["machine"] is not None and form == "replies" else None
            why = _difference(name, ref, theirs, listed, resolver, machine, aliases, table)
            if why is None:
                result.equal += 1
            elif (release, name) in KNOWN_DIFFERENCES:
                result.known.append(f"{where}: {why}")
            else:
                result.problems.append(f"{where}: {why}")
    return result


def _difference(
    name: str,
    ref: Any,
    theirs: dict[str, tuple[str, ...]],
    listed: set[str],
    resolver: Resolver,
    machine: Any,
    aliases: Mapping[str, str] | None,
    table: FeatureTable,
) -> str | None:
    """How cpuver and QEMU differ on ``name``, or None; ``aliases``: QEMU's ``alias-of`` of
    every name, when the recording has them and says under which machine type."""
    if ref is None:
        return "QEMU lists it, cpuver does not know it"
    if name not in listed:
        return "cpuver knows it, QEMU does not list it"
    ours = set(resolver.unavailable(ref))
    qemu = {table.canonical(f) if f in table else f for f in theirs[name]}
    parts = []
    if ours != qemu:
        parts.append(
            f"blockers: only cpuver {sorted(ours - qemu)}, only QEMU {sorted(qemu - ours)}"
        )
    if aliases is not None:
        want, got = resolver.catalog.alias_of(ref, machine), aliases.get(name)
        if want != got:
            parts.append(f"alias-of: cpuver {want!r}, QEMU {got!r}")
    return "; ".join(parts) or None
