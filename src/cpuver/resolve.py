"""Turn a spec into one exact CPU definition, and say why (design.md §2).

* bare name: what the machine type makes of it, exactly as QEMU does;
* alias or ``-vN`` name, ``version=vN``: that version;
* ``version=latest``: the highest version; ``version=X.Y.Z``: the bare name under the machine
  type of release X.Y;
* ``version=best``: the highest version the host can run under the accelerator. Every version
  is tried (runnability is not monotone), and every rejected one is reported with its blockers.

A version is runnable when none of its enabled features is missing from what the host offers
(QEMU's ``unavailable-features``). Feature changes apply after the version, as QEMU applies
``-cpu`` options after the machine type's compat properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from cpuver.catalog import Catalog, NameKind, NameRef
from cpuver.errors import (
    HostNeeded,
    InvalidSpec,
    NotRunnable,
    UnknownFeature,
    UnknownRelease,
    UnknownVersion,
)
from cpuver.features import FeatureSet, FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.models import BareRule, Definition, Delta, MachineType, Version
from cpuver.spec import FeatureChange, Spec, option_like, parse

SPEC_MEMO_CHARS = 256
"""Specs up to this long are memoized (4,096 of them at most: about 1 MB); longer ones, rare
and possibly hostile, are parsed each time."""
_parse_memo = lru_cache(maxsize=4096)(parse)


def _parse(text: str) -> Spec:
    """Specs are immutable, and services resolve the same few texts over and over."""
    return _parse_memo(text) if len(text) <= SPEC_MEMO_CHARS else parse(text)


class Rule(StrEnum):
    MACHINE = "machine-type"
    ALIAS = "alias"
    EXPLICIT = "explicit"
    LATEST = "latest"
    RELEASE = "release"
    BEST = "best"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The answer for one spec: the definition, the rule that chose it and why others lost."""

    spec: str
    name: str
    """Canonical name: ``Haswell-v4``, or ``Haswell-2.4.0`` for a pre-versioning definition."""
    version: Version
    """The version the definition starts from (for QEMU's ``-cpu``)."""
    definition: Definition
    """Effective definition under the machine type and accelerator, changes applied."""
    changes: Delta
    """What to add to ``version`` on the command line to get ``definition`` on this machine."""
    rule: Rule
    reason: str
    machine: str
    accel: str
    blockers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Rejected versions (best) with the features the host lacks, highest first."""
    missing: tuple[str, ...] = ()
    """Features of the chosen definition the host lacks (only when a host was given)."""
    enforce: bool = False
    unknown: tuple[tuple[str, str], ...] = ()
    """Blockers (of the choice or of rejected versions) the host's evidence cannot decide, with
    why: counted as missing, never guessed offered."""
    notes: tuple[str, ...] = ()
    """What the answer rests on that the user did not ask for (a host probed for another
    QEMU release than the catalog's)."""

    @property
    def model(self) -> str:
        return self.version.model


@dataclass(frozen=True, slots=True)
class _Choice:
    """Which version a rule picked, its definition before feature changes, and its name."""

    rule: Rule
    reason: str
    version: Version
    start: Definition
    name: str


class Resolver:
    """Resolves specs against one catalog, machine type, accelerator and (optionally) host."""

    def __init__(
        self,
        catalog: Catalog,
        machine: str | None = None,
        accel: str = "kvm",
        host: HostCapabilities | None = None,
        features: FeatureTable | None = None,
    ) -> None:
        self.catalog = catalog
        self.machine = catalog.machine(machine)
        self.accel = catalog.accelerator(accel).name
        self.host = host
        self.features = features or FeatureTable.bundled()
        release = ".".join(catalog.release.split(".")[:2])
        self.offers: FeatureSet | None = host.offered(self.accel, release) if host else None
        self.notes = _release_notes(host, release)
        if self.offers is None and self.accel == "tcg":
            # TCG offers the same everywhere: the catalog records it from QEMU's own filter.
            self.offers = catalog.tcg_offers
        self.host_vendor = host.vendor if host else None
        self.unknown = host.unknown_for(self.accel, release) if host else {}
        """Features the host's evidence cannot tell offered or not (never in ``offers``)."""
        self._unavailable: dict[str, tuple[str, ...]] = {}

    def _where(self) -> str:
        """The host answers are for, as errors name it."""
        if self.host is None:
            return f"{self.accel.upper()} (the catalog's own offers)"
        if self.host.source.startswith("pool "):
            return self.host.source
        return f"host {self.host.name}"

    def resolve(self, text: str) -> Resolution:
        spec = _parse(text)
        ref = self.catalog.lookup(spec.name)
        user = self._user_changes(spec)
        if spec.version is not None and ref.kind is not NameKind.BARE:
            raise InvalidSpec(
                f"{spec.name!r} already names a version; use the bare model name "
                f"{ref.model.name!r} with version=",
                text,
                0,
                len(spec.name),
            )
        selector = spec.version
        if selector is not None and selector.kind == "best":
            return self._best(text, spec, ref, user)
        choice = self._choose(ref, spec)
        definition = choice.start.apply(user)
        missing = self.blockers(definition)
        if spec.enforce and missing:
            raise NotRunnable(text, {choice.name: missing}, self._where())
        return self._answer(
            text,
            spec,
            choice.version,
            definition,
            choice.rule,
            choice.reason,
            choice.name,
            missing=missing,
        )

    def effective(self, ref: NameRef, machine: MachineType | None = None) -> Definition:
        return self.catalog.effective(ref, machine or self.machine, self.accel, self.host_vendor)

    def unavailable(self, ref: NameRef) -> tuple[str, ...]:
        """QEMU's ``unavailable-features`` of a name on this host (empty without a host)."""
        found = self._unavailable.get(ref.name)
        if found is None:
            found = self._unavailable[ref.name] = self.blockers(self.effective(ref))
        return found

    def blockers(self, definition: Definition) -> tuple[str, ...]:
        """Enabled features the host does not offer (empty without a host)."""
        if self.offers is None:
            return ()
        return tuple(sorted(definition.features - self.offers))

    def _user_changes(self, spec: Spec) -> Delta:
        on = frozenset(self._feature(c) for c in spec.changes if c.enabled)
        off = frozenset(self._feature(c) for c in spec.changes if not c.enabled)
        return Delta(on, off)

    def _feature(self, change: FeatureChange) -> str:
        """A changed feature's canonical name; an unknown one that looks like a misspelt option
        (``bset=on``) is suggested as that option too."""
        try:
            return self.features.canonical(change.name)
        except UnknownFeature as err:
            option = option_like(change.name)
            if option is None or option == "version":
                raise
            spelled = (
                "enforce" if option == "enforce" else f"best={'on' if change.enabled else 'off'}"
            )
            raise UnknownFeature(change.name, (*err.suggestions, spelled)) from None

    def _versioned(self, version: Version) -> NameRef:
        return NameRef(
            version.name, self.catalog.models[version.model], NameKind.VERSIONED, version
        )

    def _choose(self, ref: NameRef, spec: Spec) -> _Choice:
        selector = spec.version
        machine = self.machine.name
        if selector is None:
            if ref.kind is NameKind.VERSIONED and ref.version:
                return self._plain(Rule.EXPLICIT, f"{ref.name} names that version", ref.version)
            if ref.kind is NameKind.ALIAS and ref.version:
                return self._named(
                    Rule.ALIAS,
                    f"{ref.name} is an alias of {ref.version.name}",
                    ref,
                    ref.version,
                    self.machine,
                )
            version = self.catalog.bare_version(ref.model, self.machine)
            if self.machine.bare is BareRule.LEGACY:
                reason = (
                    f"machine type {machine} predates versioned CPU models: {ref.name} is "
                    f"its original definition with {machine}'s compat properties"
                )
            else:
                reason = f"machine type {machine} maps {ref.name} to {version.name}"
            return self._named(Rule.MACHINE, reason, ref, version, self.machine)
        if selector.kind == "latest":
            version = ref.model.latest
            reason = f"{version.name} is the highest version of {ref.name}"
            return self._plain(Rule.LATEST, reason, version)
        if selector.kind == "number" and selector.number is not None:
            found = ref.model.version(selector.number)
            if found is None:
                raise UnknownVersion(
                    f"{ref.name}-v{selector.number}", [v.name for v in ref.model.versions]
                )
            return self._plain(Rule.EXPLICIT, f"version={selector} asked for {found.name}", found)
        assert selector.release is not None
        era = self._machine_of_release(selector.release)
        reason = f"{ref.name} as the bare name was defined under machine type {era.name}"
        return self._named(
            Rule.RELEASE, reason, ref, self.catalog.bare_version(ref.model, era), era
        )

    def _plain(self, rule: Rule, reason: str, version: Version) -> _Choice:
        """``version`` itself, as its ``-vN`` name gives it."""
        return _Choice(
            rule, reason, version, self.effective(self._versioned(version)), version.name
        )

    def _named(
        self, rule: Rule, reason: str, ref: NameRef, version: Version, era: MachineType
    ) -> _Choice:
        """``ref`` under ``era``: named after ``version``, or after ``era``'s release when that
        machine type's compat properties changed it (``Haswell-2.4.0``)."""
        start = self.effective(ref, era)
        if start == self.effective(self._versioned(version), era):
            name = version.name
        elif era.release:
            name = f"{ref.name}-{era.release[0]}.{era.release[1]}.0"
        else:
            name = f"{ref.name}@{era.name}"
        return _Choice(rule, reason, version, start, name)

    def _machine_of_release(self, release: tuple[int, int, int]) -> MachineType:
        wanted = (release[0], release[1])
        for family in ("pc-i440fx", "pc-q35"):
            for machine in self.catalog.machines.values():
                if machine.release == wanted and machine.name.startswith(family):
                    return machine
        known = sorted({m.release for m in self.catalog.machines.values() if m.release})
        raise UnknownRelease(
            ".".join(map(str, release)), [f"{major}.{minor}.0" for major, minor in known[-3:]]
        )

    def _best(self, text: str, spec: Spec, ref: NameRef, user: Delta) -> Resolution:
        if self.offers is None:
            raise HostNeeded(f"{text}: version=best needs what the host offers under {self.accel}")
        tried = [
            (version, definition, self.blockers(definition))
            for version in reversed(ref.model.versions)
            for definition in [self.effective(self._versioned(version)).apply(user)]
        ]
        rejected = [(version.name, missing) for version, _d, missing in tried if missing]
        runnable = [(version, definition) for version, definition, missing in tried if not missing]
        if not runnable:
            raise NotRunnable(text, dict(rejected), self._where())
        version, definition = runnable[0]
        newer = ref.model.latest.number - version.number
        reason = (
            f"{version.name} is the highest version of {ref.name} this host can run "
            f"under {self.accel}" + (f" ({newer} newer rejected)" if newer else "")
        )
        return self._answer(text, spec, version, definition, Rule.BEST, reason, blockers=rejected)

    def _answer(
        self,
        text: str,
        spec: Spec,
        version: Version,
        definition: Definition,
        rule: Rule,
        reason: str,
        name: str | None = None,
        blockers: Sequence[tuple[str, tuple[str, ...]]] = (),
        missing: tuple[str, ...] = (),
    ) -> Resolution:
        changes = Delta.between(self.effective(self._versioned(version)), definition)
        blocking = set(missing).union(*(m for _n, m in blockers))
        unknown = tuple((f, self.unknown[f]) for f in sorted(blocking) if f in self.unknown)
        return Resolution(
            spec=text,
            name=name or version.name,
            version=version,
            definition=definition,
            changes=changes,
            rule=rule,
            reason=reason,
            machine=self.machine.name,
            accel=self.accel,
            blockers=tuple(blockers),
            missing=missing,
            enforce=spec.enforce,
            unknown=unknown,
            notes=self.notes,
        )


def _release_notes(host: HostCapabilities | None, release: str) -> tuple[str, ...]:
    """Say so when the host snapshot was not probed for the catalog's QEMU release: its offers
    for another release are used (the newest older one), never silently."""
    used = host.release_for(release) if host is not None else None
    if host is None or used is None or used == release:
        return ()
    return (
        f"host {host.name} was probed for QEMU {', '.join(host.releases)}, not "
        f"{release}: its QEMU {used} offers are used (probe it with QEMU {release}, or "
        f"choose --qemu {used})",
    )
