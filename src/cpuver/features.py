"""Feature identity: QEMU's x86 CPU feature names, their spellings and their CPUID/MSR bits.

Every other module speaks of features by QEMU's canonical name (``sse4.1``, ``lahf-lm``); this
module turns whatever a user or a host report says (QEMU alternate spellings, Linux
``/proc/cpuinfo`` flags, libvirt CPU map names) into those names, and back into libvirt's. The
table is generated data bundled with the package (``tools/build_feature_table.py``), so the
package needs neither QEMU, libvirt nor the shared facts.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

from cpuver.errors import CatalogError, UnknownFeature

# Sets of canonical feature names: plain frozensets keep set algebra fast and hashable.
FeatureSet: TypeAlias = frozenset[str]

_BUNDLED_RESOURCE = "catalog/data/features.json"
_MAX_SUGGESTIONS = 3


@dataclass(frozen=True, slots=True)
class CpuidBit:
    """One bit of a CPUID leaf's output register; ``subleaf`` is None for unindexed leaves."""

    word: str
    leaf: int
    subleaf: int | None
    register: str
    bit: int


@dataclass(frozen=True, slots=True)
class MsrBit:
    """One bit of a model-specific register QEMU exposes as a feature word (VMX caps, ...)."""

    word: str
    index: int
    bit: int


Location: TypeAlias = CpuidBit | MsrBit


@dataclass(frozen=True, slots=True)
class Feature:
    """One QEMU feature name and where it lives.

    A few names set two bits of their word (``kvmclock``, ``vmx-invept-single-context``), so
    ``locations`` holds every bit and ``location`` is its first; give either one.
    ``libvirt_name`` is the name libvirt's CPU map gives the same bit (``pclmuldq`` for
    ``pclmulqdq``); None when libvirt has no name for it, so a libvirt ``<cpu>`` cannot say it.
    """

    name: str
    location: Location | None
    aliases: tuple[str, ...] = ()
    linux_name: str | None = None
    since: str | None = None
    locations: tuple[Location, ...] = ()
    libvirt_name: str | None = None

    def __post_init__(self) -> None:
        if not self.locations and self.location is not None:
            object.__setattr__(self, "locations", (self.location,))
        elif self.locations and self.location != self.locations[0]:
            raise ValueError(f"feature {self.name!r}: location is not the first of its locations")


def _lookup_key(spelling: str) -> str:
    """QEMU's option parser reads every "_" in a feature name as "-"; so do we."""
    return spelling.replace("_", "-")


