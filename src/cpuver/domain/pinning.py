"""Pins: a resolution frozen into a guest's persistent definition (design.md §1 "pin").

A :class:`Pin` records the canonical versioned name, every feature the catalog's QEMU build knows
as explicitly on or off, the signature, the machine type, accelerator and the catalog it was made
with, and a ``fingerprint``: the SHA-256 of a canonical JSON of the guest-visible CPU (version,
features on/off, signature, machine type). A pin never changes when a newer catalog is used:
nothing here re-resolves. :func:`check` says what the catalog in use thinks of a pin (version
gone or deprecated, features unknown to its QEMU build); :func:`qemu_cpu_arg` is the ``-cpu``
argument that makes that catalog's QEMU build exactly the pinned CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cpuver.catalog import Catalog, NameKind, NameRef
from cpuver.domain import DomainError
from cpuver.domain.pinmeta import fingerprint
from cpuver.errors import UnknownAccelerator, UnknownMachineType, UnknownName
from cpuver.features import FeatureSet, FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.models import SIGNATURE_FIELDS, Definition, Delta, Signature, Version
from cpuver.resolve import Resolution

PIN_SCHEMA = "cpuver-pin/1"


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names)))


@dataclass(frozen=True, slots=True)
class Pin:
    """One guest's CPU, frozen: every known feature on or off, the signature, the machine type."""

    spec: str
    """The spec as the user gave it (``Haswell,version=best``)."""
    rule: str
    """The resolution rule that chose the version (``best``, ``explicit``, ...)."""
    model: str
    version: str
    """The versioned name QEMU starts from (``Haswell-v4``)."""
    name: str
    """The resolution's canonical name (``Haswell-v4``, ``Haswell-2.4.0``)."""
    machine: str
    accel: str
    catalog_release: str
    catalog_build: str
    features_on: tuple[str, ...]
    """Every enabled feature, sorted."""
    features_off: tuple[str, ...]
    """Every other feature the catalog's QEMU build knows, sorted."""
    signature: Signature
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        for attr in ("features_on", "features_off"):
            object.__setattr__(self, attr, _sorted(getattr(self, attr)))
        both = set(self.features_on) & set(self.features_off)
        if both:
            raise DomainError(f"pin of {self.name}: features both on and off: {sorted(both)}")
        object.__setattr__(self, "fingerprint", fingerprint_of(self))

    @property
    def on(self) -> FeatureSet:
        return frozenset(self.features_on)

    @property
    def off(self) -> FeatureSet:
        return frozenset(self.features_off)

    @property
    def definition(self) -> Definition:
        """The pinned CPU as a flat definition (enabled features and signature)."""
        return Definition(self.signature, self.on)

    @property
    def release(self) -> str:
        """The catalog's QEMU release as ``X.Y`` (how host snapshots key their offers)."""
        return ".".join(self.catalog_release.split(".")[:2])

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PIN_SCHEMA,
            "spec": self.spec,
            "rule": self.rule,
            "model": self.model,
            "version": self.version,
            "name": self.name,
            "machine": self.machine,
            "accel": self.accel,
            "catalog": {"release": self.catalog_release, "build": self.catalog_build},
            "features": {"on": list(self.features_on), "off": list(self.features_off)},
            "signature": self.signature.as_dict(),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "pin") -> Pin:
        """Read :meth:`to_json` output; errors name the field (``pin: features.on: ...``)."""
        obj = _object(data, source)
        schema = obj.get("schema")
        if schema != PIN_SCHEMA:
            raise DomainError(f"{source}: schema: expected {PIN_SCHEMA!r}, got {schema!r}")
        catalog = _object(obj.get("catalog"), f"{source}: catalog")
        features = _object(obj.get("features"), f"{source}: features")
        made = cls(
            spec=_text(obj, "spec", source),
            rule=_text(obj, "rule", source),
            model=_text(obj, "model", source),
            version=_text(obj, "version", source),
            name=_text(obj, "name", source),
            machine=_text(obj, "machine", source),
            accel=_text(obj, "accel", source),
            catalog_release=_text(catalog, "release", f"{source}: catalog"),
            catalog_build=_text(catalog, "build", f"{source}: catalog"),
            features_on=_names(features, "on", f"{source}: features"),
            features_off=_names(features, "off", f"{source}: features"),
            signature=_signature(obj.get("signature"), f"{source}: signature"),
        )
        stored = obj.get("fingerprint")
        if stored is not None and stored != made.fingerprint:
            raise DomainError(
                f"{source}: fingerprint: {stored!r} does not match the pinned CPU "
                f"({made.fingerprint}); the pin was edited or is corrupt"
            )
        return made


def fingerprint_of(pin: Pin) -> str:
    """SHA-256 (hex) of the canonical JSON of the guest-visible CPU: a pure function of it."""
    return fingerprint(
        pin.version, pin.machine, pin.features_on, pin.features_off, pin.signature.as_dict()
    )


def pin(resolution: Resolution, catalog: Catalog) -> Pin:
    """Freeze ``resolution`` (made with ``catalog``): every known feature explicitly on or off."""
    on = resolution.definition.features
    known = catalog.known_features or frozenset(FeatureTable.bundled())
    return Pin(
        spec=resolution.spec,
        rule=str(resolution.rule),
        model=resolution.model,
        version=resolution.version.name,
        name=resolution.name,
        machine=resolution.machine,
        accel=resolution.accel,
        catalog_release=catalog.release,
        catalog_build=catalog.build,
        features_on=tuple(on),
        features_off=tuple(known - on),
        signature=resolution.definition.signature,
    )


