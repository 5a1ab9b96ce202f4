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
    AccelCompat,
    BareRule,
    Definition,
    Delta,
    MachineType,
    Model,
    Signature,
    Version,
    machine_release,
    ordered_signature,
)

FORMAT = 1
BUNDLED = ("5.2", "7.2", "10.0", "11.1")
"""Catalogs imported from a real QEMU build of every QEMU release Debian ships (bullseye's 5.2,
bookworm's 7.2, trixie's 10.0, trixie-backports' 11.1), oldest first."""
DEFAULT_RELEASE = "10.0"
"""The catalog commands use without ``--qemu``: Debian 13's own QEMU."""


def bundled_dir(release: str) -> Path:
    """The directory of a bundled catalog (``5.2``, ``7.2``, ``10.0`` or ``11.1``)."""
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
            try:
                canonical = self.features.canonical(name)
            except UnknownFeature as err:
                raise self.fail(f"{where}.{key}[{index}]", str(err)) from err
            if canonical != name:
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
        return ordered_signature(obj.items())


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
        release,
        build,
        models,
        machines,
        accelerators,
        tcg_offers,
        source or str(directory),
        known_features=head.feature_list(head.data, "features", ""),
    )


def read_model(
    path: Path, features: FeatureTable | None = None, base: Model | None = None
) -> Model:
    """Read and validate one model file (``models/<Model>.json``).

    Without ``base`` the file defines the model from v1: v1 in full, each later version as a delta
    against the one before. With ``base`` (the same model in the catalog the file extends) the file
    may start at any version k <= base's highest + 1: versions below k are base's, the first listed
    one is a delta against base's version k-1 (in full when k == 1). A listed version that base
    already has must define exactly what base defines (released versions are immutable; base's
    version, with its note and release, is kept); later ones extend the model.
    """
    return _load_model(_Reader(path, features or FeatureTable.bundled()), base)


_VERSION_FIELDS = {"version", "since", "aliases", "note", "deprecated", "signature"}
_FULL_VERSION_FIELDS = _VERSION_FIELDS | {"features"}
_DELTA_VERSION_FIELDS = _VERSION_FIELDS | {"added", "removed"}


def _load_model(reader: _Reader, base: Model | None = None) -> Model:
    data = reader.data
    name = reader.field(data, "model", str, "")
    if reader.path.stem != name:
        raise reader.fail("model", f"model {name!r} must live in {name}.json")
    unknown = set(data) - {"model", "deprecated", "versions"}
    if unknown:
        raise reader.fail("", f"unknown field {sorted(unknown)[0]!r}")
    deprecated = reader.optional(
        data, "deprecated", bool, "", base.deprecated if base is not None else False
    )
    versions: list[Version] = []
    listed: list[int] = []
    previous: Definition | None = None
    for index, obj in enumerate(reader.field(data, "versions", list, "")):
        where = f"versions[{index}]"
        number = reader.field(obj, "version", int, where)
        if not listed and base is not None:
            highest = base.latest.number
            if not 1 <= number <= highest + 1:
                raise reader.fail(
                    f"{where}.version",
                    f"version {number} is out of order (expected 1 to {highest + 1}: "
                    f"{name} has versions 1 to {highest})",
                )
            versions = list(base.versions[: number - 1])
            previous = versions[-1].definition if versions else None
        expected = versions[-1].number + 1 if versions else 1
        if number != expected:
            problem = (
                "is defined twice"
                if number in listed
                else (f"is out of order (expected {expected})")
            )
            raise reader.fail(f"{where}.version", f"version {number} {problem}")
        allowed = _FULL_VERSION_FIELDS if previous is None else _DELTA_VERSION_FIELDS
        unknown = set(obj) - allowed
        if unknown:
            raise reader.fail(where, f"unknown field {sorted(unknown)[0]!r}")
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
            added = reader.feature_list(obj, "added", where)
            removed = reader.feature_list(obj, "removed", where)
            if added & removed:
                both = sorted(added & removed)[0]
                raise reader.fail(where, f"{both!r} is both added and removed")
            signature = reader.signature_changes(obj.get("signature", {}), f"{where}.signature")
            definition = previous.apply(Delta(added, removed, signature))
        aliases = reader.optional(obj, "aliases", list, where, [])
        for position, alias in enumerate(aliases):
            if not isinstance(alias, str):
                raise reader.fail(f"{where}.aliases[{position}]", "expected a name")
        version = Version(
            model=name,
            number=number,
            definition=definition,
            aliases=tuple(aliases),
            note=reader.optional(obj, "note", str, where, None),
            since=reader.optional(obj, "since", str, where, None),
            deprecated=reader.optional(obj, "deprecated", bool, where, deprecated),
        )
        if base is not None and (released := base.version(number)) is not None:
            _check_unchanged(reader, where, obj, released, version, base.latest.number + 1)
            version = released
        versions.append(version)
        listed.append(number)
        previous = version.definition
    if not versions:
        raise reader.fail("versions", "a model needs at least one version")
    return Model(name, tuple(versions), deprecated)


