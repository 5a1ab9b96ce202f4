"""Catalog directories on disk: round trips, reproducible bytes, errors that name file and place."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import BUNDLED, bundled_dir, dump, load
from cpuver.errors import CatalogError

Edit = Callable[[dict[str, Any]], None]


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*.json"))
    }


def same_catalog(a: Catalog, b: Catalog) -> bool:
    """Equal in everything but where they were read from."""
    return dataclasses.replace(a, source=b.source) == b


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled 10.0 catalog."""
    return Path(shutil.copytree(bundled_dir("10.0"), tmp_path / "catalog"))


def edit_model(directory: Path, model: str, edit: Edit) -> None:
    path = directory / "models" / f"{model}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def load_error(directory: Path) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        load(directory)
    return caught.value


@pytest.mark.parametrize("release", BUNDLED)
def test_load_dump_load_gives_an_equal_catalog(release: str, tmp_path: Path) -> None:
    original = load(bundled_dir(release))
    dump(original, tmp_path)
    assert same_catalog(load(tmp_path), original)


@pytest.mark.parametrize("release", BUNDLED)
def test_dumping_twice_writes_identical_bytes(release: str, tmp_path: Path) -> None:
    catalog = load(bundled_dir(release))
    dump(catalog, tmp_path / "first")
    dump(catalog, tmp_path / "second")
    assert files_of(tmp_path / "first") == files_of(tmp_path / "second")


@pytest.mark.parametrize("release", BUNDLED)
def test_dumped_model_files_are_byte_identical_to_the_bundled_ones(
    release: str, tmp_path: Path
) -> None:
    """The bundled model files are in the canonical form the importer writes."""
    dump(load(bundled_dir(release)), tmp_path)
    bundled = {k: v for k, v in files_of(bundled_dir(release)).items() if k.startswith("models")}
    dumped = {k: v for k, v in files_of(tmp_path).items() if k.startswith("models")}
    assert dumped == bundled


@pytest.mark.parametrize("release", BUNDLED)
def test_dumped_catalog_json_is_byte_identical_to_the_bundled_one(
    release: str, tmp_path: Path
) -> None:
    dump(load(bundled_dir(release)), tmp_path)
    assert (tmp_path / "catalog.json").read_bytes() == (
        bundled_dir(release) / "catalog.json"
    ).read_bytes()


@pytest.mark.parametrize("release", BUNDLED)
def test_dumped_machines_json_is_byte_identical_to_the_bundled_one(
    release: str, tmp_path: Path
) -> None:
    dump(load(bundled_dir(release)), tmp_path)
    assert (tmp_path / "machines.json").read_bytes() == (
        bundled_dir(release) / "machines.json"
    ).read_bytes()


def test_dump_removes_model_files_of_models_no_longer_in_the_catalog(tmp_path: Path) -> None:
    catalog = load(bundled_dir("10.0"))
    dump(catalog, tmp_path)
    (tmp_path / "models" / "Stale.json").write_text("{}")
    dump(catalog, tmp_path)
    assert not (tmp_path / "models" / "Stale.json").exists()


def test_unknown_feature_in_a_later_version_names_file_version_and_list(
    catalog_copy: Path,
) -> None:
    def add_unknown(data: dict[str, Any]) -> None:
        data["versions"][1]["added"] = ["nosuchfeature"]

    edit_model(catalog_copy, "Haswell", add_unknown)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[1].added[0]"
    assert "unknown CPU feature 'nosuchfeature'" in error.problem


def test_unknown_feature_in_the_first_version_names_its_position(catalog_copy: Path) -> None:
    def misspell(data: dict[str, Any]) -> None:
        data["versions"][0]["features"][2] = "apicc"

    edit_model(catalog_copy, "Haswell", misspell)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[0].features[2]"
    assert "unknown CPU feature 'apicc' (did you mean apic," in error.problem


