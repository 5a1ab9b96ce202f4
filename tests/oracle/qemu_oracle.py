"""Ask a real QEMU what it thinks, once per (machine type, accelerator), and compare answers.

An :class:`Oracle` wraps one QEMU build. For each (machine type, accelerator) it starts one paused
QEMU, reads ``query-cpu-definitions``, the static expansion of every CPU name QEMU lists and of
the accelerator's offer model (``host`` for KVM, ``max`` for TCG), and caches the lot. Many pairs
can be fetched at once on a small thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpuver.catalog import NameKind, NameRef
from cpuver.host.qemu import QemuInstall, QmpSession
from cpuver.importer import NOT_FEATURE_WORD_PROPS
from cpuver.models import SIGNATURE_FIELDS, Definition

NOT_CPU_MODELS = frozenset({"base", "host", "max"})
"""Names in ``query-cpu-definitions`` that are no catalog model (QEMU's own helpers)."""

OFFER_MODEL = {"kvm": "host", "tcg": "max"}
"""The CPU model whose static expansion says what an accelerator can give a guest."""

WORKERS = 2
"""QEMU processes started at once (the oracle suite must run on 2 cores)."""

SHOWN = 20
"""How many mismatches an assertion message lists."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What one QEMU process (``-machine machine -accel accel``) said."""

    machine: str
    accel: str
    definitions: Mapping[str, Mapping[str, Any]]
    """``query-cpu-definitions`` entries by name, without base/host/max."""
    expansions: Mapping[str, Mapping[str, Any]]
    """Static expansion props of every name in ``definitions``."""
    offers: Mapping[str, Any]
    """Static expansion props of ``host`` (KVM) or ``max`` (TCG)."""


def ask(install: QemuInstall, machine: str, accel: str) -> Answers:
    """Start QEMU once and read everything the oracle tests compare."""
    with QmpSession(install, machine, accel) as session:
        listed = session.command("query-cpu-definitions")
        definitions = {
            str(entry["name"]): dict(entry)
            for entry in listed
            if entry["name"] not in NOT_CPU_MODELS
        }
        expansions = {name: session.static_expansion(name) for name in definitions}
        offers = session.static_expansion(OFFER_MODEL[accel])
    return Answers(machine, accel, definitions, expansions, offers)


class Oracle:
    """One QEMU build's answers, cached per (machine type, accelerator); thread-safe."""

    def __init__(self, binary: Path) -> None:
        self.install = QemuInstall(binary)
        self._cache: dict[tuple[str, str], Answers] = {}
        self._lock = threading.Lock()

    def answers(self, machine: str, accel: str) -> Answers:
        key = (machine, accel)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        fresh = ask(self.install, machine, accel)
        with self._lock:
            return self._cache.setdefault(key, fresh)

    def many(self, machines: Iterable[str], accel: str) -> dict[str, Answers]:
        """Answers for every machine type, fetched :data:`WORKERS` QEMU processes at a time."""
        wanted = list(dict.fromkeys(machines))
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            fetched = list(pool.map(lambda machine: self.answers(machine, accel), wanted))
        return dict(zip(wanted, fetched, strict=True))

    def machine_list(self) -> list[dict[str, Any]]:
        """``query-machines`` (asked under ``-machine none``)."""
        with QmpSession(self.install, "none", "tcg") as session:
            return [dict(entry) for entry in session.command("query-machines")]


def features_of(props: Mapping[str, Any]) -> frozenset[str]:
    """Enabled feature bits of a static expansion (what the importer calls features)."""
    return frozenset(
        name
        for name, value in props.items()
        if value is True and name not in NOT_FEATURE_WORD_PROPS
    )


def signature_of(props: Mapping[str, Any]) -> dict[str, Any]:
    return {name: props.get(name) for name in SIGNATURE_FIELDS}


def definition_mismatch(expected: Definition, props: Mapping[str, Any]) -> str | None:
    """How cpuver's ``expected`` definition differs from QEMU's expansion, or None if it does not.

    ``+f`` is a feature QEMU has and cpuver lacks, ``-f`` one cpuver has and QEMU lacks.
    """
    got = features_of(props)
    parts = [f"+{f}" for f in sorted(got - expected.features)]
    parts += [f"-{f}" for f in sorted(expected.features - got)]
    want_sig, got_sig = expected.signature.as_dict(), signature_of(props)
    parts += [
        f"{field}: cpuver {want_sig[field]!r}, QEMU {got_sig[field]!r}"
        for field in SIGNATURE_FIELDS
        if want_sig[field] != got_sig[field]
    ]
    return ", ".join(parts) or None


def expected_deprecated(ref: NameRef) -> bool:
    """Whether cpuver says QEMU lists ``ref`` as deprecated."""
    if ref.kind is NameKind.BARE or ref.version is None:
        return ref.model.deprecated
    return ref.version.deprecated


def report(what: str, problems: list[str]) -> str:
    """An assertion message: how many problems, then the first :data:`SHOWN` of them."""
    shown = "\n  ".join(problems[:SHOWN])
    more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return f"{len(problems)} {what}:\n  {shown}{more}"
