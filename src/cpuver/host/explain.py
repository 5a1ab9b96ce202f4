"""What changed between two snapshots of one host, in words: features lost and gained with the
likely reason (data: ``catalog/data/feature-explanations.json``), microcode, kernel and CPU
vulnerability status. Which model versions that makes (un)usable is added by the api, which has
the catalogs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from cpuver.errors import CatalogError, HostError
from cpuver.features import FeatureSet
from cpuver.host.capabilities import HostCapabilities

_RESOURCE = "catalog/data/feature-explanations.json"


@dataclass(frozen=True, slots=True)
class Group:
    features: tuple[str, ...]
    lost: str
    gained: str


@dataclass(frozen=True, slots=True)
class Change:
    """Features that went one way for one reason (``reason`` None: no group explains them)."""

    direction: str
    """``lost`` or ``gained``."""
    features: tuple[str, ...]
    reason: str | None

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.direction} {', '.join(self.features)}{why}"


@dataclass(frozen=True, slots=True)
class FactChange:
    field: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        return f"{self.field}: {self.old or '(none)'} -> {self.new or '(none)'}"


@dataclass(frozen=True, slots=True)
class AccelDiff:
    release: str | None
    accel: str
    lost: FeatureSet
    gained: FeatureSet
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class HostDiff:
    host_a: str
    host_b: str
    facts: tuple[FactChange, ...]
    vulnerabilities: tuple[FactChange, ...]
    accels: tuple[AccelDiff, ...]


@cache
def groups() -> tuple[Group, ...]:
    """The bundled explanation groups, in file order (the first group naming a feature wins)."""
    resource = resources.files("cpuver").joinpath(_RESOURCE)
    try:
        document = json.loads(resource.read_text(encoding="utf-8"))
        return tuple(
            Group(tuple(entry["features"]), str(entry["lost"]), str(entry["gained"]))
            for entry in document["groups"]
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CatalogError(_RESOURCE, f"unreadable feature explanations: {error}") from error


def explain(
    features: Iterable[str], direction: str, known: Iterable[Group] | None = None
) -> tuple[Change, ...]:
    """``features`` that were ``lost``/``gained``, grouped by reason; unexplained ones last."""
    left = set(features)
    out: list[Change] = []
    for group in known if known is not None else groups():
        hit = [f for f in group.features if f in left]
        if hit:
            reason = group.lost if direction == "lost" else group.gained
            out.append(Change(direction, tuple(sorted(hit)), reason))
            left.difference_update(hit)
    if left:
        out.append(Change(direction, tuple(sorted(left)), None))
    return tuple(out)


def common_releases(a: HostCapabilities, b: HostCapabilities) -> list[str | None]:
    """Releases both snapshots have (v1 snapshots have one, unnamed: None)."""
    if not a.releases or not b.releases:
        return [None]
    both: list[str] = [r for r in b.releases if r in a.releases]
    both.sort(key=lambda r: tuple(int(p) for p in r.split(".") if p.isdigit()))
    return [*both]


def diff_hosts(
    a: HostCapabilities,
    b: HostCapabilities,
    release: str | None = None,
    accels: Iterable[str] | None = None,
) -> HostDiff:
    """What changed from ``a`` to ``b`` under ``release`` ("X.Y"; default: the newest both have)
    for ``accels`` (default: every accelerator both have)."""
    if release is None:
        shared = common_releases(a, b)
        if not shared:
            raise HostError(
                f"{a.source} and {b.source} have no QEMU release in common "
                f"({', '.join(a.releases)} vs {', '.join(b.releases)}); give --qemu X.Y"
            )
        release = shared[-1]
    wanted = list(accels) if accels is not None else sorted(set(a.offers) & set(b.offers))
    diffs = []
    for accel in wanted:
        old, new = a.offered(accel, release), b.offered(accel, release)
        if old is None or new is None:
            missing = a.source if old is None else b.source
            raise HostError(f"{missing}: has no {accel} offers to compare")
        lost, gained = old - new, new - old
        changes = explain(lost, "lost") + explain(gained, "gained")
        diffs.append(AccelDiff(release, accel, lost, gained, changes))
    return HostDiff(
        a.name,
        b.name,
        _fact_changes(a, b),
        _changes(_vulns(a), _vulns(b)),
        tuple(diffs),
    )


def _facts(host: HostCapabilities) -> dict[str, str | None]:
    facts = host.facts
    if facts is None:
        return {"vendor": host.vendor}
    return {
        "vendor": facts.vendor,
        "cpu": facts.brand or None,
        "signature": _signature(facts.family, facts.model, facts.stepping),
        "microcode": facts.microcode,
        "kernel": facts.kernel,
    }


def _signature(family: int | None, model: int | None, stepping: int | None) -> str | None:
    if family is None and model is None and stepping is None:
        return None
    return f"family {family} model {model} stepping {stepping}"


def _vulns(host: HostCapabilities) -> Mapping[str, str]:
    return host.facts.vulnerabilities if host.facts is not None else {}


def _fact_changes(a: HostCapabilities, b: HostCapabilities) -> tuple[FactChange, ...]:
    if a.facts is None or b.facts is None:
        return ()
    return _changes(_facts(a), _facts(b))


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FactChange, ...]:
    keys = list(dict.fromkeys([*old, *new]))
    return tuple(FactChange(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))
