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

DEFINITION_CHANGES_BETWEEN_72_AND_100: dict[str, str] = {}
"""Versions present in both bundled catalogs whose definitions differ, and why.

Empty: every version QEMU 7.2.22 has is defined identically in 10.0.2 (QEMU's later edits to
released versions, e.g. model-id of Skylake-*-v3 in 5.0, predate 7.2). Only their notes differ:
see test_only_notes_differ_between_the_bundled_catalogs.
"""


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


def common_versions() -> list[tuple[Version, Version]]:
    old, new = catalog("7.2"), catalog("10.0")
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


def test_golden_files_hold_74_and_90_versions() -> None:
    assert len(read_golden("7.2")["versions"]) == 74
    assert len(read_golden("10.0")["versions"]) == 90


def test_versions_in_both_catalogs_have_the_same_definition() -> None:
    differing = sorted(
        old.name
        for old, new in common_versions()
        if old.definition != new.definition
        and old.name not in DEFINITION_CHANGES_BETWEEN_72_AND_100
    )
    assert differing == []


def test_allow_listed_differences_still_differ() -> None:
    """An allow-list entry whose versions became equal again is stale."""
    stale = sorted(
        old.name
        for old, new in common_versions()
        if old.name in DEFINITION_CHANGES_BETWEEN_72_AND_100 and old.definition == new.definition
    )
    assert stale == []


def test_every_7_2_version_is_still_in_10_0() -> None:
    assert len(common_versions()) == sum(len(m.versions) for m in catalog("7.2").models.values())


def test_versions_in_both_catalogs_keep_aliases_release_and_deprecation() -> None:
    differing = sorted(
        old.name
        for old, new in common_versions()
        if (old.aliases, old.since, old.deprecated) != (new.aliases, new.since, new.deprecated)
    )
    assert differing == []


def test_versions_in_both_catalogs_carry_the_same_note() -> None:
    """Debian's 7.2.22 carries the note corrections upstream made in 10.0 (facts, §4)."""
    differing = sorted(old.name for old, new in common_versions() if old.note != new.note)
    assert differing == []
