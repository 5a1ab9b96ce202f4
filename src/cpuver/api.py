"""Use cases for the CLI and the web layer: pick a catalog, read a host, resolve, report.

Everything user-facing goes through here, so the CLI and the service give the same answers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuver.catalog import Catalog, NameKind
from cpuver.catalog.files import BUNDLED, bundled_dir, load
from cpuver.catalog.overlay import apply_overlay
from cpuver.catalog.releases import catalog_for_release
from cpuver.errors import CpuverError, HostError, NotRunnable, QemuError, UnknownRelease
from cpuver.features import FeatureSet
from cpuver.host.capabilities import AccelOffer, HostCapabilities, from_json
from cpuver.host.capabilities import build as build_host
from cpuver.models import IDENTITY_FIELDS, LEVEL_FIELDS, SIGNATURE_FIELDS, version_number
from cpuver.resolve import Resolution, Resolver

if TYPE_CHECKING:
    from cpuver.domain.lifecycle import CpuDiff, Guest
    from cpuver.host.cpuinfo import CpuInfo
    from cpuver.host.explain import HostDiff
    from cpuver.host.launch import RunningVm
    from cpuver.host.qemu import QemuInstall
    from cpuver.store import GuestRecord, GuestStore


@cache
def _bundled(release: str) -> Catalog:
    return load(bundled_dir(release), source=f"bundled qemu-{release}")


def open_catalog(
    release: str | None = None, directory: Path | None = None, overlays: Sequence[Path] = ()
) -> Catalog:
    """The catalog to work with: a directory, a bundled release (default: the newest), overlays."""
    catalog = load(directory) if directory is not None else _catalog_for(release or BUNDLED[-1])
    for overlay in overlays:
        catalog = apply_overlay(catalog, overlay)
    return catalog


def _catalog_for(release: str) -> Catalog:
    parts = release.split(".")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise UnknownRelease(release, BUNDLED)
    major_minor = ".".join(parts[:2])
    if major_minor in BUNDLED:
        return _bundled(major_minor)
    return catalog_for_release(release)


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


def read_host(argument: str, qemu_binary: Path | None = None) -> HostCapabilities:
    """A host from a file (snapshot v1/v2 or QMP expansion reply), ``-`` (standard input) or
    ``local`` (a live probe of this host, method chosen as by ``cpuver host probe``)."""
    if argument == "local":
        return probe_host("auto", [qemu_binary] if qemu_binary else ())
    try:
        text = sys.stdin.read() if argument == "-" else Path(argument).read_text()
    except OSError as err:
        raise HostError(f"cannot read host file {argument}: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HostError(
            f"{argument}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            + (" (truncated?)" if _truncated(err, text) else "")
        ) from err
    return from_json(data, argument)


def _truncated(err: json.JSONDecodeError, text: str) -> bool:
    """The text ends inside a value (cut off while copying or writing)."""
    return err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")


# ------------------------------------------------------------------------------ host probing

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


def resolution_json(resolution: Resolution) -> dict[str, Any]:
    from cpuver.emit.libvirt import cpu_xml
    from cpuver.emit.qemu import cpu_arg

    signature = resolution.definition.signature.as_dict()
    return {
        "spec": resolution.spec,
        "name": resolution.name,
        "model": resolution.model,
        "version": resolution.version.name,
        "machine": resolution.machine,
        "accel": resolution.accel,
        "rule": resolution.rule.value,
        "reason": resolution.reason,
        "features": sorted(resolution.definition.features),
        "signature": {k: signature[k] for k in SIGNATURE_FIELDS},
        "blockers": {name: list(missing) for name, missing in resolution.blockers},
        "missing": list(resolution.missing),
        "qemu_cpu_arg": cpu_arg(resolution),
        "libvirt_xml": cpu_xml(resolution),
    }


def definitions_json(resolver: Resolver) -> list[dict[str, Any]]:
    """``query-cpu-definitions`` as QEMU would answer it for this catalog, machine and host."""
    catalog = resolver.catalog
    out = []
    for ref in catalog.names():
        entry: dict[str, Any] = {"name": ref.name}
        alias = catalog.alias_of(ref, resolver.machine)
        if alias:
            entry["alias-of"] = alias
        if resolver.offers is not None:
            entry["unavailable-features"] = list(resolver.unavailable(ref))
        deprecated = ref.version.deprecated if ref.version else ref.model.deprecated
        entry["deprecated"] = deprecated
        entry["migration-safe"] = True
        entry["static"] = False
        out.append(entry)
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    gained: tuple[str, ...]
    lost: tuple[str, ...]
    signature: tuple[tuple[str, Any, Any], ...]

    @property
    def identity_changed(self) -> bool:
        """True when a guest OS may see a different CPU (vendor/family/model/stepping/model-id)."""
        return any(name in IDENTITY_FIELDS for name, _old, _new in self.signature)


def difference(a: Resolution, b: Resolution) -> Difference:
    sig_a, sig_b = a.definition.signature.as_dict(), b.definition.signature.as_dict()
    return Difference(
        gained=tuple(sorted(b.definition.features - a.definition.features)),
        lost=tuple(sorted(a.definition.features - b.definition.features)),
        signature=tuple((k, sig_a[k], sig_b[k]) for k in SIGNATURE_FIELDS if sig_a[k] != sig_b[k]),
    )


@dataclass(frozen=True, slots=True)
class FamilyReport:
    model: str
    bare: str
    best: str | None
    blockers: tuple[tuple[str, tuple[str, ...]], ...]


def report(resolver: Resolver) -> list[FamilyReport]:
    """Per model family: what the bare name means, the best runnable version, what blocks newer."""
    out = []
    for model in resolver.catalog.models.values():
        bare = resolver.resolve(model.name).name
        try:
            best: Resolution | None = resolver.resolve(f"{model.name},version=best")
        except NotRunnable as err:
            out.append(FamilyReport(model.name, bare, None, tuple(err.blockers.items())))
            continue
        assert best is not None
        newer = tuple((n, m) for n, m in best.blockers if version_number(n) > best.version.number)
        out.append(FamilyReport(model.name, bare, best.name, newer))
    return out


def history(catalog: Catalog, model_name: str) -> list[dict[str, Any]]:
    """A model's versions as the seed writes its history: what each added/removed, when, why."""
    model = catalog.model(model_name)
    rows = []
    previous = None
    for version in model.versions:
        row: dict[str, Any] = {
            "version": version.name,
            "since": version.since,
            "aliases": list(version.aliases),
            "note": version.note,
        }
        if previous is None:
            row["features"] = sorted(version.definition.features)
        else:
            row["added"] = sorted(version.definition.features - previous.features)
            row["removed"] = sorted(previous.features - version.definition.features)
            old, new = previous.signature.as_dict(), version.definition.signature.as_dict()
            row["signature"] = {k: new[k] for k in SIGNATURE_FIELDS if old[k] != new[k]}
        rows.append(row)
        previous = version.definition
    return rows