def _claim(spellings: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map each spelling to its feature, refusing one spelling for two features."""
    claimed: dict[str, str] = {}
    for spelling, name in spellings:
        if claimed.setdefault(spelling, name) != name:
            raise ValueError(f"spelling {spelling!r} names both {claimed[spelling]!r} and {name!r}")
    return claimed


class FeatureTable:
    """All known features, resolvable by any accepted spelling.

    When a Linux or libvirt name is spelled like another feature's QEMU name or alias, the QEMU
    meaning wins, because a QEMU command line must mean what QEMU makes of it; when a Linux name is
    spelled like another feature's libvirt name, the libvirt meaning wins, because cpuver reads
    back the libvirt XML it writes.
    """

    __slots__ = ("_by_libvirt_name", "_by_linux_name", "_canonical_by_key", "_features")

    def __init__(self, features: Iterable[Feature]) -> None:
        by_name: dict[str, Feature] = {}
        for feature in features:
            if feature.name in by_name:
                raise ValueError(f"feature {feature.name!r} is listed twice")
            by_name[feature.name] = feature
        self._features = dict(sorted(by_name.items()))
        self._by_linux_name = _claim(
            (feature.linux_name, feature.name)
            for feature in self._features.values()
            if feature.linux_name is not None
        )
        self._by_libvirt_name = _claim(
            (feature.libvirt_name, feature.name)
            for feature in self._features.values()
            if feature.libvirt_name is not None
        )
        qemu_spellings = _claim(
            (_lookup_key(spelling), feature.name)
            for feature in self._features.values()
            for spelling in (feature.name, *feature.aliases)
        )
        self._canonical_by_key = (
            {_lookup_key(linux): name for linux, name in self._by_linux_name.items()}
            | {_lookup_key(libvirt): name for libvirt, name in self._by_libvirt_name.items()}
            | qemu_spellings
        )

    @staticmethod
    def bundled() -> FeatureTable:
        """The table shipped with cpuver (loaded once per process)."""
        return _load_bundled()

    def canonical(self, name: str) -> str:
        """QEMU's canonical name for any accepted spelling; UnknownFeature with hints otherwise."""
        canonical = self._canonical_by_key.get(_lookup_key(name))
        if canonical is None:
            raise UnknownFeature(name, self._suggestions(name))
        return canonical

    def canonical_set(self, names: Sequence[str]) -> FeatureSet:
        """:meth:`canonical` of every name at once (a host snapshot lists hundreds, nearly all
        spelled canonically already): UnknownFeature for the first name that is not a feature."""
        by_key = self._canonical_by_key
        found = [by_key.get(name) or by_key.get(_lookup_key(name)) for name in names]
        if None in found:
            self.canonical(names[found.index(None)])
        return frozenset(found)  # type: ignore[arg-type]  # no None left

    def get(self, name: str) -> Feature:
        return self._features[self.canonical(name)]

    def linux_name(self, name: str) -> str | None:
        """The flag Linux shows in /proc/cpuinfo for this feature, None if it shows none."""
        return self.get(name).linux_name

    def libvirt_name(self, name: str) -> str | None:
        """The name libvirt's ``<cpu>`` XML uses for this feature, None if libvirt has none."""
        return self.get(name).libvirt_name

    def from_linux_flags(self, flags: Iterable[str]) -> tuple[FeatureSet, frozenset[str]]:
        """Split /proc/cpuinfo flags into QEMU features and the flags QEMU has no feature for.

        Flags are read as Linux names only: Linux's synthetic ``ibpb`` is not QEMU's ``ibpb``.
        """
        mapped: set[str] = set()
        unmapped: set[str] = set()
        for flag in flags:
            canonical = self._by_linux_name.get(flag)
            if canonical is None:
                unmapped.add(flag)
            else:
                mapped.add(canonical)
        return frozenset(mapped), frozenset(unmapped)

    def _suggestions(self, name: str) -> tuple[str, ...]:
        close_keys = difflib.get_close_matches(
            _lookup_key(name), self._canonical_by_key, n=len(self._canonical_by_key)
        )
        canonical_names = dict.fromkeys(self._canonical_by_key[key] for key in close_keys)
        return tuple(canonical_names)[:_MAX_SUGGESTIONS]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _lookup_key(name) in self._canonical_by_key

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)


def _location_from_json(entry: Mapping[str, Any]) -> Location:
    if entry["kind"] == "cpuid":
        return CpuidBit(
            word=entry["word"],
            leaf=int(entry["leaf"], 16),
            subleaf=entry["subleaf"],
            register=entry["register"],
            bit=entry["bit"],
        )
    if entry["kind"] == "msr":
        return MsrBit(word=entry["word"], index=int(entry["index"], 16), bit=entry["bit"])
    raise ValueError(f"unknown location kind {entry['kind']!r}")


def _feature_from_json(entry: Mapping[str, Any]) -> Feature:
    locations = tuple(_location_from_json(location) for location in entry["locations"])
    return Feature(
        name=entry["name"],
        location=locations[0] if locations else None,
        aliases=tuple(entry["aliases"]),
        linux_name=entry["linux_name"],
        since=entry["since"],
        locations=locations,
        libvirt_name=entry["libvirt_name"],
    )


@cache
def _load_bundled() -> FeatureTable:
    # Anchored at the cpuver package so reading data never imports cpuver.catalog (which
    # itself depends on this module).
    resource = resources.files("cpuver").joinpath(_BUNDLED_RESOURCE)
    try:
        document = json.loads(resource.read_text(encoding="utf-8"))
        return FeatureTable(_feature_from_json(entry) for entry in document["features"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CatalogError(_BUNDLED_RESOURCE, f"unreadable feature table: {error}") from error
