"""A released CPU version never changes: every bundled version's flat definition is recorded.

``data/qemu-<release>.json`` holds, for every version of every model of a bundled catalog, its
signature and sorted features. To record a deliberate change (a new bundled catalog, a new
version), regenerate and review the diff::

    CPUVER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/golden -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import BUNDLED, bundled_dir, dumps, load
from cpuver.models import Version

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("CPUVER_UPDATE_GOLDEN") == "1"

CONSECUTIVE = (("5.2", "7.2"), ("7.2", "10.0"), ("10.0", "11.1"))
"""Pairs of consecutive imported catalogs."""

DEFINITION_CHANGES: dict[tuple[str, str], dict[str, str]] = {
    ("5.2", "7.2"): {
        "qemu64-v1": "QEMU 6.1 gave qemu64 family/model/stepping 15/107/1 (was 6/6/3); "
        "pc_compat_6_0 restores the old values for the bare name under old machine types only",
    },
}
"""Versions present in two consecutive imports whose definitions differ, and why.

Every other version is defined identically (QEMU's other edits to released versions, e.g.
model-id of Skylake-*-v3 in 5.0, predate 5.2). Notes differ only where QEMU corrected them:
see test_notes_differ_only_where_qemu_corrected_them.
"""

NOTE_CORRECTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("5.2", "7.2"): frozenset({"Cascadelake-Server-v4", "Skylake-Server-v4"}),
}
"""Notes upstream corrected in 10.0 (93dcc9390e), which Debian's 7.2.22 carries already."""


@cache
def catalog(release: str) -> Catalog:
    return load(bundled_dir(release))


def flat(version: Version) -> dict[str, Any]:
    return {
        "signature": version.definition.signature.as_dict(),
        "features": sorted(version.definition.features),
    }


def flatten(cat: Catalog) -> dict[str, Any]:
    return {
        "release": cat.release,
        "build": cat.build,
        "versions": {
            version.name: flat(version)
            for model in sorted(cat.models.values(), key=lambda m: m.name)
            for version in model.versions
        },
    }


def golden_path(release: str) -> Path:
    return DATA / f"qemu-{release}.json"


def write_golden(release: str) -> None:
    DATA.mkdir(exist_ok=True)
    golden_path(release).write_text(dumps(flatten(catalog(release))) + "\n")


def read_golden(release: str) -> dict[str, Any]:
    if UPDATE:
        write_golden(release)
    data: dict[str, Any] = json.loads(golden_path(release).read_text())
    return data


def common_versions(old_release: str, new_release: str) -> list[tuple[Version, Version]]:
    old, new = catalog(old_release), catalog(new_release)
    return [
        (version, found)
        for model in old.models.values()
        for version in model.versions
        if model.name in new.models
        and (found := new.models[model.name].version(version.number)) is not None
    ]


@pytest.mark.parametrize("release", BUNDLED)
def test_golden_file_is_for_the_bundled_build(release: str) -> None:
    golden = read_golden(release)
    assert (golden["release"], golden["build"]) == (
        catalog(release).release,
        catalog(release).build,
    )


@pytest.mark.parametrize("release", BUNDLED)
def test_bundled_catalog_has_exactly_the_recorded_versions(release: str) -> None:
    recorded = set(read_golden(release)["versions"])
    present = set(flatten(catalog(release))["versions"])
    assert sorted(present - recorded) == [], "new versions: regenerate the golden file"
    assert sorted(recorded - present) == [], "a released version was removed"


@pytest.mark.parametrize("release", BUNDLED)
def test_every_released_version_keeps_its_recorded_definition(release: str) -> None:
    recorded = read_golden(release)["versions"]
    changed = sorted(
        name
        for name, definition in flatten(catalog(release))["versions"].items()
        if name in recorded and recorded[name] != definition
    )
    assert changed == []


def test_golden_files_hold_64_74_90_and_123_versions() -> None:
    counts = {release: len(read_golden(release)["versions"]) for release in BUNDLED}
    assert counts == {"5.2": 64, "7.2": 74, "10.0": 90, "11.1": 123}


@pytest.mark.parametrize("pair", CONSECUTIVE, ids="-".join)
def test_versions_in_both_catalogs_have_the_same_definition(pair: tuple[str, str]) -> None:
    allowed = DEFINITION_CHANGES.get(pair, {})
    differing = sorted(
        old.name
        for old, new in common_versions(*pair)
        if old.definition != new.definition and old.name not in allowed
    )
    assert differing == []


@pytest.mark.parametrize("pair", CONSECUTIVE, ids="-".join)
def test_allow_listed_differences_still_differ(pair: tuple[str, str]) -> None:
    """An allow-list entry whose versions became equal again is stale."""
    allowed = DEFINITION_CHANGES.get(pair, {})
    stale = sorted(
        old.name
        for old, new in common_versions(*pair)
        if old.name in allowed and old.definition == new.definition
    )
    assert stale == []


@pytest.mark.parametrize("pair", CONSECUTIVE, ids="-".join)
def test_every_version_is_still_in_the_next_import_unless_its_model_was_removed(
    pair: tuple[str, str],
) -> None:
    old, new = catalog(pair[0]), catalog(pair[1])
    kept = {v.name for v, _n in common_versions(*pair)}
    lost = {v.name for m in old.models.values() for v in m.versions} - kept
    assert {name.rsplit("-v", 1)[0] for name in lost} <= set(old.models) - set(new.models)
    assert pair != ("5.2", "7.2") or lost == {"Icelake-Client-v1", "Icelake-Client-v2"}


@pytest.mark.parametrize("pair", CONSECUTIVE, ids="-".join)
def test_versions_in_both_catalogs_keep_aliases_release_and_deprecation(
    pair: tuple[str, str],
) -> None:
    differing = sorted(
        old.name
        for old, new in common_versions(*pair)
        if (old.aliases, old.since, old.deprecated) != (new.aliases, new.since, new.deprecated)
    )
    assert differing == []


@pytest.mark.parametrize("pair", CONSECUTIVE, ids="-".join)
def test_notes_differ_only_where_qemu_corrected_them(pair: tuple[str, str]) -> None:
    """Debian's 7.2.22 carries the note corrections upstream made in 10.0 (facts, §4)."""
    differing = {old.name for old, new in common_versions(*pair) if old.note != new.note}
    assert differing == NOTE_CORRECTIONS.get(pair, frozenset())