def revisions(catalog: Catalog, model_name: str) -> list[tuple[str, str]]:
    """How the bare name was defined under older machine types (one line per change)."""
    model = catalog.model(model_name)
    ref = catalog.lookup(model.name)
    assert ref.kind is NameKind.BARE
    rows: list[tuple[str, str]] = []
    previous = None
    machines = sorted(
        (m for m in catalog.machines.values() if m.release and m.name.startswith("pc-i440fx-")),
        key=lambda m: m.release or (0, 0),
    )
    for machine in machines:
        definition = catalog.effective(ref, machine, "tcg")
        if previous is not None and definition != previous[1]:
            rows.append((previous[0], _describe(previous[1], definition)))
        previous = (machine.name, definition)
    return rows


def signature_text(field: str, value: Any) -> str:
    """A signature value as people read it: CPUID levels in hex (``0x8000000a``)."""
    return hex(value) if field in LEVEL_FIELDS and isinstance(value, int) else str(value)


def _describe(old: Any, new: Any) -> str:
    gained = sorted(new.features - old.features)
    lost = sorted(old.features - new.features)
    sig_old, sig_new = old.signature.as_dict(), new.signature.as_dict()
    parts = [f"+{f}" for f in gained] + [f"-{f}" for f in lost]
    parts += [
        f"{k}={signature_text(k, sig_new[k])}" for k in SIGNATURE_FIELDS if sig_old[k] != sig_new[k]
    ]
    return " ".join(parts)


