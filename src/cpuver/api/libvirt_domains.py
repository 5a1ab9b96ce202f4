"""libvirt domain use cases: pin a domain's CPU in place, verify the running vCPU against its pin,
move the pin explicitly (update-cpu), hosts from libvirt, and the libvirt hook's snapshot.

A pinned domain keeps its pin in its own XML (``<cpu>`` plus cpuver's metadata element), so a
host needs no shared database to check it: the hook (:mod:`cpuver.hook`) does that at start,
restore and incoming migration. The catalog is the one of the QEMU release the daemon runs.
libvirt-python is imported (through :mod:`cpuver.libvirt`) only by the functions that connect.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuver.api.catalogs import open_catalog
from cpuver.catalog import Catalog
from cpuver.catalog.files import BUNDLED
from cpuver.domain import DomainError
from cpuver.errors import CpuverError, HostError
from cpuver.features import FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

if TYPE_CHECKING:
    from cpuver.domain.lifecycle import CpuDiff
    from cpuver.domain.pinning import Pin
    from cpuver.domain.xml import GuestDefinition, PinnedCpu
    from cpuver.emit.libvirt import LibvirtTarget
    from cpuver.libvirt import Connection

QEMU_DEFAULT_MODEL = "qemu64"
"""The CPU QEMU gives an x86 guest without ``-cpu`` (TARGET_DEFAULT_CPU_TYPE; checked against
the vCPU a real libvirt starts by tests/libvirt/test_libvirt_domains.py)."""

HOOK_MARKER = "cpuver's libvirt qemu hook"


@dataclass(frozen=True, slots=True)
class PinnedDomain:
    """A domain XML with its CPU pinned (or found pinned already)."""

    name: str
    pin: Pin
    xml: str
    model: str
    """The name written in ``<model>``."""
    changed: bool
    notes: tuple[str, ...] = ()


def connect(uri: str | None = None) -> Connection:
    from cpuver.libvirt import Connection

    return Connection(uri)


def release_of(version: tuple[int, int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def daemon_catalog(
    conn: Connection, directory: Path | None = None, overlays: Sequence[Path] = ()
) -> Catalog:
    """The catalog of the QEMU release the daemon runs (``--catalog`` instead, when given)."""
    return open_catalog(release_of(conn.qemu_version()), directory, overlays)


def daemon_target(conn: Connection) -> LibvirtTarget:
    """What the daemon's libvirt can say: its version and the CPU model names it knows."""
    from cpuver.emit.libvirt import LibvirtTarget

    return LibvirtTarget(conn.libvirt_version(), conn.cpu_model_names())


# ------------------------------------------------------------------------------ pinning


HostArgument = HostCapabilities | Callable[[Catalog, str], HostCapabilities | None] | None
"""What ``best``, optional features and host-model are decided against: a host, or
``host(catalog, accel)`` asked for the domain's accelerator (a pool's hosts under it)."""


def pin_definition(
    text: str,
    source: str,
    catalog: Catalog,
    host: HostArgument = None,
    spec: str | None = None,
    target: LibvirtTarget | None = None,
    force: bool = False,
) -> PinnedDomain:
    """Resolve a domain XML's CPU (or ``spec``) once and write it back pinned.

    A domain already pinned (its ``<cpu>`` matching its fingerprint) is returned unchanged; one
    whose ``<cpu>`` was edited since it was pinned is refused unless ``force`` (then it is
    pinned again from what its XML says now, or from ``spec``).
    """
    from cpuver.domain.xml import parse_xml, pin_mismatch, pinned_document, read_domain_xml
    from cpuver.emit.libvirt import DEFAULT_TARGET, pinned_cpu

    wanted = read_domain_xml(text, source, catalog=catalog)
    if callable(host):
        host = host(catalog, wanted.accel or "kvm")
    if wanted.metadata is not None and wanted.metadata.complete and spec is None:
        problem = pin_mismatch(parse_xml(text, source))
        if problem is None:
            current = domain_pin(text, source)
            return PinnedDomain(wanted.name, current, text, wanted.metadata.model or "", False)
        if not force:
            raise DomainError(
                f"{source}: domain {wanted.name!r} is pinned but {problem}: "
                "pin it again with --force, or move the pin with update-cpu"
            )
    pinned, notes = resolve_definition(wanted, catalog, host, spec, source)
    cpu = pinned_cpu(pinned, catalog, target or DEFAULT_TARGET, policy=wanted.policy)
    _expressible(cpu, wanted.name, source)
    xml = pinned_document(text, cpu, source, machine=pinned.machine)
    return PinnedDomain(wanted.name, pinned, xml, cpu.model, True, tuple(notes))


