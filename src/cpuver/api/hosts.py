"""Host use cases: probing this host (KVM ioctls, QEMU, /proc/cpuinfo), reading host files,
writing snapshots, comparing two snapshots, and which accelerator a command means.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpuver.api.catalogs import open_catalog
from cpuver.catalog import Catalog, NameKind
from cpuver.catalog.files import BUNDLED
from cpuver.documents import load_json, text_of
from cpuver.errors import CpuverError, HostError, QemuError
from cpuver.host.capabilities import AccelOffer, HostCapabilities, from_json
from cpuver.host.capabilities import build as build_host
from cpuver.resolve import Resolver

if TYPE_CHECKING:
    from cpuver.host.cpuinfo import CpuInfo
    from cpuver.host.explain import HostDiff
    from cpuver.store import HostRecord


def default_qemu_binary() -> Path | None:
    found = shutil.which("qemu-system-x86_64")
    return Path(found) if found else None


def kvm_usable(path: str = "/dev/kvm") -> bool:
    from cpuver.host.kvm import kvm_usable as answers

    return answers(path)


def probe_with_qemu(binary: Path, accels: Iterable[str] | None = None) -> HostCapabilities:
    """What this host offers, as QEMU itself reports it (``host`` under KVM, ``max`` under TCG).

    A single-release host (the v1 form); :func:`probe_host` gives the full snapshot.
    """
    from cpuver.host.qemu import QemuInstall, offered_features  # QMP stack: only when probing

    install = QemuInstall(binary)
    wanted = list(accels) if accels is not None else (["kvm", "tcg"] if kvm_usable() else ["tcg"])
    offers: dict[str, frozenset[str]] = {}
    vendor = None
    provenance = {"method": "qemu", "qemu": install.version()}
    for accel in wanted:
        offers[accel], accel_vendor = offered_features(install, accel)
        vendor = vendor or (accel_vendor if accel == "kvm" else None)
    return HostCapabilities(os.uname().nodename, offers, vendor, "local", provenance)


def read_host(
    argument: str, qemu_binary: Path | None = None, db: str | None = None
) -> HostCapabilities:
    """A host from a file (snapshot v1/v2, QEMU's QMP replies, libvirt's QEMU capabilities
    cache or its domcapabilities XML), ``-`` (standard input), ``local`` (a live probe of this
    host, method chosen as by ``cpuver host probe``) or the name of a host stored in the fleet
    (of the store ``db``) when no file has that name (an argument with a ``/`` is always a
    path)."""
    if argument == "local":
        return probe_host("auto", [qemu_binary] if qemu_binary else ())
    if argument != "-" and "/" not in argument and not Path(argument).exists():
        stored = _stored_host_named(argument, db)
        if stored is not None:
            return stored
        raise HostError(
            f"no host file {argument} and no stored host named {argument!r} "
            "(cpuver fleet ls lists the stored hosts)"
        )
    try:
        raw = sys.stdin.buffer.read() if argument == "-" else Path(argument).read_bytes()
    except OSError as err:
        raise HostError(f"cannot read host file {argument}: {err.strerror}") from err
    text = text_of(raw, argument)
    # QMP replies and libvirt's capabilities cache, read with QEMU's rules (api.evidence).
    from cpuver.api.evidence import host_from_evidence, read_evidence

    evidence = read_evidence(text, argument)
    if evidence is not None:
        return host_from_evidence(evidence)
    if text.lstrip("\ufeff \t\r\n").startswith("<"):
        root = _xml_root(text)
        if root == "domainCapabilities":  # libvirt's `virsh domcapabilities`
            from cpuver.api.libvirt_domains import read_domain_capabilities

            return read_domain_capabilities(text, argument)
        kind = f"an XML document (<{root}>)" if root else "an XML document"
        raise HostError(f"{argument}: {kind}, not a host snapshot ({HOST_FORMS})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HostError(
            f"{argument}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            + (" (truncated?)" if _truncated(err, text) else "")
        ) from err
    except (RecursionError, ValueError):
        data = load_json(text, argument)  # raises the error that names what is wrong
    return from_json(data, argument)


HOST_FORMS = (
    "expected a cpuver host snapshot (cpuver host probe), QMP replies (query-cpu-model-expansion "
    "of host or max, query-cpu-definitions), a libvirt QEMU capabilities cache file or virsh "
    "domcapabilities XML"
)

_XML_ROOT = re.compile(r"<(?![?!])\s*([A-Za-z_][\w.:-]*)")


def _xml_root(text: str) -> str | None:
    """The name of an XML document's root element (after its declaration and comments)."""
    root = _XML_ROOT.search(text)
    return root[1] if root else None