def import_catalog(binary: Path, output: Path, progress: Any = None) -> Catalog:
    from cpuver.catalog.files import dump
    from cpuver.host.qemu import QemuInstall
    from cpuver.importer import import_catalog as run_import

    if not binary.exists():
        raise QemuError(f"no QEMU binary at {binary}")
    catalog = run_import(QemuInstall(binary), progress)
    dump(catalog, output)
    return catalog


# ---------------------------------------------------------------------------------- guests
# The store (SQLAlchemy) and the QEMU launcher are imported inside these functions: commands
# that never touch guests must not pay for them at start-up.


def open_store(url: str | None = None) -> GuestStore:
    from cpuver.store import GuestStore

    return GuestStore(url)


def _guest(record: GuestRecord) -> Guest:
    from cpuver.domain.lifecycle import Guest
    from cpuver.domain.pinning import Pin

    pending = record.pending_json
    return Guest(
        name=record.name,
        pin=Pin.from_json(json.loads(record.pin_json), f"guest {record.name}"),
        state=record.state,  # type: ignore[arg-type]
        host=record.host,
        pending=Pin.from_json(json.loads(pending), f"guest {record.name}") if pending else None,
        snapshots=tuple(json.loads(record.snapshots_json)),
        generation=record.generation,
    )


def get_guest(store: GuestStore, name: str) -> Guest:
    return _guest(store.get(name))


def list_guests(store: GuestStore) -> list[Guest]:
    """Every stored guest, read in one query."""
    return [_guest(record) for record in store.list()]


def _store_change(store: GuestStore, old: Guest, new: Guest, reason: str) -> Guest:
    """Write ``new`` if nobody changed the guest since ``old`` was read (else ConcurrentUpdate)."""
    pending = json.dumps(new.pending.to_json(), sort_keys=True) if new.pending else None
    record = store.update(
        old.name,
        old.generation,
        reason=reason,
        state=new.state,
        host=new.host,
        pin_json=json.dumps(new.pin.to_json(), sort_keys=True),
        fingerprint=new.pin.fingerprint,
        pending_json=pending,
        snapshots_json=json.dumps(list(new.snapshots)),
    )
    return _guest(record)


def define_guest(
    store: GuestStore,
    path: Path,
    catalog: Catalog,
    accel: str,
    host: HostCapabilities | None = None,
    machine: str | None = None,
) -> Guest:
    """Read a domain XML or guest file, resolve its CPU fully and store the pinned guest."""
    try:
        text = path.read_text()
    except OSError as err:
        raise HostError(f"cannot read guest definition {path}: {err.strerror}") from err
    return define_guest_text(store, text, str(path), catalog, accel, host, machine)


def define_guest_text(
    store: GuestStore,
    text: str,
    source: str,
    catalog: Catalog,
    accel: str,
    host: HostCapabilities | None = None,
    machine: str | None = None,
) -> Guest:
    """Like :func:`define_guest` for a definition already read (libvirt XML, JSON or TOML, told
    apart by ``source``'s suffix or else by the text). ``host`` may be a :func:`pool_host`."""
    from cpuver.domain.lifecycle import define
    from cpuver.domain.pinning import pin
    from cpuver.domain.xml import read_domain_xml, read_guest

    if source.lower().endswith(".xml"):
        wanted = read_domain_xml(text, source, catalog=catalog)
    else:
        wanted = read_guest(text, source)
    if wanted.spec is None:
        raise CpuverError(
            f"{source}: no CPU model to pin ({'; '.join(wanted.notes) or 'no <cpu>'})"
        )
    chosen_machine = machine or wanted.machine
    resolution = Resolver(catalog, chosen_machine, accel, host).resolve(wanted.spec)
    guest = define(wanted.name, pin(resolution, catalog))
    against = f" for {host.source}" if host is not None and host.source.startswith("pool ") else ""
    store.define(
        guest.name,
        guest.state,
        guest.pin.machine,
        json.dumps(guest.pin.to_json(), sort_keys=True),
        guest.pin.fingerprint,
        reason=f"define from {Path(source).name}: {wanted.spec} -> {resolution.name}{against}",
    )
    return get_guest(store, guest.name)


def guest_xml(store: GuestStore, name: str, catalog: Catalog) -> str:
    from cpuver.domain.xml import domain_xml

    guest = get_guest(store, name)
    return domain_xml(guest.name, guest.pin.machine, guest.pin, catalog)


