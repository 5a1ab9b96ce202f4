"""Extract what the package needs from the QEMU history facts into the bundled history file.

Usage: python tools/extract_history.py ../shared/qemu-facts/qemu-versions.json \
           src/cpuver/catalog/data/qemu-history.json

The facts were transcribed from QEMU's git history (see their "source" field); the package ships
only what it needs to describe QEMU releases other than the bundled builds
(:mod:`cpuver.catalog.releases`):

- the releases covered and, per release, QEMU's counts of models, versions and alias names;
- for every versioned name: its first release (``since``) and the releases that edited it later
  (``edited``); for edited versions also what QEMU registered at each of those releases
  (``as-released``: alias, note and props), so a release before an edit can be described;
- for versions first released after ``NEWEST_BUNDLED``, and for every version of a model QEMU
  removed (no newer import has it; the imported 5.2 is its base): their alias, note, props exactly
  as QEMU writes them (``[["cet-ss", "on"], ["model-id", "..."]]``) and the name of the cache
  model they select, if any;
- for models first released after the newest bundled catalog: their base definition (vendor,
  family, model, stepping, model-id, min-level, min-xlevel, base features, cache model);
- the models QEMU removed, with the release that removed them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NEWEST_BUNDLED = (10, 0, 0)
"""The newest release a bundled catalog describes; props are kept only for versions after it."""


def _release(tag: str) -> str:
    return tag.removeprefix("v")


def _key(release: str) -> tuple[int, ...]:
    """``10.1.0`` -> ``(10, 1, 0)``; suffixes of early tags (``0.12.0~branch``) are ignored."""
    return tuple(int(part) for part in release.split("~")[0].split("."))


def _registration(record: dict[str, Any], release: str) -> dict[str, Any]:
    """What QEMU registered for one version at one release."""
    return {
        "release": release,
        "alias": record.get("alias"),
        "note": record.get("note"),
        "props": record["props"],
    }


def _version_entry(version: dict[str, Any], removed: bool = False) -> dict[str, Any]:
    since = _release(version["first_release"])
    entry: dict[str, Any] = {"since": since}
    changes = version.get("later_changes_to_this_version") or []
    edits = sorted({_release(c["release"]) for c in changes}, key=_key)
    if edits:
        entry["edited"] = edits
        first = version.get("as_first_released")
        if first is None:
            raise SystemExit(f"{version['name']}: edited, but the facts lack as_first_released")
        entry["as-released"] = [
            _registration(first, _release(first["release"])),
            *(_registration(c, _release(c["release"])) for c in changes),
        ]
    if _key(since) > NEWEST_BUNDLED or removed:
        entry["alias"] = version.get("alias")
        entry["note"] = version.get("note")
        entry["props"] = version["props"]
        if version.get("cache_info"):
            entry["cache-info"] = version["cache_info"]
    return entry


def _model_entry(model: dict[str, Any]) -> dict[str, Any]:
    features = sorted({name for names in model["base_features_v1"].values() for name in names})
    entry: dict[str, Any] = {
        "since": _release(model["unversioned_name_first_release"]),
        "vendor": model["vendor"],
        "family": model["family"],
        "model": model["model"],
        "stepping": model["stepping"],
        "model-id": model["model_id"],
        "min-level": int(model["min_level"], 16),
        "min-xlevel": int(model["min_xlevel"], 16),
        "features": features,
    }
    if model.get("base_cache_info"):
        entry["cache-info"] = model["base_cache_info"]
    return entry


def extract(facts: dict[str, Any]) -> dict[str, Any]:
    versions: dict[str, Any] = {}
    models: dict[str, Any] = {}
    removed_models = [m for m in facts["deprecated_or_removed"] if "versions" in m]
    for model in [*facts["models"], *removed_models]:
        for version in model["versions"]:
            versions[version["name"]] = _version_entry(version, model in removed_models)
        first = _release(model["unversioned_name_first_release"])
        if _key(first) > NEWEST_BUNDLED and "base_features_v1" in model:
            models[model["name"]] = _model_entry(model)
    removed = {
        model["name"]: {"removed": _release(model["removed_in"])}
        for model in removed_models
        if model.get("removed_in")
    }
    counts = facts["counts"]
    return {
        "about": "QEMU x86 CPU model history (from QEMU's git history): first release of each "
        "versioned name, later edits, definitions of what is newer than the bundled catalogs.",
        "source": facts["source"]["newest_release"],
        "releases": [_release(tag) for tag in counts["releases_covered"]],
        "counts": {
            _release(tag): {
                "models": count["models"],
                "versions": count["versions"],
                "alias-names": count["alias_names"],
            }
            for tag, count in counts["per_release"].items()
        },
        "versions": dict(sorted(versions.items())),
        "models": dict(sorted(models.items())),
        "removed-models": removed,
    }


def main() -> None:
    facts = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(extract(facts), indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