def _stored_host_named(name: str, db: str | None) -> HostCapabilities | None:
    """The current snapshot of fleet host ``name``, if the store holds one."""
    from cpuver.store import HostNotFound, HostStore, store_exists

    if not store_exists(db):
        return None
    with HostStore(db) as store:
        try:
            return stored_host(store.get(name))
        except HostNotFound:
            return None


def stored_host(record: HostRecord) -> HostCapabilities:
    """A stored host's current snapshot, read back."""
    return from_json(json.loads(record.snapshot_json), f"host {record.name}")


def _truncated(err: json.JSONDecodeError, text: str) -> bool:
    """The text ends inside a value (cut off while copying or writing)."""
    return err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")


PROBE_METHODS = ("auto", "kvm", "qemu", "cpuinfo")


KVM_DEVICE = "/dev/kvm"


TCG_FROM_CATALOG = (
    "TCG offers the same on every host: taken from the catalog, recorded from QEMU's own filter"
)


KVM_NOTE = "KVM's supported CPUID and MSRs (ioctls on /dev/kvm), filtered as QEMU {release} does"


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _release_of(build: str) -> str:
    """``X.Y`` of a ``-version`` line (``QEMU emulator version 10.0.2 (Debian ...)``)."""
    for word in build.split():
        parts = word.split(".")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return f"{parts[0]}.{parts[1]}"
    raise QemuError(f"cannot tell the QEMU release from {build!r}")


def _tcg_offer(catalog: Catalog, time: str) -> AccelOffer:
    return AccelOffer(catalog.tcg_offers, "catalog", catalog.build, time, TCG_FROM_CATALOG)


def _auto_method(binaries: Sequence[Path], kvm_path: str) -> tuple[str, str]:
    if kvm_usable(kvm_path):
        return "kvm", f"{kvm_path} is usable"
    if binaries or default_qemu_binary() is not None:
        return "qemu", f"{kvm_path} is not usable; asking QEMU"
    return "cpuinfo", f"{kvm_path} not usable and no qemu-system-x86_64 on PATH"


def probe_host(
    via: str = "auto",
    qemu_binaries: Sequence[Path] = (),
    progress: Callable[[str], None] | None = None,
    root: Path = Path("/"),
    kvm_path: str = KVM_DEVICE,
) -> HostCapabilities:
    """A full snapshot of this host (schema ``cpuver-host/2``).

    ``via``: ``kvm`` (KVM ioctls, per bundled release; TCG from the catalog), ``qemu`` (each
    binary's own filter; default binary: ``qemu-system-x86_64`` on PATH), ``cpuinfo``
    (``/proc/cpuinfo`` flags, approximate) or ``auto`` (the first of those that can work here).
    """
    from cpuver.host import system
    from cpuver.host.cpuinfo import read_cpuinfo

    say = progress or (lambda _message: None)
    if via not in PROBE_METHODS:
        raise HostError(f"--via: expected one of {', '.join(PROBE_METHODS)}, got {via!r}")
    if via == "auto":
        via, why = _auto_method(qemu_binaries, kvm_path)
        say(f"probing with {via} ({why})")
    cpu = read_cpuinfo(root)
    facts = system.read_facts(root, cpu)
    started = _now()
    if via == "kvm":
        releases = _probe_kvm(kvm_path, say)
    elif via == "qemu":
        releases = _probe_qemu(qemu_binaries, kvm_path, say)
    else:
        releases = _probe_cpuinfo(cpu, say)
    return build_host(system.host_name(root), releases, facts, "local", started, via)


def _probe_kvm(kvm_path: str, say: Callable[[str], None]) -> dict[str, dict[str, AccelOffer]]:
    from cpuver.host.kvm import kvm_offers, read_kvm

    say(f"reading KVM's supported CPUID and MSRs from {kvm_path}")
    dump = read_kvm(kvm_path)
    time = _now()
    releases: dict[str, dict[str, AccelOffer]] = {}
    for release in BUNDLED:
        catalog = open_catalog(release)
        major, minor = (int(p) for p in release.split("."))
        offers = kvm_offers(dump, catalog.known_features, (major, minor))
        releases[release] = {
            "kvm": AccelOffer(offers, "kvm", None, time, KVM_NOTE.format(release=release)),
            "tcg": _tcg_offer(catalog, time),
        }
    return releases


