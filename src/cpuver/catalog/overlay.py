"""Overlays: user model files merged over a catalog (``--overlay DIR``).

An overlay is a directory with ``models/<Model>.json`` files in the catalog's per-model format
(:mod:`cpuver.catalog.files`); nothing else in it is read. Each file either

- defines a **new model**: a full model file, v1 in full and later versions as deltas; or
- extends an **existing model**: its versions may start at any k <= (the base's highest + 1).
  Versions below k are the base's; the first listed version is a delta against the base's
  version k-1 (in full when k == 1); a listed version the base already has must define exactly
  what the base defines (a released version is immutable: the base's version, with its note and
  release, is kept); versions after the base's highest are appended, ``since`` optional.

New names must be free: a new model's name, and the aliases of new versions, may not be a name
the catalog already gives a meaning (a model, a versioned name or an alias), and a model name
may not end in ``-vN``. Every error names the file and the place inside it.

The result keeps the base catalog's machine types, accelerators, what TCG offers and its
``build``; ``source`` records the overlay. Known limit: the base's per-version accelerator level
adjustments (``min-xlevel`` under KVM when KVM turns ``svm`` off) exist only for the base's
versions, so an overlay version gets the accelerator's plain defaults. Several overlays apply in
order (:func:`apply_overlays`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from cpuver.catalog import Catalog
from cpuver.catalog.files import read_model
from cpuver.errors import CatalogError
from cpuver.features import FeatureTable
from cpuver.models import Model, split_versioned_name

RESERVED_NAMES = frozenset({"host", "max", "base"})
"""CPU names QEMU defines itself, beside the models: never a model name."""


def apply_overlay(base: Catalog, directory: Path, features: FeatureTable | None = None) -> Catalog:
    """``base`` with the model files of the overlay ``directory`` merged over it."""
    table = features or FeatureTable.bundled()
    if not directory.is_dir():
        raise CatalogError(str(directory), "overlay directory not found")
    paths = sorted((directory / "models").glob("*.json"))
    if not paths:
        raise CatalogError(str(directory), "not an overlay: no model files (models/*.json)")
    models = dict(base.models)
    for path in paths:
        existing = base.models.get(path.stem)
        model = _read(path, table, existing)
        _check_new_names(path, model, existing, models)
        models[model.name] = model
    return Catalog(
        release=base.release,
        build=base.build,
        models=models,
        machines=base.machines,
        accelerators=base.accelerators,
        tcg_offers=base.tcg_offers,
        known_features=base.known_features,
        source=f"{base.source} + overlay {directory}",
    )


def apply_overlays(
    base: Catalog, directories: Iterable[Path], features: FeatureTable | None = None
) -> Catalog:
    """``base`` with each overlay applied in order (a later one may extend an earlier one)."""
    catalog = base
    for directory in directories:
        catalog = apply_overlay(catalog, directory, features)
    return catalog


def _read(path: Path, table: FeatureTable, existing: Model | None) -> Model:
    try:
        return read_model(path, table, existing)
    except CatalogError as err:
        # The reader names the file only (``Haswell.json: versions[1]``); give the whole path,
        # so the overlay's file is not mistaken for the bundled one.
        if err.where.startswith(path.name):
            raise CatalogError(
                f"{path.parent / path.name}{err.where[len(path.name) :]}", err.problem
            ) from err
        raise


def _check_new_names(
    path: Path, model: Model, existing: Model | None, models: dict[str, Model]
) -> None:
    """New names (model, aliases of new versions) must not already mean something."""
    taken = _taken_names(models.values())
    if existing is None:
        if split_versioned_name(model.name):
            raise _fail(path, "model", f"model name {model.name!r} must not end in -vN")
        if model.name in taken:
            raise _fail(path, "model", f"{model.name!r} is already {taken[model.name]}")
        if model.name in RESERVED_NAMES:
            raise _fail(path, "model", f"{model.name!r} is one of QEMU's own CPU names")
    known = existing.latest.number if existing is not None else 0
    own: dict[str, str] = {}
    for version in model.versions:
        if version.number <= known:
            continue
        for position, alias in enumerate(version.aliases):
            where = f"{_place(path, version.number)}.aliases[{position}]"
            if alias in taken or alias in own:
                meaning = taken.get(alias) or own[alias]
                raise _fail(path, where, f"alias {alias!r} is already {meaning}")
            if alias == model.name or split_versioned_name(alias):
                raise _fail(path, where, f"alias {alias!r} looks like a model or versioned name")
            own[alias] = f"an alias of {version.name}"


def _taken_names(models: Iterable[Model]) -> dict[str, str]:
    taken: dict[str, str] = {}
    for model in models:
        taken[model.name] = f"the model {model.name}"
        for version in model.versions:
            taken[version.name] = f"a version of {model.name}"
            for alias in version.aliases:
                taken[alias] = f"an alias of {version.name}"
    return taken


def _place(path: Path, number: int) -> str:
    """``versions[i]`` of the entry for version ``number`` (the file is valid by now)."""
    entries = json.loads(path.read_text())["versions"]
    index = next(i for i, entry in enumerate(entries) if entry["version"] == number)
    return f"versions[{index}]"


def _fail(path: Path, where: str, problem: str) -> CatalogError:
    return CatalogError(f"{path}: {where}", problem)
