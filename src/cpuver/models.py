"""Value objects for CPU models: signatures, flat definitions, deltas, versions, machine types.

Everything here is immutable and free of I/O. A :class:`Definition` is what QEMU's static
expansion says about one CPU: its signature and the set of enabled features (every other known
feature is off). Versions, accelerator defaults and machine-type compat rules are all expressed as
:class:`Delta` objects applied on top of a definition, in QEMU's order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cpuver.features import FeatureSet

SIGNATURE_FIELDS = ("vendor", "family", "model", "stepping", "model-id", "min-level", "min-xlevel")
"""Non-boolean properties of QEMU's static expansion, in QEMU's spelling."""

LEVEL_FIELDS = ("min-level", "min-xlevel")
"""Signature fields QEMU derives from the features (the lowest CPUID leaves they need)."""

IDENTITY_FIELDS = ("vendor", "family", "model", "stepping", "model-id")
"""Signature fields a guest OS may use to identify its CPU (a change may re-trigger activation)."""

SignatureValue = str | int


@dataclass(frozen=True, slots=True)
class Signature:
    vendor: str
    family: int
    model: int
    stepping: int
    model_id: str
    min_level: int
    min_xlevel: int

    def as_dict(self) -> dict[str, SignatureValue]:
        """The signature with QEMU's property names (``model-id``, ``min-level`` ...)."""
        return {name: getattr(self, _attr(name)) for name in SIGNATURE_FIELDS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Signature:
        return cls(**{_attr(name): values[name] for name in SIGNATURE_FIELDS})

    def with_changes(self, changes: dict[str, SignatureValue]) -> Signature:
        values: dict[str, Any] = {_attr(name): value for name, value in changes.items()}
        return replace(self, **values)


def ordered_signature(
    items: Iterable[tuple[str, SignatureValue]],
) -> tuple[tuple[str, SignatureValue], ...]:
    """Signature changes in QEMU's field order, so equal changes compare (and print) equal."""
    return tuple(sorted(items, key=lambda item: SIGNATURE_FIELDS.index(item[0])))


def _attr(qemu_name: str) -> str:
    return qemu_name.replace("-", "_")


@dataclass(frozen=True, slots=True)
class Delta:
    """A change to a definition: features switched on or off and signature fields set."""

    on: FeatureSet = frozenset()
    off: FeatureSet = frozenset()
    signature: tuple[tuple[str, SignatureValue], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.on or self.off or self.signature)

    @classmethod
    def between(cls, old: Definition, new: Definition) -> Delta:
        """The delta that turns ``old`` into ``new``."""
        old_sig, new_sig = old.signature.as_dict(), new.signature.as_dict()
        changed = tuple((k, new_sig[k]) for k in SIGNATURE_FIELDS if old_sig[k] != new_sig[k])
        return cls(new.features - old.features, old.features - new.features, changed)

    def then(self, later: Delta) -> Delta:
        """This delta followed by ``later`` (later wins on conflicts)."""
        on = (self.on - later.off) | later.on
        off = (self.off - later.on) | later.off
        sig = dict(self.signature)
        sig.update(later.signature)
        return Delta(on, off, ordered_signature(sig.items()))


@dataclass(frozen=True, slots=True)
class Definition:
    """A complete, flat CPU definition: signature plus enabled features."""

    signature: Signature
    features: FeatureSet

    def apply(self, delta: Delta) -> Definition:
        if not delta:
            return self
        features = (self.features - delta.off) | delta.on
        signature = (
            self.signature.with_changes(dict(delta.signature))
            if delta.signature
            else (self.signature)
        )
        return Definition(signature, features)


_VERSIONED_NAME = re.compile(r"^(?P<model>.+)-v(?P<number>[1-9][0-9]*)$")


def split_versioned_name(name: str) -> tuple[str, int] | None:
    """``'Haswell-v4'`` -> ``('Haswell', 4)``; ``None`` for names without a ``-vN`` suffix."""
    match = _VERSIONED_NAME.match(name)
    return (match["model"], int(match["number"])) if match else None


def version_number(versioned_name: str) -> int:
    """``'Haswell-v4'`` -> ``4``, for names known to be versioned."""
    split = split_versioned_name(versioned_name)
    if split is None:
        raise ValueError(f"{versioned_name!r} is not a versioned CPU model name")
    return split[1]


@dataclass(frozen=True, slots=True)
class Version:
    """One immutable definition of a model, as QEMU registers ``<model>-vN``."""

    model: str
    number: int
    definition: Definition
    aliases: tuple[str, ...] = ()
    note: str | None = None
    since: str | None = None
    deprecated: bool = False

    @property
    def name(self) -> str:
        return f"{self.model}-v{self.number}"


@dataclass(frozen=True, slots=True)
class Model:
    """A named family of versions (``Haswell``), ascending by number."""

    name: str
    versions: tuple[Version, ...]
    deprecated: bool = False

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, number: int) -> Version | None:
        for version in self.versions:
            if version.number == number:
                return version
        return None


