"""Ask a QEMU binary where the CPU features the shared facts do not know yet live.

The shared QEMU facts (``qemu-features.json``) end at QEMU 10.2.0; newer QEMU builds know more
feature names. For each name a binary's ``max`` expansion has and ``--known`` does not, a paused
QEMU (``-machine pc -accel tcg -cpu base,<name>=on``) is asked for its vCPU's ``feature-words``
and ``filtered-features`` (QOM properties listing each CPUID word as leaf, subleaf, register and
bit mask): the one bit that appears is the feature's location, whether TCG can give it or not.
Names QEMU reports no bit for are in MSR feature words (QEMU lists only CPUID words there);
their location is taken from ``--msr-facts`` (a file citing where each bit comes from), else the
script stops and says which names are missing.

The output is a fragment in the facts' format (``{"about", "features": [...]}``) for
``tools/build_feature_table.py --more-facts``.

Usage: python tools/qemu_feature_locations.py QEMU_BINARY --known qemu-features.json
       [--msr-facts FILE] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpuver.host.qemu import QemuInstall, QmpSession

NOT_FEATURES = frozenset({"lmce"})
"""Boolean CPU properties in the static expansion that are no feature bit."""


def word_name(
    leaf: int, subleaf: int | None, register: str, known: Sequence[Mapping[str, Any]]
) -> str:
    """QEMU's word name for a CPUID register: the facts' name when they have the register, else
    QEMU's spelling pattern (``FEAT_1E_1_EAX``, ``FEAT_8000_0021_ECX``)."""
    for fact in known:
        if (
            fact["kind"] == "cpuid"
            and int(fact["leaf"], 16) == leaf
            and fact["subleaf"] == subleaf
            and fact["register"] == register
        ):
            return str(fact["word"])
    high, low = leaf >> 16, leaf & 0xFFFF
    head = f"{high:04X}_{low:04X}" if high else f"{leaf:X}"
    return f"FEAT_{head}_{subleaf or 0}_{register.upper()}"


def bits(words: Sequence[Mapping[str, Any]]) -> set[tuple[int, int | None, str, int]]:
    found = set()
    for word in words:
        mask = int(word["features"])
        for bit in range(64):
            if mask >> bit & 1:
                found.add(
                    (
                        int(word["cpuid-input-eax"]),
                        word.get("cpuid-input-ecx"),
                        str(word["cpuid-register"]).lower(),
                        bit,
                    )
                )
    return found


def location(install: QemuInstall, name: str) -> tuple[int, int | None, str, int] | None:
    """The CPUID bit ``name`` sets, or None when QEMU shows none (an MSR feature word)."""
    with QmpSession(install, "pc", "tcg", cpu=f"base,{name}=on") as session:
        path = session.command("query-cpus-fast")[0]["qom-path"]
        found = bits(session.command("qom-get", path=path, property="feature-words"))
        found |= bits(session.command("qom-get", path=path, property="filtered-features"))
    with QmpSession(install, "pc", "tcg", cpu="base") as session:
        path = session.command("query-cpus-fast")[0]["qom-path"]
        found -= bits(session.command("qom-get", path=path, property="feature-words"))
    if len(found) > 1:
        raise SystemExit(f"{name}: QEMU shows {len(found)} bits: {sorted(found)}")
    return found.pop() if found else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("qemu", type=Path, help="the qemu-system-x86_64 to ask")
    parser.add_argument("--known", type=Path, required=True, help="qemu-facts/qemu-features.json")
    parser.add_argument("--msr-facts", type=Path, help="cited locations of MSR feature bits")
    parser.add_argument("--output", type=Path, help="where to write (default: standard output)")
    args = parser.parse_args(argv)
    install = QemuInstall(args.qemu)
    build = install.version()
    known = json.loads(args.known.read_text(encoding="utf-8"))["features"]
    spellings = {fact["name"] for fact in known} | {a for f in known for a in f["aliases"]}
    with QmpSession(install, "none", "tcg") as session:
        props = session.static_expansion("max")
    new = sorted(
        name
        for name, value in props.items()
        if isinstance(value, bool) and name not in spellings and name not in NOT_FEATURES
    )
    msr: dict[str, Any] = {}
    if args.msr_facts:
        msr = {f["name"]: f for f in json.loads(args.msr_facts.read_text())["features"]}
    features = []
    unlocated = []
    for name in new:
        found = location(install, name)
        if found is None:
            if name not in msr:
                unlocated.append(name)
                continue
            features.append({**msr[name], "first_release_known": f"<=v{build.split()[3]}"})
            continue
        leaf, subleaf, register, bit = found
        features.append(
            {
                "name": name,
                "aliases": [],
                "word": word_name(leaf, subleaf, register, known),
                "kind": "cpuid",
                "leaf": f"{leaf:#x}",
                "subleaf": subleaf,
                "register": register,
                "bit": bit,
                "first_release_known": f"<=v{build.split()[3]}",
            }
        )
    if unlocated:
        raise SystemExit(f"no location for MSR features {unlocated}: add them to --msr-facts")
    fragment = {
        "about": (
            f"Feature names {build} knows beyond the shared facts: CPUID locations read from "
            "the binary (feature-words / filtered-features of a vCPU with the feature on)"
            + (f"; MSR bits from {args.msr_facts.name}" if msr else "")
        ),
        "features": features,
    }
    text = json.dumps(fragment, indent=1) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(f"{len(features)} features beyond the facts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
