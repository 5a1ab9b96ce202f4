"""Overlays: user model files merged over a catalog, released versions kept immutable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuver.catalog import Catalog, NameKind
from cpuver.catalog.files import bundled_dir, load, model_json
from cpuver.catalog.overlay import apply_overlay, apply_overlays
from cpuver.errors import CatalogError
from cpuver.models import Delta


@pytest.fixture(scope="module")
def base() -> Catalog:
    return load(bundled_dir("10.0"), source="bundled qemu-10.0")


def overlay(directory: Path, *models: dict[str, Any]) -> Path:
    """An overlay directory with one model file per given model."""
    (directory / "models").mkdir(parents=True, exist_ok=True)
    for data in models:
        (directory / "models" / f"{data['model']}.json").write_text(json.dumps(data, indent=2))
    return directory


def overlay_error(base: Catalog, directory: Path) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        apply_overlay(base, directory)
    return caught.value


def haswell_entry(base: Catalog, number: int) -> dict[str, Any]:
    """Haswell's version ``number`` as its model file writes it (v1 in full, later as deltas)."""
    entry: dict[str, Any] = model_json(base.models["Haswell"])["versions"][number - 1]
    return entry


NEW_MODEL = {
    "model": "Acme",
    "versions": [
        {
            "version": 1,
            "signature": {
                "vendor": "GenuineIntel",
                "family": 6,
                "model": 85,
                "stepping": 7,
                "model-id": "Acme Virtual CPU",
                "min-level": 13,
                "min-xlevel": 2147483656,
            },
            "features": ["fpu", "sse", "sse2", "lm", "avx2"],
        },
        {"version": 2, "added": ["avx512f"], "aliases": ["Acme-AVX512"], "note": "AVX-512"},
    ],
}


def test_overlay_adds_a_new_model_with_its_versions_and_aliases(
    base: Catalog, tmp_path: Path
) -> None:
    catalog = apply_overlay(base, overlay(tmp_path, NEW_MODEL))
    acme = catalog.models["Acme"]
    assert [v.name for v in acme.versions] == ["Acme-v1", "Acme-v2"]
    assert acme.versions[1].definition.features == {"fpu", "sse", "sse2", "lm", "avx2", "avx512f"}
    assert catalog.lookup("Acme-AVX512").version == acme.versions[1]
    assert set(catalog.models) == {*base.models, "Acme"}


def test_overlay_keeps_machines_accelerators_and_build_and_records_its_source(
    base: Catalog, tmp_path: Path
) -> None:
    catalog = apply_overlay(base, overlay(tmp_path, NEW_MODEL))
    assert catalog.machines == base.machines
    assert catalog.accelerators == base.accelerators
    assert (catalog.release, catalog.build) == (base.release, base.build)
    assert catalog.source == f"bundled qemu-10.0 + overlay {tmp_path}"


def test_overlay_appends_haswell_v5_as_a_delta_against_v4(base: Catalog, tmp_path: Path) -> None:
    v5 = {"version": 5, "added": ["avx512f"], "removed": ["spec-ctrl"], "note": "site build"}
    catalog = apply_overlay(base, overlay(tmp_path, {"model": "Haswell", "versions": [v5]}))
    haswell = catalog.models["Haswell"]
    assert haswell.versions[:4] == base.models["Haswell"].versions
    added = haswell.versions[4]
    assert (added.name, added.note, added.since) == ("Haswell-v5", "site build", None)
    assert Delta.between(haswell.versions[3].definition, added.definition) == Delta(
        frozenset({"avx512f"}), frozenset({"spec-ctrl"})
    )


def test_overlay_may_list_released_versions_again_unchanged(base: Catalog, tmp_path: Path) -> None:
    versions = [haswell_entry(base, 3), haswell_entry(base, 4), {"version": 5, "added": ["pcid"]}]
    catalog = apply_overlay(base, overlay(tmp_path, {"model": "Haswell", "versions": versions}))
    assert catalog.models["Haswell"].versions[:4] == base.models["Haswell"].versions
    assert catalog.lookup("Haswell-v5").kind is NameKind.VERSIONED


def test_overlay_changing_a_released_version_is_refused_naming_it(
    base: Catalog, tmp_path: Path
) -> None:
    changed = {**haswell_entry(base, 2), "added": ["avx512f"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [changed]}))
    assert error.where == f"{tmp_path}/models/Haswell.json: versions[0]"
    assert error.problem.startswith("released version Haswell-v2 changed: adds avx512f")
    assert "(a released version is immutable: add Haswell-v5 instead)" in error.problem