def guest_transition(
    store: GuestStore,
    name: str,
    action: str,
    *,
    host: HostCapabilities | None = None,
    snapshot: str | None = None,
    dry_run: bool = False,
) -> Guest:
    """One lifecycle step, checked (hosts must run the pinned CPU) and stored atomically;
    ``dry_run`` only checks that it is allowed."""
    from cpuver.domain import lifecycle

    guest = get_guest(store, name)
    if action in ("start", "migrate", "restore"):
        if host is None:
            raise HostError(f"{action} needs the target host's capabilities (--host/--to)")
        step = {
            "start": lifecycle.start,
            "migrate": lifecycle.migrate,
            "restore": lifecycle.restore,
        }[action]
        new = step(guest, host.name, host)
        reason = f"{action} on {host.name}"
    elif action in ("snapshot-create", "snapshot-revert"):
        assert snapshot is not None
        step_snap = (
            lifecycle.snapshot_create
            if action == "snapshot-create"
            else (lifecycle.snapshot_revert)
        )
        new = step_snap(guest, snapshot)
        reason = f"{action} {snapshot}"
    else:
        new = {"shutdown": lifecycle.shutdown, "save": lifecycle.save}[action](guest)
        reason = action
    return new if dry_run else _store_change(store, guest, new, reason)


def update_guest_cpu(
    store: GuestStore,
    name: str,
    catalog: Catalog,
    to: str,
    host: HostCapabilities | None,
    accept_signature_change: bool,
    dry_run: bool,
) -> tuple[Guest, CpuDiff]:
    """Re-resolve a guest's model with ``to`` (best, latest, vN) and move its pin explicitly."""
    from cpuver.domain.lifecycle import update_cpu
    from cpuver.domain.pinning import pin

    guest = get_guest(store, name)
    old = guest.pin
    resolver = Resolver(catalog, old.machine, old.accel, host)
    new_pin = pin(resolver.resolve(f"{old.model},version={to}"), catalog)
    updated, diff = update_cpu(guest, new_pin, accept_signature_change, dry_run)
    if updated is not guest and updated != guest:
        updated = _store_change(store, guest, updated, f"update-cpu to {new_pin.name}")
    return updated, diff


def check_guests(store: GuestStore, catalog: Catalog) -> list[tuple[str, list[str]]]:
    """Guests whose pinned version no longer exists or is deprecated in ``catalog``."""
    from cpuver.domain.pinning import check

    out = []
    for guest in list_guests(store):
        problems = check(guest.pin, catalog)
        if problems:
            out.append((guest.name, problems))
    return out


def _pinned_cpu(guest: Guest, catalog: Catalog) -> tuple[str, frozenset[str], dict[str, Any]]:
    """The ``-cpu`` argument of a guest's pin, and the features and signature to verify."""
    from cpuver.domain.pinning import qemu_cpu_arg

    pin_ = guest.pin
    return qemu_cpu_arg(pin_, catalog), frozenset(pin_.features_on), pin_.signature.as_dict()


@dataclass(frozen=True, slots=True)
class RunningGuest:
    """Where a guest's QEMU runs on after cpuver's command ended: its directory and pid."""

    workdir: Path
    pid: int
    binary: Path
    socket: Path


def run_dir(store: GuestStore, name: str) -> Path:
    """Where cpuver keeps one guest's running QEMU (run.json, and one work directory per
    process with its QMP socket and stderr), per store."""
    import hashlib

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    store_key = hashlib.sha256(store.url.encode()).hexdigest()[:12]
    return state / "cpuver" / "run" / store_key / name


def _new_workdir(store: GuestStore, name: str) -> Path:
    """A fresh directory per QEMU process: a quitting QEMU removes its own socket path, so a
    new process must never reuse it."""
    import uuid

    return run_dir(store, name) / uuid.uuid4().hex[:12]