def resolve_definition(
    wanted: GuestDefinition,
    catalog: Catalog,
    host: HostCapabilities | None = None,
    spec: str | None = None,
    source: str = "domain.xml",
    accel: str | None = None,
) -> tuple[Pin, list[str]]:
    """Resolve what a domain XML asks for, in libvirt's meaning, into a pin (with QEMU's
    topology bits for its ``<topology>``): ``<domain type>`` decides the accelerator (else
    ``accel``, else the host's only one, else KVM)."""
    chosen = wanted.accel or accel or ("kvm" if host is None else _only_accel(host))
    machine = catalog.machine(wanted.machine).name
    resolver = Resolver(catalog, machine, chosen, host)
    asked, notes = _spec_of(wanted, resolver, spec, source)
    resolution = resolver.resolve(asked)
    if wanted.vendor is not None and spec is None:
        have = resolution.definition.signature.vendor
        if have != wanted.vendor:
            raise DomainError(
                f"{source}: cpu/vendor: {wanted.vendor} is not the vendor of {resolution.name} "
                f"({have})"
            )
    return _pin(resolution, catalog, wanted.threads_per_package), notes


def _only_accel(host: HostCapabilities) -> str:
    return next(iter(host.offers)) if len(host.offers) == 1 else "kvm"


def _pin(resolution: Any, catalog: Catalog, threads: int) -> Pin:
    from cpuver.domain.pinning import pin
    from cpuver.domain.topology import with_topology

    return with_topology(pin(resolution, catalog), threads)


def _expressible(cpu: PinnedCpu, name: str, source: str) -> None:
    if cpu.inexpressible:
        raise DomainError(
            f"{source}: libvirt cannot express the pinned CPU of {name!r} ({cpu.model}) "
            f"exactly: {', '.join(cpu.inexpressible)}"
        )


def _spec_of(
    wanted: GuestDefinition, resolver: Resolver, spec: str | None, source: str
) -> tuple[str, list[str]]:
    """The spec to resolve: ``spec``, or what the domain's ``<cpu>`` asks for in libvirt's
    meaning (optional features decided against the host, host-model expanded)."""
    if spec is not None:
        return spec, []
    if wanted.cpu == "default":
        return QEMU_DEFAULT_MODEL, [f"no <cpu>: pinned QEMU's default CPU {QEMU_DEFAULT_MODEL}"]
    if wanted.cpu == "host-model":
        return host_model_spec(resolver, source), ["host-model expanded for the host"]
    if wanted.spec is None:
        raise DomainError(f"{source}: {'; '.join(wanted.notes) or 'no CPU model to pin'}")
    if not wanted.optional:
        return wanted.spec, list(wanted.notes)
    if resolver.offers is None:
        raise HostError(
            f"{source}: optional features ({', '.join(wanted.optional)}) are on when the host "
            f"has them: give the host (--host FILE, --host local or --pool P)"
        )
    decided = [f"{'+' if f in resolver.offers else '-'}{f}" for f in wanted.optional]
    note = f"optional features decided for {resolver.host.name if resolver.host else 'TCG'}"
    return ",".join([wanted.spec, *decided]), [*wanted.notes, f"{note}: {' '.join(decided)}"]


