"""Replays of real hosts: cpuver, given what QEMU told libvirt about a real Intel or AMD machine,
says of every CPU name what that QEMU said (``alias-of`` and ``unavailable-features``).

Each recording (``tests/replays.py``) is read as any host file is, but without its
``query-cpu-definitions``: those are QEMU's answers, the oracle. Recorded hosts: an Intel Xeon
E3-1245 v5 (QEMU 4.1, 4.2, 5.0), a Xeon Platinum 9242 (4.2), a Cooperlake (5.0), a Hygon C86 7185
(4.1), an AMD Ryzen 9 3900X (5.1 … 10.0) and an AMD EPYC 9654 (9.2, 10.0), under KVM and TCG.
Runs on any machine: no QEMU needed.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cpuver.api.catalogs import open_catalog
from cpuver.features import FeatureTable
from cpuver.resolve import Resolver
from replays import KNOWN_DIFFERENCES, Replay, case_id, cases, evidence_of, replay, short

TOOL = Path(__file__).resolve().parents[2] / "tools" / "extract_tcg_offers.py"

CASES = list(cases())


@pytest.fixture(scope="module")
def replayed() -> dict[str, Replay]:
    return {case_id(entry, form): replay(entry, form) for entry, form in CASES}


@pytest.mark.parametrize(("entry", "form"), CASES, ids=[case_id(e, f) for e, f in CASES])
def test_recorded_host_gets_qemus_alias_of_and_blockers_for_every_name(
    entry: dict[str, Any], form: str, replayed: dict[str, Replay]
) -> None:
    result = replayed[case_id(entry, form)]
    assert result.compared > 0
    assert result.problems == []


def test_every_claimed_release_with_a_recording_is_replayed() -> None:
    releases = {".".join(entry["release"].split(".")[:2]) for entry, _form in CASES}
    assert releases == {
        *("4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1", "6.2", "7.0", "7.1", "7.2"),
        *("8.0", "8.1", "8.2", "9.0", "9.1", "9.2", "10.0"),
    }


def test_the_only_differences_are_the_known_ones(replayed: dict[str, Replay]) -> None:
    """Counted, not hidden: names a recorded QEMU build lists and cpuver's build of that
    release does not (or the reverse)."""
    known = sorted({line for result in replayed.values() for line in result.known})
    assert known == [
        f"10.0.0 {accel} YongFeng-v2: cpuver knows it, QEMU does not list it"
        for accel in ("kvm", "tcg")
    ]
    assert set(KNOWN_DIFFERENCES) == {("10.0", "YongFeng-v2")}


def test_no_recording_leaves_a_feature_unknown_a_model_needs(
    replayed: dict[str, Replay],
) -> None:
    """invtsc is unknown where only a migratable expansion was recorded; no model needs it."""
    unknown = {f for result in replayed.values() for u in result.unknown.values() for f in u}
    assert unknown <= {"invtsc"}


RECORDED_TCG = [(e, f) for e, f in CASES if f == "replies" and e["replies"].endswith(".replies.gz")]


@pytest.mark.parametrize(
    ("entry", "form"), RECORDED_TCG, ids=[case_id(e, f) for e, f in RECORDED_TCG]
)
def test_the_catalogs_own_tcg_offers_give_qemus_recorded_tcg_answers(
    entry: dict[str, Any], form: str
) -> None:
    """Without any host: what TCG offers in that release (imported, or for a derived release
    data/tcg-offers.json from libvirt's recording of its max expansion)."""
    evidence = evidence_of(entry, form).accels["tcg"]
    catalog = open_catalog(short(entry["release"]))
    resolver = Resolver(catalog, "none", "tcg", None)
    table = FeatureTable.bundled()
    assert evidence.definitions is not None
    problems = []
    for ref in catalog.names():
        if ref.name not in evidence.definitions:
            continue
        theirs = {table.canonical(f) if f in table else f for f in evidence.definitions[ref.name]}
        if set(resolver.unavailable(ref)) != theirs:
            problems.append(ref.name)
    assert problems == []


def test_recorded_tcg_offers_are_what_the_tool_extracts(tmp_path: Path) -> None:
    output = tmp_path / "tcg-offers.json"
    subprocess.run(
        [sys.executable, str(TOOL), "--output", str(output)], check=True, capture_output=True
    )
    bundled = Path(str(resources.files("cpuver.catalog") / "data" / "tcg-offers.json"))
    assert output.read_bytes() == bundled.read_bytes()