def test_alias_spelling_of_a_feature_is_refused_with_the_canonical_name(
    catalog_copy: Path,
) -> None:
    def alias(data: dict[str, Any]) -> None:
        features = data["versions"][0]["features"]
        features[features.index("sse4.1")] = "sse4_1"

    edit_model(catalog_copy, "Haswell", alias)
    error = load_error(catalog_copy)
    assert error.where.startswith("Haswell.json: versions[0].features[")
    assert "write 'sse4_1' as 'sse4.1'" in error.problem


def test_duplicate_version_number_is_reported(catalog_copy: Path) -> None:
    def duplicate(data: dict[str, Any]) -> None:
        data["versions"][2]["version"] = 2

    edit_model(catalog_copy, "Haswell", duplicate)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[2].version"
    assert "version 2 is defined twice" in error.problem


def test_out_of_order_version_number_is_reported_with_the_expected_one(
    catalog_copy: Path,
) -> None:
    def skip(data: dict[str, Any]) -> None:
        data["versions"][1]["version"] = 3

    edit_model(catalog_copy, "Haswell", skip)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[1].version"
    assert "version 3 is out of order (expected 2)" in error.problem


def test_missing_signature_field_of_the_first_version_is_named(catalog_copy: Path) -> None:
    def drop_stepping(data: dict[str, Any]) -> None:
        del data["versions"][0]["signature"]["stepping"]

    edit_model(catalog_copy, "Haswell", drop_stepping)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[0].signature"
    assert "missing field 'stepping'" in error.problem


def test_signature_field_of_the_wrong_type_is_named(catalog_copy: Path) -> None:
    def stringly(data: dict[str, Any]) -> None:
        data["versions"][1]["signature"]["stepping"] = "1"

    edit_model(catalog_copy, "Haswell", stringly)
    error = load_error(catalog_copy)
    assert error.where == "Haswell.json: versions[1].signature.stepping"
    assert "expected an integer" in error.problem


def test_malformed_json_is_reported_with_line_and_column(catalog_copy: Path) -> None:
    path = catalog_copy / "models" / "Haswell.json"
    path.write_text('{\n  "model": "Haswell",\n  "versions": [,]\n}\n')
    error = load_error(catalog_copy)
    assert error.where == str(path)
    assert "not valid JSON at line 3 column" in error.problem


def test_model_in_a_file_of_another_name_is_refused(catalog_copy: Path) -> None:
    (catalog_copy / "models" / "Haswell.json").rename(catalog_copy / "models" / "Hasswell.json")
    error = load_error(catalog_copy)
    assert error.where == "Hasswell.json: model"
    assert "must live in Haswell.json" in error.problem


def test_unknown_bare_rule_of_a_machine_type_is_named(catalog_copy: Path) -> None:
    path = catalog_copy / "machines.json"
    data = json.loads(path.read_text())
    data["machines"]["pc-q35-10.0"]["bare"] = "newest"
    path.write_text(json.dumps(data))
    error = load_error(catalog_copy)
    assert error.where == "machines.json: machines.pc-q35-10.0.bare"


def test_directory_without_catalog_json_is_not_a_catalog(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert "not a catalog directory" in error.problem


def test_error_message_starts_with_the_place(catalog_copy: Path) -> None:
    def duplicate(data: dict[str, Any]) -> None:
        data["versions"][1]["version"] = 1

    edit_model(catalog_copy, "Haswell", duplicate)
    assert str(load_error(catalog_copy)).startswith("Haswell.json: versions[1].version: ")


def test_misspelled_field_of_a_version_is_named(catalog_copy: Path) -> None:
    def typo(data: dict[str, Any]) -> None:
        data["versions"][1]["add"] = ["avx512f"]

    edit_model(catalog_copy, "Haswell", typo)
    error = load_error(catalog_copy)
    assert (error.where, error.problem) == ("Haswell.json: versions[1]", "unknown field 'add'")