def host_model_spec(resolver: Resolver, source: str = "host-model") -> str:
    """libvirt's host-model, pinned: the versioned model the host runs that has most of what it
    offers (its vendor's, when known), plus every other feature it offers that libvirt can name
    (as libvirt's own host-model, which lists CPU map features only)."""
    from cpuver.catalog import NameKind, NameRef

    offers = resolver.offers
    if offers is None:
        raise HostError(f"{source}: host-model needs the host (--host FILE, local or --pool P)")
    catalog = resolver.catalog
    host = resolver.host
    vendor = (host.facts.vendor if host.facts else host.vendor) if host else None
    if resolver.accel != "kvm":
        vendor = None  # TCG gives every model its own vendor
    best: tuple[bool, int, str, frozenset[str]] | None = None
    for model in catalog.models.values():
        for version in model.versions:
            ref = NameRef(version.name, model, NameKind.VERSIONED, version)
            if resolver.unavailable(ref):
                continue
            features = resolver.effective(ref).features
            own = vendor is None or version.definition.signature.vendor == vendor
            score = (own, len(features & offers), version.name, features)
            if best is None or score[:2] > best[:2]:
                best = score
    if best is None:
        raise DomainError(f"{source}: no CPU model runs on {resolver.host or 'this host'}")
    table = resolver.features
    extra = sorted(
        f for f in offers & catalog.known_features - best[3] if table.libvirt_name(f) is not None
    )
    return ",".join([best[2], *(f"+{f}" for f in extra)])


def domain_pin(text: str, source: str = "domain.xml") -> Pin:
    """The pin a pinned domain's XML records (its ``<cpu>`` must still match it)."""
    from cpuver.domain import pinmeta
    from cpuver.domain.pinning import Pin
    from cpuver.domain.xml import parse_xml, renamed
    from cpuver.models import Signature, split_versioned_name

    root = parse_xml(text, source)
    names = renamed(FeatureTable.bundled())
    try:
        meta, on = pinmeta.read_pin(root, names)
    except pinmeta.MetadataError as err:
        name = (root.findtext("name") or "").strip()
        raise DomainError(f"{source}: domain {name!r}: {err}") from err
    assert meta.signature is not None and meta.base is not None
    everything = meta.on | meta.off | _cpu_feature_names(root, names)
    made = Pin(
        spec=meta.spec or meta.base,
        rule="pinned",
        model=(split_versioned_name(meta.base) or (meta.base, 0))[0],
        version=meta.base,
        name=meta.pinned or meta.base,
        machine=meta.machine or "",
        accel=meta.accel or "",
        catalog_release=meta.catalog or "",
        catalog_build=meta.build or "",
        features_on=tuple(on),
        features_off=tuple(everything - on),
        signature=Signature.from_dict(dict(meta.signature)),
    )
    return made


def _cpu_feature_names(root: Any, names: Mapping[str, str]) -> frozenset[str]:
    return frozenset(
        names.get(f.get("name") or "", f.get("name") or "") for f in root.iterfind("cpu/feature")
    )


def pin_domain(
    uri: str | None,
    name: str,
    host: HostArgument = None,
    spec: str | None = None,
    force: bool = False,
    catalog_dir: Path | None = None,
    overlays: Sequence[Path] = (),
) -> PinnedDomain:
    """Pin libvirt domain ``name`` in place: read its persistent XML, pin it, define it back
    (``host`` as for :func:`pin_definition`)."""
    with connect(uri) as conn:
        catalog = daemon_catalog(conn, catalog_dir, overlays)
        text = conn.domain_xml(name)
        source = f"domain {name}"
        done = pin_definition(text, source, catalog, host, spec, daemon_target(conn), force)
        if done.changed:
            conn.define(done.xml)
        return done


def pin_many(uri: str | None, names: Sequence[str], host: HostCapabilities | None = None) -> int:
    """Pin several domains through one connection (the benchmark's use); returns how many."""
    with connect(uri) as conn:
        catalog = daemon_catalog(conn)
        target = daemon_target(conn)
        for name, text in conn.domain_xmls(names):
            done = pin_definition(text, f"domain {name}", catalog, host, None, target)
            if done.changed:
                conn.define(done.xml)
    return len(names)


# ------------------------------------------------------------------------------ verify


def verify_domain(uri: str | None, name: str) -> tuple[Pin, list[str]]:
    """The running domain's vCPU (read through libvirt's QEMU monitor) against its pin: every
    feature of the pin and every signature field; empty differences when equal."""
    from cpuver.models import SIGNATURE_FIELDS

    with connect(uri) as conn:
        text = conn.domain_xml(name, live=True)
        pinned = domain_pin(text, f"domain {name}")
        if not conn.is_active(name):
            raise DomainError(f"domain {name!r} is not running: nothing to verify")
        known = pinned.on | pinned.off
        enabled, signature = conn.vcpu(name, sorted(known), SIGNATURE_FIELDS)
    problems = [f"{f}: pinned on, the vCPU has it off" for f in sorted(pinned.on - enabled)]
    problems += [f"{f}: pinned off, the vCPU has it on" for f in sorted(enabled - pinned.on)]
    want = pinned.signature.as_dict()
    for field in SIGNATURE_FIELDS:
        got = signature.get(field)
        if got != want[field]:
            problems.append(f"{field}: pinned {want[field]!r}, the vCPU has {got!r}")
    return pinned, problems


