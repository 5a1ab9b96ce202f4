"""Extract the first release of every QEMU CPU model version from the QEMU history facts.

Usage: python tools/extract_history.py ../shared/qemu-facts/qemu-versions.json \
           src/cpuver/catalog/data/qemu-history.json

The facts were transcribed from QEMU's git history (see their "source" field); the package ships
only what it needs: each versioned name's first release and the releases that edited it later,
and the models QEMU removed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _release(tag: str) -> str:
    return tag.removeprefix("v")


def extract(facts: dict[str, Any]) -> dict[str, Any]:
    versions: dict[str, Any] = {}
    removed_models = [m for m in facts["deprecated_or_removed"] if "versions" in m]
    for model in [*facts["models"], *removed_models]:
        for version in model["versions"]:
            entry: dict[str, Any] = {"since": _release(version["first_release"])}
            edits = sorted(
                {_release(c["release"]) for c in version.get("later_changes_to_this_version", [])}
            )
            if edits:
                entry["edited"] = edits
            versions[version["name"]] = entry
    removed = {
        model["name"]: {"removed": _release(model["removed_in"])}
        for model in removed_models
        if model.get("removed_in")
    }
    return {
        "about": "First release of each QEMU x86 CPU model version (from QEMU's git history).",
        "source": facts["source"]["newest_release"],
        "versions": dict(sorted(versions.items())),
        "removed-models": removed,
    }


def main() -> None:
    facts = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(extract(facts), indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