class BareRule(StrEnum):
    """What an unversioned model name means under a machine type (QEMU's default_cpu_version)."""

    V1 = "v1"
    LATEST = "latest"
    LEGACY = "legacy"


@dataclass(frozen=True, slots=True)
class AccelCompat:
    """A machine type's rules under one accelerator only.

    microvm's split irqchip makes KVM offer ``kvm-msi-ext-dest-id`` (``delta``); machine types up
    to 2.1 do not apply KVM's ``svm=off`` default (``skipped``); ``type_deltas`` holds what
    differs for single type names beyond that (CPUID levels derived from the features; old
    machine types keep ``vme`` on some models under KVM).
    """

    accel: str
    delta: Delta = field(default_factory=Delta)
    skipped: FeatureSet = frozenset()
    type_deltas: tuple[tuple[str, Delta], ...] = ()

    def type_delta(self, type_name: str) -> Delta:
        return _lookup(self.type_deltas, type_name)


def _lookup(deltas: tuple[tuple[str, Delta], ...], name: str) -> Delta:
    for key, delta in deltas:
        if key == name:
            return delta
    return Delta()


@dataclass(frozen=True, slots=True)
class MachineType:
    """A machine type and the CPU compat rules it applies.

    ``global_delta`` applies to every CPU type (QEMU's ``TYPE_X86_CPU`` compat properties);
    ``type_deltas`` apply to one exact QOM type name only: QEMU's per-model compat properties
    (unversioned and pre-4.1 alias names) and what global properties do to single types (CPUID
    levels that are no longer raised automatically).
    """

    name: str
    bare: BareRule
    release: tuple[int, int] | None = None
    alias: str | None = None
    deprecated: bool = False
    global_delta: Delta = field(default_factory=Delta)
    type_deltas: tuple[tuple[str, Delta], ...] = field(default=())
    accel_compat: tuple[AccelCompat, ...] = ()
    """What this machine type does under one accelerator only."""
    versions: tuple[tuple[str, int], ...] = ()
    """Bare names this machine type maps to a version other than its rule's (model, number);
    QEMU itself never does this, a user catalog may (the seed maps pc-*-X.Y to the newest
    version not newer than X.Y)."""

    def version_for(self, model: str) -> int | None:
        for name, number in self.versions:
            if name == model:
                return number
        return None

    def compat_under(self, accel: str) -> AccelCompat | None:
        for compat in self.accel_compat:
            if compat.accel == accel:
                return compat
        return None

    def type_delta(self, type_name: str) -> Delta:
        return _lookup(self.type_deltas, type_name)


_MACHINE_RELEASE = re.compile(
    r"^pc-(?:i440fx|q35)-(?P<major>[0-9]+)\.(?P<minor>[0-9]+)(?:\.[0-9]+)?$"
)


def machine_release(name: str) -> tuple[int, int] | None:
    """The QEMU release a versioned pc machine type stands for (``pc-q35-7.2`` -> ``(7, 2)``)."""
    match = _MACHINE_RELEASE.match(name)
    return (int(match["major"]), int(match["minor"])) if match else None
