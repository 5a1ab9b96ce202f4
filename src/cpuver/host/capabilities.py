"""What one host can give a guest, per QEMU release and accelerator: a pure value type and its JSON.

Three JSON forms are read: QEMU's own ``query-cpu-model-expansion`` reply for ``host`` (KVM) or
``max`` (TCG); cpuver's first snapshot form (``"schema": "cpuver-host/1"``: offers per
accelerator); and the current one, ``"cpuver-host/2"``::

    {"schema": "cpuver-host/2", "host": "node1", "probed": "2026-11-25T18:00:00Z",
     "method": "kvm",
     "cpu": {"vendor": "GenuineIntel", "brand": "...", "family": 6, "model": 63,
             "stepping": 2, "microcode": "0x49"},
     "kernel": "6.1.0-18-amd64",
     "vulnerabilities": {"mds": "Mitigation: Clear CPU buffers; SMT vulnerable", ...},
     "releases": {"10.0": {"kvm": {"features": [...],
                                   "provenance": {"method": "kvm", "time": "...",
                                                  "qemu": null, "note": "..."}},
                           "tcg": {...}},
                  "7.2": {...}}}

Errors name the field (``host.json: releases.10.0.kvm.features: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpuver.errors import HostError, UnknownFeature, shown
from cpuver.features import FeatureSet, FeatureTable
from cpuver.names import InvalidName, is_name

SNAPSHOT_SCHEMA = "cpuver-host/2"
SNAPSHOT_SCHEMA_V1 = "cpuver-host/1"
READABLE_SCHEMAS = (SNAPSHOT_SCHEMA_V1, SNAPSHOT_SCHEMA)
METHODS = ("kvm", "qemu", "cpuinfo", "catalog", "libvirt", "qmp", "libvirt-cache")
"""How an accelerator's offers were found: KVM ioctls, QEMU's own filter, /proc/cpuinfo flags
(approximate), the catalog (TCG offers the same on every host), libvirt's domcapabilities, QMP
replies a management layer kept, or libvirt's QEMU capabilities cache (those two read with
QEMU's rules, host.evidence)."""
_MODEL_ACCELERATOR = {"host": "kvm", "max": "tcg"}
_SCHEMA_PREFIX = "cpuver-host/"
ACCELERATORS = ("kvm", "tcg")
_RELEASE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
"""A QEMU release key of a snapshot: ``X.Y``."""
_SCHEMA_NUMBER = re.compile(r"[0-9]{1,6}")
SIGNATURE_MAX = 0xFFFF
"""Family, model and stepping are CPUID bit fields: a bigger number is no CPU's."""