# ------------------------------------------------------------------------------ update


def update_domain_cpu(
    uri: str | None,
    name: str,
    to: str,
    hosts: Callable[[Catalog, str], list[HostCapabilities]],
    accept_signature_change: bool = False,
    dry_run: bool = False,
    force: bool = False,
    best_host: Callable[[Catalog, str], HostCapabilities | None] | None = None,
) -> CpuDiff:
    """Move domain ``name``'s pin to version ``to`` in its persistent definition only (a
    running domain keeps its CPU until its next cold boot). ``hosts(catalog, accel)`` are the
    hosts the new version must run on (refused otherwise unless ``force``), ``best_host`` what
    ``best`` is resolved against. The diff says whether it applies now (``applied``: the domain
    is shut off) or at its next cold boot (``pending``)."""
    from cpuver.domain.lifecycle import check_update, diff, updated_spec
    from cpuver.domain.xml import pinned_document, read_domain_xml
    from cpuver.emit.libvirt import pinned_cpu

    with connect(uri) as conn:
        catalog = daemon_catalog(conn)
        text = conn.domain_xml(name)
        source = f"domain {name}"
        old = domain_pin(text, source)
        wanted = read_domain_xml(text, source, catalog=catalog)
        spec, kept = updated_spec(old, to, catalog)
        host = best_host(catalog, old.accel) if best_host is not None else None
        resolution = Resolver(catalog, old.machine, old.accel, host).resolve(spec)
        new = _pin(resolution, catalog, wanted.threads_per_package)
        check_update(name, new, hosts(catalog, old.accel), force)
        changes = replace(diff(old, new), kept=kept)
        check_identity(name, changes, accept_signature_change)
        if dry_run or new.fingerprint == old.fingerprint:
            return changes
        running = conn.is_active(name)
        policy = wanted.metadata.policy if wanted.metadata else None
        cpu = pinned_cpu(new, catalog, daemon_target(conn), policy=policy)
        _expressible(cpu, name, source)
        conn.define(pinned_document(text, cpu, source))
        return replace(changes, applied=not running, pending=running)


def check_identity(name: str, changes: CpuDiff, accepted: bool) -> None:
    from cpuver.domain import IdentityChangeRefused

    if changes.identity_changed and not accepted:
        described = [
            f"{n} {old!r} -> {new!r}" for n, old, new in changes.signature if n in changes.identity
        ]
        raise IdentityChangeRefused(name, described)


# ------------------------------------------------------------------------------ hosts


def probe_libvirt(uri: str | None = None) -> HostCapabilities:
    """This host as libvirt sees it: ``domcapabilities`` under TCG and (when the daemon has
    it) KVM, read with the catalog of the daemon's QEMU release."""
    from cpuver.host.domcaps import host_from_domain_capabilities
    from cpuver.libvirt import LibvirtError

    with connect(uri) as conn:
        release = release_of(conn.qemu_version())
        name = conn.hostname()
        texts = {f"{conn.uri} (qemu)": conn.domain_capabilities("qemu")}
        with contextlib.suppress(LibvirtError):  # no KVM behind this daemon
            texts[f"{conn.uri} (kvm)"] = conn.domain_capabilities("kvm")
    return host_from_domain_capabilities(texts, name, [open_catalog(release)], release, _now())