def _check_unchanged(
    reader: _Reader,
    where: str,
    obj: dict[str, Any],
    released: Version,
    listed: Version,
    next_number: int,
) -> None:
    """A version the base catalog already has may be listed again, but not changed."""
    immutable = f"(a released version is immutable: add {released.model}-v{next_number} instead)"
    if listed.definition != released.definition:
        change = describe_change(released.definition, listed.definition)
        raise reader.fail(where, f"released version {released.name} changed: {change} {immutable}")
    if "aliases" in obj and set(listed.aliases) != set(released.aliases):
        was = ", ".join(released.aliases) or "none"
        raise reader.fail(
            f"{where}.aliases",
            f"released version {released.name} changed: aliases {was} -> "
            f"{', '.join(listed.aliases) or 'none'} {immutable}",
        )


def describe_change(old: Definition, new: Definition) -> str:
    """What turns ``old`` into ``new``, for people: ``adds avx2; removes hle; stepping 1 -> 4``."""
    delta = Delta.between(old, new)
    parts = []
    if delta.on:
        parts.append("adds " + ", ".join(sorted(delta.on)))
    if delta.off:
        parts.append("removes " + ", ".join(sorted(delta.off)))
    before = old.signature.as_dict()
    parts += [f"{key} {before[key]!r} -> {value!r}" for key, value in delta.signature]
    return "; ".join(parts)


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
            accel_compat=tuple(
                _accel_compat(reader, accel, spec, f"{where}.accel.{accel}")
                for accel, spec in sorted(reader.optional(obj, "accel", dict, where, {}).items())
            ),
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
        **({"features": sorted(catalog.known_features)} if catalog.known_features else {}),
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
    if machine.accel_compat:
        out["accel"] = {compat.accel: _accel_compat_json(compat) for compat in machine.accel_compat}
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


def _accel_compat(reader: _Reader, accel: str, spec: Any, where: str) -> AccelCompat:
    if not isinstance(spec, dict):
        raise reader.fail(where, "expected an object")
    types = reader.optional(spec, "types", dict, where, {})
    rest = {k: v for k, v in spec.items() if k not in ("skip", "types")}
    return AccelCompat(
        accel=accel,
        delta=reader.delta(rest, where),
        skipped=reader.feature_list(spec, "skip", where),
        type_deltas=tuple(
            (name, reader.delta(delta, f"{where}.types.{name}"))
            for name, delta in sorted(types.items())
        ),
    )


def _accel_compat_json(compat: AccelCompat) -> dict[str, Any]:
    out = _delta_json(compat.delta)
    if compat.skipped:
        out["skip"] = sorted(compat.skipped)
    if compat.type_deltas:
        out["types"] = {name: _delta_json(delta) for name, delta in compat.type_deltas}
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