@dataclass(frozen=True, slots=True)
class AccelOffer:
    """What one accelerator of one QEMU release offers, and how that was found out."""

    features: FeatureSet
    method: str
    qemu: str | None = None
    """The QEMU build (``-version`` line) that was asked, when one was."""
    time: str | None = None
    note: str | None = None
    unknown: Mapping[str, str] = field(default_factory=dict)
    """Features the evidence cannot tell offered or not, with why; never counted as offered."""

    @property
    def approximate(self) -> bool:
        """True when read from /proc/cpuinfo: the CPU's flags, not what KVM lets a guest have."""
        return self.method == "cpuinfo"

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.qemu:
            out["qemu"] = self.qemu
        if self.time:
            out["time"] = self.time
        if self.note:
            out["note"] = self.note
        if self.approximate:
            out["approximate"] = True
        return out


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Facts about the host that explain what it offers: CPU identity, microcode, kernel."""

    vendor: str
    brand: str = ""
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    microcode: str | None = None
    kernel: str | None = None
    vulnerabilities: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """Features a host offers a guest under each accelerator it was probed for.

    ``offers`` is what a single-release host offers (v1 snapshots, QMP replies) or, for a v2
    snapshot, the newest release's offers; ``releases`` holds every release ("X.Y") probed.
    """

    name: str
    offers: Mapping[str, FeatureSet]
    vendor: str | None = None
    source: str = ""
    provenance: Mapping[str, str] = field(default_factory=dict)
    releases: Mapping[str, Mapping[str, AccelOffer]] = field(default_factory=dict)
    facts: HostFacts | None = None
    probed: str | None = None
    method: str | None = None
    unknown: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """For a host without releases: per accelerator, features its evidence cannot decide."""

    def release_for(self, release: str | None) -> str | None:
        """The probed release to use for a catalog of ``release`` ("X.Y"): that one if probed,
        else the newest older one, else the oldest; None when the snapshot has no releases."""
        if not self.releases:
            return None
        ordered = sorted(self.releases, key=_release_key)
        if release is None or release in self.releases:
            return release or ordered[-1]
        older = [r for r in ordered if _release_key(r) <= _release_key(release)]
        return older[-1] if older else ordered[0]

    def offer(self, accel: str, release: str | None = None) -> AccelOffer | None:
        chosen = self.release_for(release)
        return self.releases[chosen].get(accel) if chosen is not None else None

    def unknown_for(self, accel: str, release: str | None = None) -> Mapping[str, str]:
        """Features ``accel`` may or may not offer (the evidence cannot tell), with why."""
        if not self.releases:
            return self.unknown.get(accel, {})
        found = self.offer(accel, release)
        return found.unknown if found is not None else {}

    def offered(self, accel: str, release: str | None = None) -> FeatureSet | None:
        """What ``accel`` offers; for a catalog of ``release`` ("X.Y") when several were probed."""
        if not self.releases:
            return self.offers.get(accel)
        found = self.offer(accel, release)
        return found.features if found is not None else None

    def to_json(self) -> dict[str, Any]:
        """The snapshot: ``cpuver-host/2`` when probed with facts, else the v1 form it came in."""
        if self.facts is None or not self.releases:
            return self._to_json_v1()
        facts = self.facts
        cpu: dict[str, Any] = {"vendor": facts.vendor, "brand": facts.brand}
        for key in ("family", "model", "stepping", "microcode"):
            value = getattr(facts, key)
            if value is not None:
                cpu[key] = value
        out: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA, "host": self.name}
        if self.probed:
            out["probed"] = self.probed
        if self.method:
            out["method"] = self.method
        out["cpu"] = cpu
        if facts.kernel:
            out["kernel"] = facts.kernel
        out["vulnerabilities"] = dict(sorted(facts.vulnerabilities.items()))
        out["releases"] = {
            release: {
                accel: _offer_json(offer) for accel, offer in sorted(self.releases[release].items())
            }
            for release in sorted(self.releases, key=_release_key)
        }
        return out

    def _to_json_v1(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA_V1, "host": self.name}
        if self.vendor:
            out["vendor"] = self.vendor
        out["accelerators"] = {
            accel: {"features": sorted(features)} for accel, features in sorted(self.offers.items())
        }
        if self.provenance:
            out["provenance"] = dict(sorted(self.provenance.items()))
        return out


def _offer_json(offer: AccelOffer) -> dict[str, Any]:
    out: dict[str, Any] = {"features": sorted(offer.features), "provenance": offer.provenance()}
    if offer.unknown:
        out["unknown"] = dict(sorted(offer.unknown.items()))
    return out


def build(
    name: str,
    releases: Mapping[str, Mapping[str, AccelOffer]],
    facts: HostFacts,
    source: str = "local",
    probed: str | None = None,
    method: str | None = None,
) -> HostCapabilities:
    """A v2 host from its per-release offers; ``offers`` are the newest release's."""
    if not releases:
        raise HostError(f"{source}: releases: nothing was probed")
    newest = max(releases, key=_release_key)
    offers = {accel: offer.features for accel, offer in releases[newest].items()}
    provenance = {"method": method} if method else {}
    return HostCapabilities(
        name, offers, facts.vendor, source, provenance, releases, facts, probed, method
    )


def _release_key(release: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in release.split("."))
    except ValueError:
        return (0,)


