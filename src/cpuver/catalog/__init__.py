"""The catalog: every model, version, machine type and accelerator rule of one QEMU build.

A catalog answers "what does this CPU name mean under this machine type and accelerator" exactly
as QEMU does: version definition, then accelerator defaults, then the machine type's compat
properties (global ones, then the ones for that exact type name). Data is loaded by
:mod:`cpuver.catalog.files`; this module holds no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cpuver.errors import UnknownAccelerator, UnknownMachineType, UnknownModel, UnknownVersion
from cpuver.features import FeatureSet
from cpuver.models import (
    BareRule,
    Definition,
    Delta,
    MachineType,
    Model,
    Version,
    split_versioned_name,
)

ACCELERATORS = ("kvm", "tcg")


MEMO_VENDORS = frozenset(
    {"GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "  Shanghai  "}
)
"""x86 CPUID vendor strings whose effective definitions :meth:`Catalog.effective` memoizes."""


@dataclass(frozen=True, slots=True)
class Accelerator:
    """What an accelerator adds on top of every named model (QEMU's kvm/tcg default props)."""

    name: str
    defaults: Delta = field(default_factory=Delta)
    host_vendor: bool = False
    """True when the accelerator reports the host's CPU vendor instead of the model's (KVM)."""
    levels: tuple[tuple[str, Delta], ...] = ()
    """Per version: ``min-level``/``min-xlevel`` as QEMU derives them once this accelerator's
    defaults changed the features (KVM turns ``svm`` off, which lowers ``min-xlevel``)."""

    def for_version(self, version_name: str) -> Delta:
        for name, delta in self.levels:
            if name == version_name:
                return self.defaults.then(delta)
        return self.defaults


class NameKind(StrEnum):
    BARE = "bare"
    VERSIONED = "versioned"
    ALIAS = "alias"


@dataclass(frozen=True, slots=True)
class NameRef:
    """A CPU model name as the catalog understands it."""

    name: str
    model: Model
    kind: NameKind
    version: Version | None = None
    """The fixed version for versioned and alias names; None for bare names."""


@dataclass(frozen=True, slots=True)
class Catalog:
    release: str
    """The QEMU release this catalog describes (``10.0.2``)."""
    build: str
    """The exact QEMU build it was imported from (``-version`` line), or how it was derived."""
    models: Mapping[str, Model]
    machines: Mapping[str, MachineType]
    accelerators: Mapping[str, Accelerator]
    tcg_offers: FeatureSet
    """Features TCG can give a guest (``max`` under TCG)."""
    source: str = "bundled"
    known_features: FeatureSet = frozenset()
    """Every CPU feature this QEMU build has a property for (newer names are unknown to it)."""
    _aliases: dict[str, Version] = field(default_factory=dict, compare=False, repr=False)
    _machine_aliases: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    _names: list[NameRef] = field(default_factory=list, compare=False, repr=False)
    _effective: dict[tuple[str, str, str, str | None], Definition] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for model in self.models.values():
            for version in model.versions:
                for alias in version.aliases:
                    self._aliases[alias] = version
        for machine in self.machines.values():
            if machine.alias:
                self._machine_aliases[machine.alias] = machine.name

    @property
    def release_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.release.split("."))

    def names(self) -> tuple[NameRef, ...]:
        """Every name QEMU accepts for a model: bare, then each version with its aliases."""
        if not self._names:
            self._names.extend(self._every_name())
        return tuple(self._names)

    def _every_name(self) -> Iterator[NameRef]:
        for model in self.models.values():
            yield NameRef(model.name, model, NameKind.BARE)
            for version in model.versions:
                yield NameRef(version.name, model, NameKind.VERSIONED, version)
                for alias in version.aliases:
                    yield NameRef(alias, model, NameKind.ALIAS, version)

    def lookup(self, name: str) -> NameRef:
        """Classify ``name`` as a bare, versioned or alias name of a known model."""
        if name in self.models:
            return NameRef(name, self.models[name], NameKind.BARE)
        if name in self._aliases:
            target = self._aliases[name]
            return NameRef(name, self.models[target.model], NameKind.ALIAS, target)
        versioned = split_versioned_name(name)
        if versioned and versioned[0] in self.models:
            model = self.models[versioned[0]]
            version = model.version(versioned[1])
            if version is None:
                known = [v.name for v in model.versions]
                raise UnknownVersion(name, known)
            return NameRef(name, model, NameKind.VERSIONED, version)
        every = [*self.models, *self._aliases]
        raise UnknownModel(name, difflib.get_close_matches(name, every, n=3, cutoff=0.6))

    def model(self, name: str) -> Model:
        return self.lookup(name).model

    def machine(self, name: str | None) -> MachineType:
        """A machine type by name or alias (``q35``); ``None`` gives the default machine type."""
        if name is None:
            return self.machines[self.default_machine]
        resolved = self._machine_aliases.get(name, name)
        if resolved not in self.machines:
            suggestions = difflib.get_close_matches(name, list(self.machines), n=3, cutoff=0.6)
            raise UnknownMachineType(name, suggestions)
        return self.machines[resolved]

    @property
    def default_machine(self) -> str:
        """The newest ``pc-q35`` machine type (what a modern management layer picks)."""
        q35 = [m for m in self.machines.values() if m.name.startswith("pc-q35-") and m.release]
        if not q35:
            return next(iter(self.machines))
        return max(q35, key=lambda m: (m.release, m.name)).name

    def accelerator(self, name: str) -> Accelerator:
        if name not in self.accelerators:
            raise UnknownAccelerator(name, list(self.accelerators))
        return self.accelerators[name]

    def bare_version(self, model: Model, machine: MachineType) -> Version:
        """The version a bare name starts from under ``machine`` (v1 for legacy machines)."""
        mapped = machine.version_for(model.name)
        if mapped is not None:
            return model.version(mapped) or model.versions[0]
        if machine.bare is BareRule.LATEST:
            return model.latest
        return model.versions[0]

    def alias_of(self, ref: NameRef, machine: MachineType) -> str | None:
        """What ``query-cpu-definitions`` reports as ``alias-of`` for this name.

        Machine types from before versioned models report no aliases at all, not even for
        alias names (their definition still is the aliased version's).
        """
        if machine.bare is BareRule.LEGACY:
            return None
        if ref.kind is NameKind.ALIAS and ref.version is not None:
            return ref.version.name
        if ref.kind is NameKind.BARE:
            return self.bare_version(ref.model, machine).name
        return None

    def effective(
        self, ref: NameRef, machine: MachineType, accel: str, host_vendor: str | None = None
    ) -> Definition:
        """The definition QEMU builds for ``ref`` under ``machine`` and ``accel``.

        Order as in QEMU: version, accelerator defaults, then the machine type's compat
        properties: global ones, then what applies to this exact type name.
        """
        if host_vendor is not None and host_vendor not in MEMO_VENDORS:
            # a vendor string no CPU has (snapshots are user input): not memoized, so the
            # memo stays bounded by the catalog's names, machines and accelerators
            return self._build(ref, machine, accel, host_vendor)
        key = (ref.name, machine.name, accel, host_vendor)
        cached = self._effective.get(key)
        if cached is None:
            cached = self._effective[key] = self._build(ref, machine, accel, host_vendor)
        return cached

    def _build(
        self, ref: NameRef, machine: MachineType, accel: str, host_vendor: str | None
    ) -> Definition:
        accelerator = self.accelerator(accel)
        version = ref.version or self.bare_version(ref.model, machine)
        defaults = accelerator.for_version(version.name)
        compat = machine.compat_under(accel)
        if compat is not None and compat.skipped:
            defaults = Delta(
                defaults.on - compat.skipped, defaults.off - compat.skipped, defaults.signature
            )
        definition = version.definition.apply(defaults).apply(machine.global_delta)
        if compat is not None:
            definition = definition.apply(compat.delta)
        definition = definition.apply(machine.type_delta(ref.name))
        if compat is not None:
            definition = definition.apply(compat.type_delta(ref.name))
        if accelerator.host_vendor and host_vendor:
            definition = definition.apply(Delta(signature=(("vendor", host_vendor),)))
        return definition