def running_guest(store: GuestStore, name: str) -> RunningGuest | None:
    """The QEMU process cpuver left running for guest ``name``, if it still runs."""
    from cpuver.host.qemu import process_alive

    record = run_dir(store, name) / "run.json"
    try:
        data = json.loads(record.read_text())
        found = RunningGuest(
            Path(data["workdir"]), int(data["pid"]), Path(data["binary"]), Path(data["socket"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if process_alive(found.pid) else None


def _record_running(
    store: GuestStore, name: str, vm: RunningVm, workdir: Path, binary: Path
) -> RunningGuest:
    socket = vm.session.socket_path
    assert socket is not None
    pid = vm.detach()
    record = {"pid": pid, "binary": str(binary), "socket": str(socket), "workdir": str(workdir)}
    (run_dir(store, name) / "run.json").write_text(json.dumps(record) + "\n")
    return RunningGuest(workdir, pid, binary, socket)


def _problems_or_stop(vm: RunningVm, guest: Guest, catalog: Catalog, what: str) -> None:
    """Compare the running vCPU with the pin; end the VM and refuse when they differ."""
    from cpuver.host.launch import verify

    _cpu, features, signature = _pinned_cpu(guest, catalog)
    problems = verify(vm, features, signature)
    if problems:
        vm.quit()
        raise QemuError(f"{what}: the running vCPU differs from the pin: {'; '.join(problems)}")


def launch_guest(store: GuestStore, guest: Guest, catalog: Catalog, binary: Path) -> RunningGuest:
    """Start the pinned CPU in a real QEMU, verify it over QMP, let it run on its own."""
    from cpuver.host.launch import start

    pin_ = guest.pin
    return _keep_running(
        store,
        guest,
        catalog,
        binary,
        "start",
        lambda install, cpu, workdir: start(
            install, pin_.machine, pin_.accel, cpu, workdir=workdir
        ),
    )


def _keep_running(
    store: GuestStore,
    guest: Guest,
    catalog: Catalog,
    binary: Path,
    what: str,
    boot: Callable[[QemuInstall, str, Path], RunningVm],
) -> RunningGuest:
    """Boot a new QEMU for ``guest`` with ``boot``, verify it, let it run on and record it."""
    from cpuver.host.qemu import QemuInstall

    if running_guest(store, guest.name) is not None:
        raise QemuError(f"guest {guest.name!r} already runs in QEMU")
    workdir = _new_workdir(store, guest.name)
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    vm = boot(QemuInstall(binary), cpu, workdir)
    try:
        _problems_or_stop(vm, guest, catalog, what)
        vm.session.command("cont")
        return _record_running(store, guest.name, vm, workdir, binary)
    except BaseException:
        vm.close()
        raise


def _attached(store: GuestStore, guest: Guest, catalog: Catalog) -> tuple[RunningVm, Path]:
    from cpuver.host.launch import attach
    from cpuver.host.qemu import QemuInstall

    found = running_guest(store, guest.name)
    if found is None:
        raise QemuError(f"guest {guest.name!r} does not run in QEMU (start it with --launch)")
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    install = QemuInstall(found.binary)
    vm = attach(
        install, guest.pin.machine, guest.pin.accel, cpu, found.workdir, found.pid, found.socket
    )
    return vm, found.binary


def migrate_running_guest(
    store: GuestStore, guest: Guest, catalog: Catalog, binary: Path | None = None
) -> RunningGuest:
    """Live-migrate the guest's running QEMU into a new process, verify it there, end the old."""
    from cpuver.host.launch import live_migrate
    from cpuver.host.qemu import QemuInstall

    source, source_binary = _attached(store, guest, catalog)
    old = running_guest(store, guest.name)
    target_binary = binary or source_binary
    cpu, _features, _signature = _pinned_cpu(guest, catalog)
    new_dir = _new_workdir(store, guest.name)
    try:
        target = live_migrate(
            source,
            QemuInstall(target_binary),
            guest.pin.machine,
            guest.pin.accel,
            cpu,
            run_dir=new_dir,
        )
    except BaseException:
        source.close()
        raise
    try:
        _problems_or_stop(target, guest, catalog, "migrate")
        target.session.command("cont")
        running = _record_running(store, guest.name, target, new_dir, target_binary)
    except BaseException:
        target.quit()
        shutil.rmtree(new_dir, ignore_errors=True)
        source.session.command("cont")
        source.close()
        raise
    source.quit()
    if old is not None:
        shutil.rmtree(old.workdir, ignore_errors=True)
    return running


def stop_running_guest(store: GuestStore, guest: Guest, catalog: Catalog) -> bool:
    """End the guest's QEMU if cpuver left one running; True when there was one."""
    if running_guest(store, guest.name) is None:
        return False
    vm, _binary = _attached(store, guest, catalog)
    vm.quit()
    shutil.rmtree(run_dir(store, guest.name), ignore_errors=True)
    return True


def save_running_guest(store: GuestStore, guest: Guest, catalog: Catalog, state: Path) -> None:
    """Write the running guest's state with QEMU's migration to a file, then end QEMU."""
    from cpuver.host.launch import save

    vm, _binary = _attached(store, guest, catalog)
    try:
        save(vm, state)
    finally:
        vm.quit()
    shutil.rmtree(run_dir(store, guest.name), ignore_errors=True)


def restore_running_guest(
    store: GuestStore, guest: Guest, catalog: Catalog, binary: Path, state: Path
) -> RunningGuest:
    """Load a state file into a new QEMU, verify the vCPU against the pin, let it run on."""
    from cpuver.host.launch import restore

    pin_ = guest.pin
    return _keep_running(
        store,
        guest,
        catalog,
        binary,
        "restore",
        lambda install, cpu, workdir: restore(
            install, pin_.machine, pin_.accel, cpu, state, workdir
        ),
    )


# ---------------------------------------------------------------------------------- fleets
# Hosts and pools live in the guest store's database (HostStore); the fleet's matrices in
# cpuver.fleet (numpy). Both are imported inside these functions, as for guests.
if TYPE_CHECKING:
    from cpuver.fleet import Fleet, PoolAnswer, WhatIfChange
    from cpuver.store import HostRecord, HostStore


def open_host_store(url: str | None = None) -> HostStore:
    from cpuver.store import HostStore

    return HostStore(url)


def add_host_files(
    store: HostStore,
    files: Sequence[str],
    pools: Sequence[str],
    progress: Callable[[str, int, int, str], None] | None = None,
) -> list[HostRecord]:
    """Read each host snapshot (as :func:`read_host` does) and store it under its host name in
    ``pools``; a host added before is refreshed (its old snapshot stays in the history).
    Every file is read and checked before the first is stored, so a bad one stores nothing.
    ``progress(verb, done, total, host)`` is called after each read ("read") and each store
    ("added")."""
    read = []
    for done, argument in enumerate(files, 1):
        read.append(read_host(argument))
        if progress is not None:
            progress("read", done, len(files), read[-1].name)
    added = []
    for done, host in enumerate(read, 1):
        added.append(add_host(store, host, pools))
        if progress is not None:
            progress("added", done, len(read), host.name)
    return added


def add_host(store: HostStore, host: HostCapabilities, pools: Sequence[str]) -> HostRecord:
    """Store a host's snapshot (normalised) in ``pools``; a known host is refreshed."""
    return store.add(json.dumps(host.to_json(), sort_keys=True), host.name, pools)


def host_json(record: HostRecord) -> dict[str, Any]:
    """One stored host as ``cpuver fleet ls --json`` and ``GET /api/hosts`` show it."""
    host = stored_host(record)
    return {
        "host": record.name,
        "pools": list(record.pools),
        "vendor": host.facts.vendor if host.facts else host.vendor,
        "accelerators": sorted(host.offers),
        "releases": sorted(host.releases) if host.releases else [],
        "snapshots": record.snapshots,
        "updated": record.updated.isoformat(timespec="seconds"),
    }


def stored_host(record: HostRecord) -> HostCapabilities:
    """A stored host's current snapshot, read back."""
    return from_json(json.loads(record.snapshot_json), f"host {record.name}")


def pool_fleet(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str = "kvm",
    machine: str | None = None,
    hosts: Sequence[str] | None = None,
) -> Fleet:
    """A :class:`~cpuver.fleet.Fleet` of the hosts of ``pool`` (only ``hosts`` of it, when
    given), each with what it offers under ``accel`` for the catalog's QEMU release."""
    from cpuver.fleet import Fleet

    fleet = Fleet(catalog, accel, machine)
    offers = _pool_offers(store, pool, catalog, fleet.accel, hosts)
    fleet.set_hosts((host.name, found) for host, found in offers)
    return fleet


def _pool_offers(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str,
    hosts: Sequence[str] | None = None,
) -> list[tuple[HostCapabilities, FeatureSet]]:
    """Each stored host of ``pool`` (only ``hosts`` of it, when given) with what it offers under
    ``accel`` for the catalog's QEMU release; a host not probed under ``accel`` is an error."""
    from cpuver.fleet import offers_of

    records = store.list(pool)
    if hosts is not None:
        known = {r.name for r in records}
        unknown = [h for h in hosts if h not in known]
        if unknown:
            raise HostError(f"not in pool {pool!r}: {', '.join(unknown)}")
        records = [r for r in records if r.name in set(hosts)]
    out = []
    for record in records:
        host = stored_host(record)
        found = offers_of(host, accel, catalog.release, catalog)
        if found is None:
            raise HostError(
                f"host {record.name!r} of pool {pool!r} has no {accel} capabilities "
                f"(probe it under {accel}, or choose another --accel)"
            )
        out.append((host, found))
    return out


def pool_host(
    store: HostStore, pool: str, catalog: Catalog, accel: str = "kvm"
) -> HostCapabilities:
    """The pool as one host: what *every* host of ``pool`` offers under ``accel`` (the
    intersection), so the resolver's ``version=best`` against it is the migration-safe best and
    its blockers are the features some host of the pool lacks."""
    offers = _pool_offers(store, pool, catalog, accel)
    if not offers:
        raise HostError(f"pool {pool!r} has no hosts (add some with cpuver fleet add --pool)")
    common = frozenset.intersection(*(found for _host, found in offers))
    vendors = {host.facts.vendor if host.facts else host.vendor for host, _found in offers}
    if accel == "kvm" and len(vendors) > 1:
        raise HostError(
            f"pool {pool!r} mixes CPU vendors ({', '.join(sorted(str(v) for v in vendors))}): "
            "KVM gives guests the host's vendor, so no CPU migrates across the pool"
        )
    vendor = next(iter(vendors)) if len(vendors) == 1 else None
    return HostCapabilities(
        f"pool {pool}", {accel: common}, vendor, f"pool {pool} ({len(offers)} hosts)"
    )


@dataclass(frozen=True, slots=True)
class PoolBest:
    answer: PoolAnswer
    held_back: Sequence[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]]
    """Versions older than the answer that some hosts cannot run (newest first), with each such
    host and what it lacks; only for a plain model name (a spec with feature changes: empty)."""


def pool_best(fleet: Fleet, spec: str) -> PoolBest:
    """The newest version of the spec's model every host of the fleet runs, what holds newer
    versions back (which host, which features) and which older versions some hosts cannot run."""
    from cpuver.spec import parse

    answer = fleet.best(spec)
    if parse(spec).changes or answer.best is None:
        return PoolBest(answer, ())
    return PoolBest(answer, fleet.held_back(answer.model))


def pool_best_json(pool: str, found: PoolBest) -> dict[str, Any]:
    """As ``cpuver pool best --json`` and ``GET /api/pools/{pool}/best`` show it."""
    answer = found.answer
    return {
        "pool": pool,
        "model": answer.model,
        "best": answer.best,
        "hosts": list(answer.hosts),
        "blocked": {v: {h: list(m) for h, m in hs} for v, hs in answer.blocked},
        "held-back": {v: {h: list(m) for h, m in hs} for v, hs in found.held_back},
    }


def feature_names(text: str | None) -> frozenset[str]:
    """``hle,rtm`` as canonical feature names (UnknownFeature with hints for a typo)."""
    return canonical_features((text or "").split(","))


def canonical_features(names: Iterable[str]) -> frozenset[str]:
    """Feature names in any accepted spelling as canonical ones (blank ones left out;
    UnknownFeature with hints for a typo)."""
    from cpuver.features import FeatureTable

    table = FeatureTable.bundled()
    return frozenset(table.canonical(name.strip()) for name in names if name.strip())


@dataclass(frozen=True, slots=True)
class GuestImpact:
    """A stored guest that runs on ``host`` now and would not after the change."""

    guest: str
    pin: str
    host: str
    missing: tuple[str, ...]
    current: bool
    """The guest is on that host now (it could not start there again, nor migrate back)."""


@dataclass(frozen=True, slots=True)
class WhatIf:
    changes: list[WhatIfChange]
    guests: list[GuestImpact]
    stranded: list[str]
    """Guests that run on some host of the pool now and on none after the change."""


def what_if_json(
    pool: str,
    drop: frozenset[str],
    add: frozenset[str],
    hosts: Sequence[str] | None,
    outcome: WhatIf,
) -> dict[str, Any]:
    """As ``cpuver fleet what-if --json`` and ``POST /api/pools/{pool}/what-if`` show it."""
    return {
        "pool": pool,
        "drop": sorted(drop),
        "add": sorted(add),
        "hosts": list(hosts) if hosts is not None else None,
        "answers": [
            {"model": c.model, "before": c.before, "after": c.after, "hosts": list(c.hosts)}
            for c in outcome.changes
        ],
        "guests": [
            {
                "guest": g.guest,
                "pin": g.pin,
                "host": g.host,
                "missing": list(g.missing),
                "current": g.current,
            }
            for g in outcome.guests
        ],
        "stranded": outcome.stranded,
    }


def fleet_what_if(
    host_store: HostStore,
    guest_store: GuestStore,
    pool: str,
    catalog: Catalog,
    drop: frozenset[str],
    add: frozenset[str] = frozenset(),
    hosts: Sequence[str] | None = None,
    accel: str = "kvm",
    machine: str | None = None,
) -> WhatIf:
    """What changes when the pool's hosts (only ``hosts``, when given) lose ``drop`` and gain
    ``add`` (a microcode update taking TSX away, a BIOS setting): which pool answers change, and
    which stored guests could no longer start on or migrate to which host."""
    from cpuver.fleet import offers_of

    fleet = pool_fleet(host_store, pool, catalog, accel, machine, hosts)
    changes = fleet.what_if(drop, add)
    scope = set(fleet.hosts)
    records = [r for r in host_store.list(pool) if r.name in scope]
    snapshots = {r.name: stored_host(r) for r in records}
    impacts: list[GuestImpact] = []
    stranded: list[str] = []
    for guest in list_guests(guest_store):
        pin_ = guest.pin
        ran, runs = False, False
        for name, snapshot in snapshots.items():
            offered = offers_of(snapshot, pin_.accel, pin_.release, catalog)
            if offered is None:
                continue
            before = pin_.on - offered
            after = pin_.on - ((offered - drop) | add)
            ran, runs = ran or not before, runs or not after
            if not before and after:
                impacts.append(
                    GuestImpact(
                        guest.name, pin_.name, name, tuple(sorted(after)), guest.host == name
                    )
                )
        if ran and not runs:
            stranded.append(guest.name)
    return WhatIf(changes, impacts, stranded)


Targets = list[tuple[str, tuple[str, ...]]]
"""Every host with the pinned features it lacks: an empty tuple means the guest can start on it
or migrate to it."""


def guest_targets(
    host_store: HostStore, guest_store: GuestStore, name: str, pool: str | None = None
) -> Targets:
    """Every host (of ``pool``, when given) with the pinned features of guest ``name`` it lacks."""
    return _targets(get_guest(guest_store, name), _stored_hosts(host_store, pool))


def targets_json(name: str, found: Targets) -> dict[str, Any]:
    """As ``cpuver domain targets --json`` and ``GET /api/guests/{name}/targets`` show it."""
    return {
        "guest": name,
        "targets": [host for host, missing in found if not missing],
        "blocked": {host: list(missing) for host, missing in found if missing},
    }


def every_guest_targets(
    host_store: HostStore, guest_store: GuestStore, pool: str | None = None
) -> list[tuple[Guest, Targets]]:
    """:func:`guest_targets` of every stored guest, reading each host snapshot once."""
    hosts = _stored_hosts(host_store, pool)
    return [(guest, _targets(guest, hosts)) for guest in list_guests(guest_store)]


def _stored_hosts(host_store: HostStore, pool: str | None) -> list[HostCapabilities]:
    return [stored_host(record) for record in host_store.list(pool)]


def _targets(guest: Guest, hosts: Sequence[HostCapabilities]) -> Targets:
    from cpuver.domain import DomainError
    from cpuver.domain.pinning import missing_on

    out: Targets = []
    for host in hosts:
        try:
            missing = missing_on(guest.pin, host)
        except DomainError:
            missing = (f"(no {guest.pin.accel} capabilities)",)
        out.append((host.name, missing))
    return out