def test_overlay_changing_the_aliases_of_a_released_version_is_refused(
    base: Catalog, tmp_path: Path
) -> None:
    renamed = {**haswell_entry(base, 2), "aliases": ["Haswell-NoTSX"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [renamed]}))
    assert error.where.endswith("Haswell.json: versions[0].aliases")
    assert "released version Haswell-v2 changed: aliases Haswell-noTSX -> Haswell-NoTSX" in str(
        error
    )


def test_overlay_with_an_unknown_feature_names_the_file_and_field(
    base: Catalog, tmp_path: Path
) -> None:
    v5 = {"version": 5, "added": ["pcid", "avx9000"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [v5]}))
    assert error.where == f"{tmp_path}/models/Haswell.json: versions[0].added[1]"
    assert "unknown CPU feature 'avx9000'" in error.problem


def test_overlay_with_a_misspelt_field_is_refused(base: Catalog, tmp_path: Path) -> None:
    v5 = {"version": 5, "add": ["pcid"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [v5]}))
    assert error.where == f"{tmp_path}/models/Haswell.json: versions[0]"
    assert "unknown field 'add'" in error.problem


def test_overlay_alias_clashing_with_an_existing_alias_is_refused(
    base: Catalog, tmp_path: Path
) -> None:
    v5 = {"version": 5, "added": ["pcid"], "aliases": ["Haswell-noTSX"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [v5]}))
    assert error.where == f"{tmp_path}/models/Haswell.json: versions[0].aliases[0]"
    assert "alias 'Haswell-noTSX' is already an alias of Haswell-v2" in error.problem


def test_overlay_alias_clashing_with_a_model_name_is_refused(base: Catalog, tmp_path: Path) -> None:
    clash = {
        **NEW_MODEL,
        "versions": [NEW_MODEL["versions"][0], {"version": 2, "aliases": ["EPYC"]}],
    }
    error = overlay_error(base, overlay(tmp_path, clash))
    assert error.where == f"{tmp_path}/models/Acme.json: versions[1].aliases[0]"
    assert "is already the model EPYC" in error.problem


def test_overlay_new_model_named_like_an_existing_alias_is_refused(
    base: Catalog, tmp_path: Path
) -> None:
    error = overlay_error(base, overlay(tmp_path, {**NEW_MODEL, "model": "Haswell-noTSX"}))
    assert error.where == f"{tmp_path}/models/Haswell-noTSX.json: model"
    assert "already an alias of Haswell-v2" in error.problem


def test_overlay_starting_after_the_next_free_version_is_refused(
    base: Catalog, tmp_path: Path
) -> None:
    v6 = {"version": 6, "added": ["pcid"]}
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": [v6]}))
    assert error.where.endswith("Haswell.json: versions[0].version")
    assert "version 6 is out of order (expected 1 to 5: Haswell has versions 1 to 4)" in (
        error.problem
    )


def test_overlay_listing_a_version_twice_is_refused(base: Catalog, tmp_path: Path) -> None:
    versions = [{"version": 5, "added": ["pcid"]}, {"version": 5, "added": ["avx512f"]}]
    error = overlay_error(base, overlay(tmp_path, {"model": "Haswell", "versions": versions}))
    assert error.where.endswith("Haswell.json: versions[1].version")
    assert "version 5 is defined twice" in error.problem


def test_directory_without_model_files_is_not_an_overlay(base: Catalog, tmp_path: Path) -> None:
    error = overlay_error(base, tmp_path)
    assert "no model files (models/*.json)" in error.problem


def test_overlays_apply_in_order_so_a_later_one_extends_an_earlier_one(
    base: Catalog, tmp_path: Path
) -> None:
    first = overlay(tmp_path / "first", {"model": "Haswell", "versions": [{"version": 5}]})
    second = overlay(
        tmp_path / "second", {"model": "Haswell", "versions": [{"version": 6, "added": ["pcid"]}]}
    )
    catalog = apply_overlays(base, [first, second])
    assert [v.number for v in catalog.models["Haswell"].versions] == [1, 2, 3, 4, 5, 6]
    assert catalog.source.endswith(f"+ overlay {first} + overlay {second}")
