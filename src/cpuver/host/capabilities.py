"""What one host can give a guest, per accelerator: a pure value type and its JSON forms.

Two JSON forms are read: QEMU's own ``query-cpu-model-expansion`` reply for ``host`` (KVM) or
``max`` (TCG), and cpuver's snapshot (``"schema": "cpuver-host/1"``). Errors name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpuver.errors import HostError, UnknownFeature
from cpuver.features import FeatureSet, FeatureTable

SNAPSHOT_SCHEMA = "cpuver-host/1"
_MODEL_ACCELERATOR = {"host": "kvm", "max": "tcg"}


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """Features a host offers a guest under each accelerator it was probed for."""

    name: str
    offers: Mapping[str, FeatureSet]
    vendor: str | None = None
    source: str = ""
    provenance: Mapping[str, str] = field(default_factory=dict)

    def offered(self, accel: str) -> FeatureSet | None:
        return self.offers.get(accel)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA, "host": self.name}
        if self.vendor:
            out["vendor"] = self.vendor
        out["accelerators"] = {
            accel: {"features": sorted(features)} for accel, features in sorted(self.offers.items())
        }
        if self.provenance:
            out["provenance"] = dict(sorted(self.provenance.items()))
        return out


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
        return _from_snapshot(data, source, table)
    raise HostError(
        f"{source}: neither a cpuver host snapshot (no 'schema') nor a QMP "
        "query-cpu-model-expansion reply (no 'model')"
    )


def _from_expansion(model: Any, source: str, table: FeatureTable) -> HostCapabilities:
    if not isinstance(model, dict) or not isinstance(model.get("props"), dict):
        raise HostError(f"{source}: model.props: expected an object of CPU properties")
    name = model.get("name")
    if name not in _MODEL_ACCELERATOR:
        raise HostError(f"{source}: model.name: expected 'host' (KVM) or 'max' (TCG), got {name!r}")
    props: dict[str, Any] = model["props"]
    offered = frozenset(k for k, v in props.items() if v is True and k in table)
    vendor = props.get("vendor") if isinstance(props.get("vendor"), str) else None
    return HostCapabilities(source, {_MODEL_ACCELERATOR[name]: offered}, vendor, source)


def _from_snapshot(data: dict[str, Any], source: str, table: FeatureTable) -> HostCapabilities:
    if data["schema"] != SNAPSHOT_SCHEMA:
        raise HostError(
            f"{source}: schema: {data['schema']!r} is not {SNAPSHOT_SCHEMA!r} "
            "(a newer cpuver wrote it?)"
        )
    name = data.get("host")
    if not isinstance(name, str):
        raise HostError(f"{source}: host: expected the host name as a string")
    accelerators = data.get("accelerators")
    if not isinstance(accelerators, dict) or not accelerators:
        raise HostError(
            f'{source}: accelerators: expected an object like {{"kvm": {{"features": [...]}}}}'
        )
    offers: dict[str, FeatureSet] = {}
    for accel, entry in accelerators.items():
        where = f"{source}: accelerators.{accel}.features"
        names = entry.get("features") if isinstance(entry, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HostError(f"{where}: expected a list of feature names")
        try:
            offers[accel] = frozenset(table.canonical(n) for n in names)
        except UnknownFeature as err:
            raise HostError(f"{where}: unknown feature {err.name!r}") from err
    vendor = data.get("vendor")
    provenance = data.get("provenance", {})
    return HostCapabilities(
        name,
        offers,
        vendor if isinstance(vendor, str) else None,
        source,
        provenance if isinstance(provenance, dict) else {},
    )
