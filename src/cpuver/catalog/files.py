"""Catalog directories on disk: read, validate and write them, byte-for-byte reproducibly.

Layout of a catalog directory::

    catalog.json        QEMU build, accelerator defaults, what TCG offers
    machines.json       every machine type: bare-name rule and compat deltas
    models/<Model>.json one model family: v1 in full, each later version as a delta

Every error names the file and the place inside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from cpuver.catalog import Accelerator, Catalog
from cpuver.errors import CatalogError, UnknownFeature, UnknownRelease
from cpuver.features import FeatureTable
from cpuver.models import (
    SIGNATURE_FIELDS,
    BareRule,
    Definition,
    Delta,
    MachineType,
    Model,
    Signature,
    Version,
    machine_release,
)

FORMAT = 1
BUNDLED = ("7.2", "10.0")


def bundled_dir(release: str) -> Path:
    """The directory of a bundled catalog (``7.2`` or ``10.0``)."""
    if release not in BUNDLED:
        raise UnknownRelease(release, BUNDLED)
    return Path(str(resources.files("cpuver.catalog") / "data" / f"qemu-{release}"))


# ---------------------------------------------------------------------------------- reading


class _Reader:
    """Reads one JSON file and reports errors as ``file: path.to.field: problem``."""

    def __init__(self, path: Path, features: FeatureTable) -> None:
        self.path = path
        self.features = features
        try:
            self.data: Any = json.loads(path.read_text())
        except OSError as err:
            raise CatalogError(str(path), f"cannot read: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise CatalogError(
                str(path), f"not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err

    def fail(self, where: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.path.name}: {where}" if where else self.path.name, problem)

    def field(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, "expected an object")
        if key not in obj:
            raise self.fail(where, f"missing field {key!r}")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"{where}.{key}" if where else key, f"expected {_kind_name(kind)}")
        return value

    def optional(self, obj: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
        return self.field(obj, key, kind, where) if key in obj else default

    def feature_list(self, obj: dict[str, Any], key: str, where: str) -> frozenset[str]:
        names = self.optional(obj, key, list, where, [])
        for index, name in enumerate(names):
            if not isinstance(name, str):
                raise self.fail(f"{where}.{key}[{index}]", "expected a feature name")
            if name not in self.features:
                try:
                    canonical = self.features.canonical(name)
                except UnknownFeature as err:
                    raise self.fail(f"{where}.{key}[{index}]", str(err)) from err
                raise self.fail(f"{where}.{key}[{index}]", f"write {name!r} as {canonical!r}")
        return frozenset(names)

    def delta(self, obj: Any, where: str) -> Delta:
        if not isinstance(obj, dict):
            raise self.fail(where, "expected an object")
        unknown = set(obj) - {"on", "off", "signature"}
        if unknown:
            raise self.fail(where, f"unknown field {sorted(unknown)[0]!r}")
        on = self.feature_list(obj, "on", where)
        off = self.feature_list(obj, "off", where)
        if on & off:
            raise self.fail(where, f"{sorted(on & off)[0]!r} is both on and off")
        signature = self.signature_changes(obj.get("signature", {}), f"{where}.signature")
        return Delta(on, off, signature)

    def signature_changes(self, obj: Any, where: str) -> tuple[tuple[str, str | int], ...]:
        if not isinstance(obj, dict):
            raise self.fail(where, "expected an object")
        for key, value in obj.items():
            if key not in SIGNATURE_FIELDS:
                raise self.fail(where, f"unknown signature field {key!r}")
            kind = str if key in ("vendor", "model-id") else int
            if not isinstance(value, kind) or isinstance(value, bool):
                raise self.fail(f"{where}.{key}", f"expected {_kind_name(kind)}")
        return tuple(sorted(obj.items()))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        list: "a list",
        dict: "an object",
        bool: "true/false",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load(
    directory: Path, features: FeatureTable | None = None, source: str | None = None
) -> Catalog:
    """Load and validate a catalog directory."""
    table = features or FeatureTable.bundled()
    if not (directory / "catalog.json").is_file():
        raise CatalogError(str(directory), "not a catalog directory (no catalog.json)")
    head = _Reader(directory / "catalog.json", table)
    if head.field(head.data, "format", int, "") != FORMAT:
        raise head.fail("format", f"unsupported catalog format (this cpuver reads {FORMAT})")
    qemu = head.field(head.data, "qemu", dict, "")
    release = head.field(qemu, "release", str, "qemu")
    build = head.field(qemu, "build", str, "qemu")
    accelerators = {}
    for name, obj in head.field(head.data, "accelerators", dict, "").items():
        where = f"accelerators.{name}"
        host_vendor = head.optional(obj, "host-vendor", bool, where, False)
        levels = tuple(
            (version, head.delta({"signature": changes}, f"{where}.levels.{version}"))
            for version, changes in sorted(head.optional(obj, "levels", dict, where, {}).items())
        )
        rest = {k: v for k, v in obj.items() if k not in ("host-vendor", "levels")}
        accelerators[name] = Accelerator(name, head.delta(rest, where), host_vendor, levels)
    tcg_offers = head.feature_list(head.data, "tcg-offers", "")

    models = {}
    for path in sorted((directory / "models").glob("*.json")):
        model = _load_model(_Reader(path, table))
        if model.name in models:
            raise CatalogError(path.name, f"model {model.name!r} is defined twice")
        models[model.name] = model
    if not models:
        raise CatalogError(str(directory), "no models (models/*.json)")
    machines = _load_machines(_Reader(directory / "machines.json", table), models)
    return Catalog(
        release, build, models, machines, accelerators, tcg_offers, source or str(directory)
    )


def _load_model(reader: _Reader) -> Model:
    data = reader.data
    name = reader.field(data, "model", str, "")
    if reader.path.stem != name:
        raise reader.fail("model", f"model {name!r} must live in {name}.json")
    deprecated = reader.optional(data, "deprecated", bool, "", False)
    versions: list[Version] = []
    previous: Definition | None = None
    for index, obj in enumerate(reader.field(data, "versions", list, "")):
        where = f"versions[{index}]"
        number = reader.field(obj, "version", int, where)
        expected = versions[-1].number + 1 if versions else 1
        if number != expected:
            problem = (
                "is defined twice"
                if any(v.number == number for v in versions)
                else (f"is out of order (expected {expected})")
            )
            raise reader.fail(f"{where}.version", f"version {number} {problem}")
        if previous is None:
            sig = reader.field(obj, "signature", dict, where)
            missing = [k for k in SIGNATURE_FIELDS if k not in sig]
            if missing:
                raise reader.fail(f"{where}.signature", f"missing field {missing[0]!r}")
            reader.signature_changes(sig, f"{where}.signature")
            definition = Definition(
                Signature.from_dict(sig), reader.feature_list(obj, "features", where)
            )
        else:
            changes = {k: v for k, v in obj.items() if k in ("signature",)}
            changes["on"] = obj.get("added", [])
            changes["off"] = obj.get("removed", [])
            definition = previous.apply(reader.delta(changes, where))
        aliases = tuple(reader.optional(obj, "aliases", list, where, []))
        versions.append(
            Version(
                model=name,
                number=number,
                definition=definition,
                aliases=aliases,
                note=reader.optional(obj, "note", str, where, None),
                since=reader.optional(obj, "since", str, where, None),
                deprecated=reader.optional(obj, "deprecated", bool, where, deprecated),
            )
        )
        previous = definition
    if not versions:
        raise reader.fail("versions", "a model needs at least one version")
    return Model(name, tuple(versions), deprecated)


def _load_machines(reader: _Reader, models: Mapping[str, Model]) -> dict[str, MachineType]:
    machines = {}
    for name, obj in reader.field(reader.data, "machines", dict, "").items():
        where = f"machines.{name}"
        try:
            bare = BareRule(reader.field(obj, "bare", str, where))
        except ValueError as err:
            raise reader.fail(f"{where}.bare", "expected v1, latest or legacy") from err
        compat = reader.optional(obj, "compat", dict, where, {})
        global_delta = reader.delta(compat.get("*", {}), f"{where}.compat.*")
        type_deltas = tuple(
            (type_name, reader.delta(delta, f"{where}.compat.{type_name}"))
            for type_name, delta in sorted(compat.items())
            if type_name != "*"
        )
        versions = reader.optional(obj, "versions", dict, where, {})
        for model_name, number in versions.items():
            spot = f"{where}.versions.{model_name}"
            if model_name not in models:
                raise reader.fail(spot, f"unknown model {model_name!r}")
            if not isinstance(number, int) or models[model_name].version(number) is None:
                raise reader.fail(spot, f"{model_name} has no version {number!r}")
        if versions and bare is BareRule.LEGACY:
            raise reader.fail(f"{where}.versions", "a legacy machine type maps no versions")
        machines[name] = MachineType(
            name=name,
            bare=bare,
            release=machine_release(name),
            alias=reader.optional(obj, "alias", str, where, None),
            deprecated=reader.optional(obj, "deprecated", bool, where, False),
            global_delta=global_delta,
            type_deltas=type_deltas,
            versions=tuple(sorted(versions.items())),
        )
    if not machines:
        raise reader.fail("machines", "no machine types")
    return machines


# ---------------------------------------------------------------------------------- writing


def dump(catalog: Catalog, directory: Path) -> None:
    """Write ``catalog`` as a catalog directory (replacing its model files)."""
    (directory / "models").mkdir(parents=True, exist_ok=True)
    for stale in (directory / "models").glob("*.json"):
        stale.unlink()
    head: dict[str, Any] = {
        "format": FORMAT,
        "qemu": {"release": catalog.release, "build": catalog.build},
        "accelerators": {
            name: _accelerator_json(acc) for name, acc in sorted(catalog.accelerators.items())
        },
        "tcg-offers": sorted(catalog.tcg_offers),
    }
    _write(directory / "catalog.json", head)
    machines = {name: _machine_json(machine) for name, machine in sorted(catalog.machines.items())}
    _write(directory / "machines.json", {"machines": machines})
    for model in catalog.models.values():
        _write(directory / "models" / f"{model.name}.json", model_json(model))


def model_json(model: Model) -> dict[str, Any]:
    """One model family: v1 in full, every later version as a delta against the one before."""
    versions: list[dict[str, Any]] = []
    previous: Definition | None = None
    for version in model.versions:
        entry: dict[str, Any] = {"version": version.number}
        if version.since:
            entry["since"] = version.since
        if version.aliases:
            entry["aliases"] = list(version.aliases)
        if version.note:
            entry["note"] = version.note
        if version.deprecated != model.deprecated:
            entry["deprecated"] = version.deprecated
        if previous is None:
            entry["signature"] = version.definition.signature.as_dict()
            entry["features"] = sorted(version.definition.features)
        else:
            delta = Delta.between(previous, version.definition)
            if delta.on:
                entry["added"] = sorted(delta.on)
            if delta.off:
                entry["removed"] = sorted(delta.off)
            if delta.signature:
                entry["signature"] = dict(delta.signature)
        versions.append(entry)
        previous = version.definition
    out: dict[str, Any] = {"model": model.name}
    if model.deprecated:
        out["deprecated"] = True
    out["versions"] = versions
    return out


def _machine_json(machine: MachineType) -> dict[str, Any]:
    out: dict[str, Any] = {"bare": machine.bare.value}
    if machine.alias:
        out["alias"] = machine.alias
    if machine.deprecated:
        out["deprecated"] = True
    if machine.versions:
        out["versions"] = dict(machine.versions)
    compat = {}
    if machine.global_delta:
        compat["*"] = _delta_json(machine.global_delta)
    for type_name, delta in machine.type_deltas:
        compat[type_name] = _delta_json(delta)
    if compat:
        out["compat"] = compat
    return out


def _accelerator_json(accelerator: Accelerator) -> dict[str, Any]:
    out = _delta_json(accelerator.defaults)
    if accelerator.host_vendor:
        out["host-vendor"] = True
    if accelerator.levels:
        out["levels"] = {name: dict(delta.signature) for name, delta in accelerator.levels}
    return out


def _delta_json(delta: Delta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.on:
        out["on"] = sorted(delta.on)
    if delta.off:
        out["off"] = sorted(delta.off)
    if delta.signature:
        out["signature"] = dict(delta.signature)
    return out


def _write(path: Path, data: Any) -> None:
    path.write_text(dumps(data) + "\n")


def dumps(data: Any, indent: int = 0) -> str:
    """JSON with objects one key per line and lists of scalars packed into short lines.

    Meant for review: a version's features read as a paragraph, not one name per line.
    """
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(data, dict):
        if not data:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(data, list):
        if not data:
            return "[]"
        if all(not isinstance(item, (dict, list)) for item in data):
            return _packed(data, inner, pad)
        items = [f"{inner}{dumps(item, indent + 1)}" for item in data]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(data, ensure_ascii=False)


def _packed(items: Iterable[Any], inner: str, pad: str, width: int = 100) -> str:
    words = [json.dumps(item, ensure_ascii=False) for item in items]
    one_line = "[" + ", ".join(words) + "]"
    if len(pad) + len(one_line) <= width:
        return one_line
    lines: list[str] = []
    line = ""
    for word in words:
        candidate = f"{line}, {word}" if line else word
        if line and len(inner) + len(candidate) + 1 > width:
            lines.append(line + ",")
            line = word
        else:
            line = candidate
    lines.append(line)
    return "[\n" + "\n".join(inner + text for text in lines) + "\n" + pad + "]"