def _version_in(pin: Pin, catalog: Catalog) -> Version | None:
    try:
        ref = catalog.lookup(pin.version)
    except UnknownName:
        return None
    return ref.version if ref.kind is NameKind.VERSIONED else None


def version_definition(pin: Pin, catalog: Catalog) -> Definition:
    """The pinned version's own definition in ``catalog`` under the pin's machine and accel."""
    version = _version_in(pin, catalog)
    if version is None:
        raise DomainError(
            f"pin {pin.name}: version {pin.version} does not exist in catalog {catalog.release}"
        )
    try:
        machine = catalog.machine(pin.machine)
        catalog.accelerator(pin.accel)
    except (UnknownMachineType, UnknownAccelerator) as err:
        raise DomainError(f"pin {pin.name}: {err} in catalog {catalog.release}") from err
    ref = NameRef(version.name, catalog.models[version.model], NameKind.VERSIONED, version)
    return catalog.effective(ref, machine, pin.accel)


def pin_delta(pin: Pin, catalog: Catalog) -> Delta:
    """What to add to the pinned version, as ``catalog`` defines it, to get the pinned CPU.

    Every feature the version enables that the pin does not (including ones the pin's catalog
    did not know) is switched off; every pinned-on feature it lacks is switched on.
    """
    base = version_definition(pin, catalog)
    unknown = sorted(pin.on - catalog.known_features) if catalog.known_features else []
    if unknown:
        raise DomainError(
            f"pin {pin.name}: QEMU {catalog.release} does not know pinned feature(s) "
            f"{', '.join(unknown)}"
        )
    return Delta.between(base, pin.definition)


def qemu_cpu_arg(pin: Pin, catalog: Catalog) -> str:
    """``Haswell-v4,pcid=on,hle=off,enforce``: the version, then every signature field and
    feature where the pin differs from the version's definition in ``catalog``, then enforce."""
    delta = pin_delta(pin, catalog)
    props = [f"{name}={_escape(value)}" for name, value in delta.signature]
    props += [f"{name}=on" for name in sorted(delta.on)]
    props += [f"{name}=off" for name in sorted(delta.off)]
    return ",".join([pin.version, *props, "enforce"])


def _escape(value: str | int) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return str(value).replace(",", ",,")


def missing_on(pin: Pin, host: HostCapabilities, release: str | None = None) -> tuple[str, ...]:
    """The pin's enabled features ``host`` does not offer under the pin's accelerator.

    ``release`` ("X.Y") picks the host's probe for that QEMU release; default: the pin's catalog
    release (the snapshot's nearest older probe when that one was not probed).
    """
    offered = host.offered(pin.accel, release or pin.release)
    if offered is None:
        raise DomainError(
            f"host {host.name!r} has no {pin.accel} capabilities (probe it under {pin.accel})"
        )
    return tuple(sorted(pin.on - offered))


def check(pin: Pin, catalog: Catalog) -> list[str]:
    """What ``catalog`` (the one in use) says about a pin; empty when all is well.

    The pin itself never changes: a problem here is for the user to act on (``update_cpu``).
    """
    problems: list[str] = []
    where = f"catalog {catalog.release}"
    version = _version_in(pin, catalog)
    if version is None:
        problems.append(f"pinned version {pin.version} no longer exists in {where}")
    else:
        if version.deprecated:
            problems.append(f"pinned version {pin.version} is deprecated in {where}")
        model = catalog.models[version.model]
        if model.deprecated and not version.deprecated:
            problems.append(f"model {model.name} of {pin.version} is deprecated in {where}")
    try:
        machine = catalog.machine(pin.machine)
    except UnknownMachineType:
        problems.append(f"pinned machine type {pin.machine} does not exist in {where}")
    else:
        if machine.deprecated:
            problems.append(f"pinned machine type {pin.machine} is deprecated in {where}")
    if pin.accel not in catalog.accelerators:
        problems.append(f"accelerator {pin.accel} is unknown to {where}")
    if catalog.known_features:
        unknown = sorted(pin.on - catalog.known_features)
        if unknown:
            problems.append(
                f"QEMU {catalog.release} does not know pinned feature(s) {', '.join(unknown)}"
            )
    return problems


# ------------------------------------------------------------------------------ JSON helpers


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DomainError(f"{where}: expected a JSON object")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise DomainError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    return value


def _names(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise DomainError(f"{where}.{key}: expected a list of feature names")
    if len(set(value)) != len(value):
        raise DomainError(f"{where}.{key}: a feature is listed twice")
    table = FeatureTable.bundled()
    for name in value:
        if name not in table or table.canonical(name) != name:
            raise DomainError(f"{where}.{key}: {name!r} is not a QEMU feature name")
    return tuple(value)


def _signature(value: Any, where: str) -> Signature:
    obj = _object(value, where)
    for name in SIGNATURE_FIELDS:
        if name not in obj:
            raise DomainError(f"{where}.{name}: missing")
        item = obj[name]
        want_str = name in ("vendor", "model-id")
        ok = isinstance(item, str) if want_str else isinstance(item, int)
        if not ok or isinstance(item, bool):
            kind = "a string" if want_str else "an integer"
            raise DomainError(f"{where}.{name}: expected {kind}, got {item!r}")
    extra = sorted(set(obj) - set(SIGNATURE_FIELDS))
    if extra:
        raise DomainError(f"{where}: unknown field(s) {', '.join(extra)}")
    return Signature.from_dict(dict(obj))
