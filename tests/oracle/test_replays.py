"""Replays of real hosts: cpuver, given what QEMU told libvirt about a real Intel or AMD machine,
says of every CPU name what that QEMU said (``alias-of`` and ``unavailable-features``).

Each recording (``tests/replays.py``) is read as any host file is, but without its
``query-cpu-definitions``: those are QEMU's answers, the oracle. Recorded hosts: an Intel Xeon
E3-1245 v5 (QEMU 4.1, 4.2, 5.0), a Xeon Platinum 9242 (4.2), a Cooperlake (5.0), a Hygon C86 7185
(4.1), an AMD Ryzen 9 3900X (5.1 … 10.0) and an AMD EPYC 9654 (9.2, 10.0), under KVM and TCG.
Runs on any machine: no QEMU needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from replays import KNOWN_DIFFERENCES, Replay, case_id, cases, replay

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