def _probe_qemu(
    binaries: Sequence[Path], kvm_path: str, say: Callable[[str], None]
) -> dict[str, dict[str, AccelOffer]]:
    from cpuver.host.qemu import QemuInstall, offered_features  # QMP stack: only when probing

    if not binaries:
        found = default_qemu_binary()
        if found is None:
            raise QemuError("--via qemu: no qemu-system-x86_64 on PATH (give --qemu PATH)")
        binaries = [found]
    accels = ["kvm", "tcg"] if kvm_usable(kvm_path) else ["tcg"]
    releases: dict[str, dict[str, AccelOffer]] = {}
    for binary in binaries:
        if not binary.is_file():
            raise QemuError(f"no QEMU binary at {binary}")
        install = QemuInstall(binary)
        build = install.version()
        release = _release_of(build)
        releases[release] = {}
        for accel in accels:
            say(f"asking {build} ({binary}) what {accel} offers")
            features, _vendor = offered_features(install, accel)
            note = "QEMU's own filter: a vCPU requesting every feature, minus unavailable-features"
            releases[release][accel] = AccelOffer(features, "qemu", build, _now(), note)
    return releases


def _probe_cpuinfo(cpu: CpuInfo, say: Callable[[str], None]) -> dict[str, dict[str, AccelOffer]]:
    from cpuver.host.cpuinfo import APPROXIMATE_NOTE, cpuinfo_features

    say("reading /proc/cpuinfo flags (approximate: the CPU, not what KVM offers)")
    time = _now()
    releases: dict[str, dict[str, AccelOffer]] = {}
    for release in BUNDLED:
        catalog = open_catalog(release)
        # KVM itself supplies the paravirtual features it switches on for every model
        # (kvmclock, kvm-pv-eoi, x2apic ...): no CPU flag shows them.
        kvm_defaults = catalog.accelerator("kvm").defaults.on
        features = cpuinfo_features(cpu, catalog.known_features) | kvm_defaults
        releases[release] = {
            "kvm": AccelOffer(features, "cpuinfo", None, time, APPROXIMATE_NOTE),
            "tcg": _tcg_offer(catalog, time),
        }
    return releases


def write_host(host: HostCapabilities, output: Path | None) -> str:
    """The snapshot as JSON text; written to ``output`` when given."""
    text = json.dumps(host.to_json(), indent=2) + "\n"
    if output is not None:
        try:
            output.write_text(text)
        except OSError as err:
            raise HostError(f"cannot write {output}: {err.strerror}") from err
    return text


@dataclass(frozen=True, slots=True)
class UsabilityChange:
    release: str | None
    accel: str
    unusable: tuple[tuple[str, tuple[str, ...]], ...]
    """Versions that ran on A and not on B, with what B lacks."""
    usable: tuple[str, ...]
    """Versions that did not run on A and run on B."""


def host_diff(
    a: HostCapabilities,
    b: HostCapabilities,
    release: str | None = None,
    accels: Sequence[str] | None = None,
    catalog_dir: Path | None = None,
    overlays: Sequence[Path] = (),
) -> tuple[HostDiff, list[UsabilityChange]]:
    """What changed between two snapshots of one host, and which model versions of the catalog
    (of ``release``, default: the newest both were probed for) became (un)usable because of it."""
    from cpuver.host.explain import diff_hosts

    diff = diff_hosts(a, b, release, accels)
    changes = []
    for accel_diff in diff.accels:
        if not accel_diff.lost and not accel_diff.gained:
            continue
        catalog = open_catalog(release or accel_diff.release, catalog_dir, overlays)
        old = Resolver(catalog, None, accel_diff.accel, a)
        new = Resolver(catalog, None, accel_diff.accel, b)
        unusable: list[tuple[str, tuple[str, ...]]] = []
        usable: list[str] = []
        for ref in catalog.names():
            if ref.kind is not NameKind.VERSIONED:
                continue
            before, after = old.unavailable(ref), new.unavailable(ref)
            if not before and after:
                unusable.append((ref.name, after))
            elif before and not after:
                usable.append(ref.name)
        changes.append(
            UsabilityChange(accel_diff.release, accel_diff.accel, tuple(unusable), tuple(usable))
        )
    return diff, changes


def pick_accel(requested: str | None, host: HostCapabilities | None) -> str:
    """The accelerator asked for; else the host file's only one; else KVM when usable."""
    if requested:
        return requested
    if host is not None and len(host.offers) == 1:
        return next(iter(host.offers))
    return "kvm" if kvm_usable() else "tcg"


# ---------------------------------------------------------------------------------- releases