def from_json(data: Any, source: str, features: FeatureTable | None = None) -> HostCapabilities:
    """Read a snapshot or a QMP expansion reply (``{"model": {"name": "host", "props": ...}}``)."""
    table = features or FeatureTable.bundled()
    if not isinstance(data, dict):
        raise HostError(f"{source}: expected a JSON object")
    if "return" in data and isinstance(data["return"], dict):
        data = data["return"]
    if "model" in data:
        return _from_expansion(data["model"], source, table)
    if "schema" in data:
        schema = data["schema"]
        if schema == SNAPSHOT_SCHEMA_V1:
            return _from_snapshot_v1(data, source, table)
        if schema == SNAPSHOT_SCHEMA:
            return _from_snapshot_v2(data, source, table)
        raise HostError(_schema_problem(schema, source))
    raise HostError(
        f"{source}: neither a cpuver host snapshot (no 'schema') nor a QMP "
        "query-cpu-model-expansion reply (no 'model')"
    )


_OTHER_DOCUMENTS = {
    "cpuver-guest/": "a saved cpuver guest (cpuver domain save)",
    "cpuver-pin/": "a cpuver CPU pin",
    "cpuver-kvm-dump/": "a recording of /dev/kvm (cpuver's KVM dump)",
}
"""Other cpuver documents, told by their schema, so a wrong file is named for what it is."""


def _schema_problem(schema: Any, source: str) -> str:
    for prefix, what in _OTHER_DOCUMENTS.items():
        if isinstance(schema, str) and schema.startswith(prefix):
            return f"{source}: {what}, not a host snapshot (schema {schema!r})"
    number = schema.removeprefix(_SCHEMA_PREFIX) if isinstance(schema, str) else ""
    if schema != number and _SCHEMA_NUMBER.fullmatch(number) and int(number) > 2:
        return (
            f"{source}: schema: {schema} is newer than this cpuver reads "
            f"({', '.join(READABLE_SCHEMAS)}); upgrade cpuver"
        )
    return (
        f"{source}: schema: {shown(schema)} is not a cpuver host snapshot schema "
        f"(this cpuver reads {', '.join(READABLE_SCHEMAS)})"
    )


def _from_expansion(model: Any, source: str, table: FeatureTable) -> HostCapabilities:
    if not isinstance(model, dict) or not isinstance(model.get("props"), dict):
        raise HostError(f"{source}: model.props: expected an object of CPU properties")
    name = model.get("name")
    if not isinstance(name, str) or name not in _MODEL_ACCELERATOR:
        raise HostError(
            f"{source}: model.name: expected 'host' (KVM) or 'max' (TCG), got {shown(name)}"
        )
    props: dict[str, Any] = model["props"]
    offered = frozenset(k for k, v in props.items() if v is True and k in table)
    vendor = props.get("vendor") if isinstance(props.get("vendor"), str) else None
    return HostCapabilities(source, {_MODEL_ACCELERATOR[name]: offered}, vendor, source)


def _features(names: Any, where: str, table: FeatureTable) -> FeatureSet:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise HostError(f"{where}: expected a list of feature names")
    try:
        return table.canonical_set(names)
    except UnknownFeature as err:
        raise HostError(f"{where}: unknown feature {shown(err.name)}") from err


def _unknown(data: Any, where: str, table: FeatureTable) -> dict[str, str]:
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise HostError(f"{where}: expected an object of feature -> why it is unknown")
    _features(list(data), where, table)  # every key must be a known feature
    return {table.canonical(name): why for name, why in data.items()}


def _host_name(data: dict[str, Any], source: str) -> str:
    name = data.get("host")
    if not is_name(name):
        raise HostError(str(InvalidName("host", name, f"{source}: host")))
    assert isinstance(name, str)
    return name


def _from_snapshot_v1(data: dict[str, Any], source: str, table: FeatureTable) -> HostCapabilities:
    name = _host_name(data, source)
    accelerators = data.get("accelerators")
    if not isinstance(accelerators, dict) or not accelerators:
        raise HostError(
            f'{source}: accelerators: expected an object like {{"kvm": {{"features": [...]}}}}'
        )
    offers: dict[str, FeatureSet] = {}
    for accel, entry in accelerators.items():
        _accelerator(accel, f"{source}: accelerators")
        where = f"{source}: accelerators.{accel}.features"
        names = entry.get("features") if isinstance(entry, dict) else None
        offers[accel] = _features(names, where, table)
    vendor = data.get("vendor")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict) or not all(isinstance(v, str) for v in provenance.values()):
        provenance = {}
    return HostCapabilities(
        name, offers, vendor if isinstance(vendor, str) else None, source, provenance
    )


