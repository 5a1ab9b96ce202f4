"""What TCG offered in each QEMU release that has no imported catalog, from QEMU's own answers.

TCG offers the same on every host, and it grew from release to release (AVX in 7.2, x2apic and
rdseed in 8.x ...). An imported catalog records it from QEMU's filter; a derived one (6.0 … 7.1,
8.0 … 9.2) takes it from here: libvirt's recording of that release's ``max`` expansion under TCG
(tests/data/libvirt, ``query-cpu-model-expansion`` with ``migratable`` on and off), read with
QEMU's rules (:mod:`cpuver.host.evidence`), exactly as a host file would be. Also written: each
TCG rule's features and first release, for releases with neither an import nor a recording
(10.1, 10.2). tests/unit/test_releases.py checks the file is what this script makes, and that
each derived catalog's TCG offers give QEMU's recorded TCG answers for every name.

Usage: python tools/extract_tcg_offers.py [--output PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from cpuver.catalog.files import BUNDLED
from cpuver.features import FeatureTable
from cpuver.host import qmp_replies
from cpuver.host.evidence import offer, tcg_rule_features

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "tests" / "data" / "libvirt"
OUTPUT = ROOT / "src" / "cpuver" / "catalog" / "data" / "tcg-offers.json"


def build() -> dict[str, object]:
    table = FeatureTable.bundled()
    every = frozenset(table)
    manifest = json.loads((RECORDINGS / "replays.json").read_text())
    recorded: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    for entry in manifest:
        release = ".".join(entry["release"].split(".")[:2])
        if (
            release in BUNDLED
            or not entry["replies"].endswith(".replies.gz")
            or release in recorded
        ):
            continue
        text = gzip.decompress((RECORDINGS / entry["replies"]).read_bytes()).decode()
        evidence = qmp_replies.read(text, entry["replies"])
        if "tcg" not in evidence.accels:
            continue
        recorded[release] = sorted(offer(evidence.accels["tcg"], release, every, table).features)
        sources[release] = entry["origin"]
    return {
        "about": "TCG offers of QEMU releases without an imported catalog: the max expansion "
        "libvirt recorded for that release, read with QEMU's rules (tools/extract_tcg_offers.py)",
        "sources": dict(sorted(sources.items(), key=lambda i: _key(i[0]))),
        "recorded": dict(sorted(recorded.items(), key=lambda i: _key(i[0]))),
        "rules": [
            {"since": f"{since[0]}.{since[1]}", "features": sorted(features)}
            for since, features in tcg_rule_features(table)
        ],
    }


def _key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


def render(data: dict[str, object]) -> str:
    return json.dumps(data, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    data = build()
    args.output.write_text(render(data), encoding="utf-8")
    releases = ", ".join(json.loads(render(data))["recorded"])
    print(f"wrote {args.output}: TCG offers of {releases}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