@dataclass(frozen=True, slots=True)
class ReleaseOffer:
    """What a host offers under one accelerator for one catalog's QEMU release, as recorded."""

    features: frozenset[str]
    unknown: dict[str, str]
    """Features that QEMU release has and the host's record cannot tell, with why."""
    probed: str | None
    """The release the record is of (None: TCG's offers from the catalog)."""


def offers_under(host: HostCapabilities, accel: str, catalog: Catalog) -> ReleaseOffer | None:
    """What ``host`` offers under ``accel`` to a QEMU of ``catalog``'s release, the host as it is.

    A host probed for that release gives exactly its record. Otherwise, under KVM, the nearest
    older probe (the nearest newer when there is none) stands in, and every feature the catalog's
    QEMU knows and that probe's QEMU did not is *unknown*: that QEMU could not show it. Under TCG
    without a probe of that release, the catalog's own record of what TCG offers (the same on
    every host). None: no record for ``accel``.
    """
    release = ".".join(catalog.release.split(".")[:2])
    chosen = host.release_for(release)
    found = host.offered(accel, release)
    if accel == "tcg" and (found is None or (chosen is not None and chosen != release)):
        # TCG offers the same on every host: the catalog's own record of that release.
        return ReleaseOffer(catalog.tcg_offers, {}, None)
    if found is None:
        return None
    unknown = dict(host.unknown_for(accel, release))
    if chosen is not None and chosen != release and catalog.known_features:
        try:
            then = open_catalog(chosen).known_features
        except CpuverError:
            then = frozenset()
        if then:
            why = (
                f"QEMU {chosen}, which {host.name} was probed with, does not know it: "
                f"probe it with QEMU {release}"
            )
            for feature in sorted(catalog.known_features - then - found):
                unknown.setdefault(feature, why)
    known = catalog.known_features or found
    return ReleaseOffer(found & known, unknown, chosen)


@dataclass(frozen=True, slots=True)
class ReleaseChange:
    """One host, one accelerator: what changes when its QEMU goes from one release to another."""

    accel: str
    before: str
    after: str
    lost: tuple[str, ...]
    gained: tuple[str, ...]
    unusable: tuple[tuple[str, tuple[str, ...]], ...]
    """Versions both releases have that ran before and do not after, with what is missing."""
    usable: tuple[str, ...]
    """Versions both releases have that did not run before and do after."""
    new_usable: tuple[str, ...]
    """Versions only the newer catalog has that the host runs."""
    new_blocked: tuple[tuple[str, tuple[str, ...]], ...]
    """Versions only the newer catalog has that the host cannot run, with what is missing."""
    gone: tuple[str, ...]
    """Versions the first catalog has and the second does not."""
    unknown: dict[str, str]
    """Features blocking something after the change that the record cannot tell."""


def release_change(
    host: HostCapabilities,
    before: Catalog,
    after: Catalog,
    accel: str,
    machine: str | None = None,
) -> ReleaseChange:
    """The host as it is, under ``before``'s QEMU and under ``after``'s."""
    old, new = offers_under(host, accel, before), offers_under(host, accel, after)
    if old is None or new is None:
        where = host.source or host.name
        raise HostError(f"{where}: has no {accel} offers (probe it under {accel})")

    def blockers(catalog: Catalog, offered: frozenset[str]) -> dict[str, tuple[str, ...]]:
        resolver = Resolver(
            catalog,
            machine if machine in catalog.machines else None,
            accel,
            HostCapabilities(host.name, {accel: offered}, host.vendor),
        )
        return {
            ref.name: resolver.unavailable(ref)
            for ref in catalog.names()
            if ref.kind is NameKind.VERSIONED
        }

    was, now = blockers(before, old.features), blockers(after, new.features)
    both = [name for name in now if name in was]
    only_new = [name for name in now if name not in was]
    blocking = {f for name in now for f in now[name]}
    return ReleaseChange(
        accel=accel,
        before=before.release,
        after=after.release,
        lost=tuple(sorted(old.features - new.features)),
        gained=tuple(sorted(new.features - old.features)),
        unusable=tuple((n, now[n]) for n in both if not was[n] and now[n]),
        usable=tuple(n for n in both if was[n] and not now[n]),
        new_usable=tuple(n for n in only_new if not now[n]),
        new_blocked=tuple((n, now[n]) for n in only_new if now[n]),
        gone=tuple(n for n in was if n not in now),
        unknown={f: why for f, why in sorted(new.unknown.items()) if f in blocking},
    )