def _accelerator(accel: str, where: str) -> str:
    if accel not in ACCELERATORS:
        raise HostError(
            f"{where}: {shown(accel)} is not an accelerator (expected {' or '.join(ACCELERATORS)})"
        )
    return accel


def _signature_number(cpu: dict[str, Any], key: str, where: str) -> int | None:
    value = _optional(cpu, key, int, where)
    if value is not None and not 0 <= value <= SIGNATURE_MAX:
        raise HostError(f"{where}{key}: expected a number from 0 to {SIGNATURE_MAX}")
    return value  # type: ignore[no-any-return]


def _optional(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise HostError(f"{where}{key}: expected a {kind.__name__}, got {shown(value)}")
    return value


def _from_snapshot_v2(data: dict[str, Any], source: str, table: FeatureTable) -> HostCapabilities:
    name = _host_name(data, source)
    cpu = data.get("cpu")
    if not isinstance(cpu, dict):
        raise HostError(f"{source}: cpu: expected an object with the CPU's vendor, brand, ...")
    vendor = cpu.get("vendor")
    if not isinstance(vendor, str):
        raise HostError(f"{source}: cpu.vendor: expected the CPU vendor as a string")
    where = f"{source}: cpu."
    vulnerabilities = data.get("vulnerabilities", {})
    if not isinstance(vulnerabilities, dict) or not all(
        isinstance(v, str) for v in vulnerabilities.values()
    ):
        raise HostError(f"{source}: vulnerabilities: expected an object of name -> text")
    facts = HostFacts(
        vendor=vendor,
        brand=_optional(cpu, "brand", str, where) or "",
        family=_signature_number(cpu, "family", where),
        model=_signature_number(cpu, "model", where),
        stepping=_signature_number(cpu, "stepping", where),
        microcode=_optional(cpu, "microcode", str, where),
        kernel=_optional(data, "kernel", str, f"{source}: "),
        vulnerabilities=vulnerabilities,
    )
    releases = data.get("releases")
    if not isinstance(releases, dict) or not releases:
        raise HostError(
            f"{source}: releases: expected an object of QEMU releases like "
            '{"10.0": {"kvm": {"features": [...], "provenance": {...}}}}'
        )
    parsed: dict[str, dict[str, AccelOffer]] = {}
    for release, accels in releases.items():
        if not _RELEASE.fullmatch(release):
            raise HostError(
                f"{source}: releases: {shown(release)} is not a QEMU release (expected X.Y)"
            )
        if not isinstance(accels, dict) or not accels:
            raise HostError(f"{source}: releases.{release}: expected an object of accelerators")
        parsed[release] = {}
        for accel, entry in accels.items():
            _accelerator(accel, f"{source}: releases.{release}")
            where = f"{source}: releases.{release}.{accel}"
            if not isinstance(entry, dict):
                raise HostError(f"{where}: expected an object with features and provenance")
            features = _features(entry.get("features"), f"{where}.features", table)
            provenance = entry.get("provenance")
            if not isinstance(provenance, dict):
                raise HostError(f"{where}.provenance: expected an object with the probe method")
            method = provenance.get("method")
            if method not in METHODS:
                raise HostError(
                    f"{where}.provenance.method: expected one of {', '.join(METHODS)}, "
                    f"got {shown(method)}"
                )
            pwhere = f"{where}.provenance."
            parsed[release][accel] = AccelOffer(
                features,
                method,
                _optional(provenance, "qemu", str, pwhere),
                _optional(provenance, "time", str, pwhere),
                _optional(provenance, "note", str, pwhere),
                _unknown(entry.get("unknown", {}), f"{where}.unknown", table),
            )
    return build(
        name,
        parsed,
        facts,
        source,
        _optional(data, "probed", str, f"{source}: "),
        _optional(data, "method", str, f"{source}: "),
    )