def read_domain_capabilities(text: str, source: str) -> HostCapabilities:
    """A ``virsh domcapabilities`` file as a host (named after the file)."""
    from cpuver.host.domcaps import host_from_domain_capabilities

    name = Path(source).stem if source != "-" else "domcapabilities"
    catalogs = [open_catalog(release) for release in BUNDLED]
    return host_from_domain_capabilities({source: text}, name, catalogs, None, _now())


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def domain_targets(
    uri: str | None, name: str, hosts: Sequence[HostCapabilities]
) -> list[tuple[str, tuple[str, ...]]]:
    """Every host with the pinned features of libvirt domain ``name`` it lacks (as its hook
    there decides: an empty tuple means it may start, restore or migrate there)."""
    from cpuver.domain.pinning import missing_on

    with connect(uri) as conn:
        pinned = domain_pin(conn.domain_xml(name), f"domain {name}")
    out = []
    for host in hosts:
        try:
            out.append((host.name, missing_on(pinned, host)))
        except DomainError:
            out.append((host.name, (f"(no {pinned.accel} capabilities)",)))
    return out


# ------------------------------------------------------------------------------ the hook


def hook_snapshot(emulator: str, key: dict[str, Any] | None) -> dict[str, Any]:
    """What the hook needs of this host (``cpuver-hook/1``), probed now for ``emulator``."""
    from cpuver.api.hosts import probe_host

    host = probe_host("auto", [Path(emulator)] if Path(emulator).is_file() else [])
    release = _qemu_release(emulator)
    return hook_data(host, release, key)


def _qemu_release(emulator: str) -> str | None:
    from cpuver.api.hosts import _release_of
    from cpuver.host.qemu import QemuInstall

    try:
        return _release_of(QemuInstall(Path(emulator)).version())
    except (CpuverError, OSError):
        return None


def hook_data(
    host: HostCapabilities, release: str | None, key: dict[str, Any] | None
) -> dict[str, Any]:
    from cpuver.domain.xml import renamed
    from cpuver.host.hookcache import SCHEMA

    accels = set(host.offers) | {a for r in host.releases.values() for a in r}
    offers = {}
    for accel in sorted(accels):
        found = host.offered(accel, release)
        if found is not None:
            offers[accel] = sorted(found)
    return {
        "schema": SCHEMA,
        "key": key,
        "host": host.name,
        "release": release,
        "offers": offers,
        "libvirt-names": dict(renamed(FeatureTable.bundled())),
    }


def hook_script(cache: Path) -> str:
    """The hook script: this Python without site (``-S``: the hook needs only cpuver and the
    standard library, and starts faster) running :func:`cpuver.hook.main`."""
    import cpuver

    package_root = str(Path(cpuver.__file__).resolve().parents[1])
    return (
        f"#!{sys.executable} -IS\n"
        f"# {HOOK_MARKER} (written by `cpuver libvirt install-hook`, cpuver {cpuver.__version__})\n"
        "import sys\n"
        f"sys.path.insert(0, {package_root!r})\n"
        "from cpuver.hook import main\n"
        f"sys.exit(main(sys.argv[1:], cache={str(cache)!r}))\n"
    )


def install_hook(
    hooks_dir: Path, cache: Path, host: HostCapabilities | None = None
) -> tuple[Path, str]:
    """Write the hook as ``hooks_dir/qemu``; where a hook script of someone else's is there
    already, as ``hooks_dir/qemu.d/cpuver`` beside it (libvirt >= 6.5 runs both). Never
    replaces a script that is not cpuver's. With ``host``, the hook answers from that snapshot
    (never probed again); else this host is probed now and again when it changes."""
    from cpuver.host.hookcache import host_key, write_snapshot

    target = hooks_dir / "qemu"
    how = "installed"
    if target.exists() and HOOK_MARKER not in _head(target):
        target = hooks_dir / "qemu.d" / "cpuver"
        how = f"installed beside the existing {hooks_dir / 'qemu'} (not cpuver's)"
        if target.exists() and HOOK_MARKER not in _head(target):
            raise HostError(f"{target} exists and is not cpuver's hook: not replacing it")
    elif target.exists():
        how = "updated"
    if host is None:
        emulator = "/usr/bin/qemu-system-x86_64"
        data = hook_snapshot(emulator, host_key(emulator))
    else:
        data = hook_data(host, None, None)
    try:
        write_snapshot(str(cache), data)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_text(hook_script(cache))
        temporary.chmod(0o755)
        temporary.replace(target)
    except OSError as err:
        raise HostError(f"cannot install the hook in {hooks_dir}: {err.strerror}") from err
    return target, how


def _head(path: Path) -> str:
    try:
        with path.open(errors="replace") as file:
            return file.read(400)
    except OSError:
        return ""
