"""Build ``examples/seed-haswell``: the seed's illustrative Haswell history as a cpuver catalog.

The seed named Haswell's versions after QEMU releases and let each old machine type keep the
Haswell of its release. That history is illustrative, not QEMU's (design.md section 4: QEMU
added rdrand in 2.3.0 and never removed TSX from ``Haswell``); the bundled catalogs follow QEMU,
this example follows the seed:

====  ========  ===================================================================
 v     since     change
====  ========  ===================================================================
 1     1.3.0     first version: QEMU's Haswell base without rdrand and abm
 2     2.2.0     +rdrand
 3     2.3.0     -hle -rtm (TSX removed: microcode errata)
 4     2.5.0     +abm
 5     2.12.0    +spec-ctrl (Spectre v2)
 6     3.0.0     +ssbd (Spectre v4)
====  ========  ===================================================================

Machine types ``pc-i440fx-X.Y`` and ``pc-q35-X.Y`` exist for every minor release 1.3 .. 3.0. The
seed maps the bare name ``Haswell`` under release X.Y to the newest version not newer than X.Y.
The catalog format has no "bare name -> version N" rule per machine type (only v1 / latest /
legacy), so each machine type says ``bare: v1`` and carries a compat delta for the type name
``Haswell`` that turns v1 into that version's definition, which is what QEMU's own per-model
compat properties do for old machine types.

Signature, v1 features (apart from the two the seed adds later), accelerator defaults and what TCG
offers are taken from the bundled QEMU 10.0 catalog, whose Haswell-v1 is QEMU's
``base_features_v1`` for Haswell plus ``hypervisor`` (which QEMU turns on for every model). The
catalog is built from cpuver's own types and written with ``cpuver.catalog.files.dump``, so it
is valid by construction and re-running the script gives identical bytes (a test checks it).
The hand-written README.md in the output directory is left alone.

Usage: python tools/build_seed_example.py [--output DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cpuver.catalog import Accelerator, Catalog
from cpuver.catalog.files import bundled_dir, dump, load
from cpuver.models import BareRule, Definition, Delta, MachineType, Model, Version, machine_release

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "examples" / "seed-haswell"

MODEL = "Haswell"
SOURCE_RELEASE = "10.0"
"""The bundled catalog that provides the signature, the base features and the accelerators."""

RELEASE = "3.0.0"
"""The release this example catalog pretends to be: its newest machine types are 3.0."""
BUILD = (
    "cpuver seed example: illustrative Haswell history (not a QEMU build), "
    "written by tools/build_seed_example.py from the bundled QEMU 10.0 catalog"
)

NOT_IN_FIRST_VERSION = frozenset({"rdrand", "abm"})
"""QEMU's Haswell base features the seed's 1.3.0 lacks because the seed adds them later.
(QEMU facts: rdrand came in QEMU 2.3.0, turned off by pc_compat_2_2; abm in 2.5.0, turned off by
pc_compat_2_4. QEMU 1.3's Haswell also lacked f16c and vme, added in 2.3.0; the seed never adds
them, so they stay in its 1.3.0 to keep every seed version a complete Haswell.)"""

# (since, features added, features removed, note): one entry per version, in order.
HISTORY: tuple[tuple[str, frozenset[str], frozenset[str], str], ...] = (
    ("1.3.0", frozenset(), frozenset(), "first version"),
    ("2.2.0", frozenset({"rdrand"}), frozenset(), "RDRAND added"),
    ("2.3.0", frozenset(), frozenset({"hle", "rtm"}), "TSX removed (microcode errata)"),
    ("2.5.0", frozenset({"abm"}), frozenset(), "ABM (LZCNT) added"),
    ("2.12.0", frozenset({"spec-ctrl"}), frozenset(), "IBRS/IBPB (spec-ctrl) added: Spectre v2"),
    (
        "3.0.0",
        frozenset({"ssbd"}),
        frozenset(),
        "SSBD added: Spectre v4 (speculative store bypass)",
    ),
)

MACHINE_RELEASES: tuple[tuple[int, int], ...] = (
    *((1, minor) for minor in range(3, 8)),
    *((2, minor) for minor in range(13)),
    (3, 0),
)
"""Every minor QEMU release from 1.3 to 3.0, each with a pc-i440fx and a pc-q35 machine type."""


def release_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


def build_model(source: Catalog) -> Model:
    """The seed's Haswell: v1 from the bundled catalog's Haswell-v1, then the seed's history."""
    base = source.models[MODEL].versions[0].definition
    definition = Definition(base.signature, base.features - NOT_IN_FIRST_VERSION)
    versions = []
    for number, (since, added, removed, note) in enumerate(HISTORY, start=1):
        definition = definition.apply(Delta(on=added, off=removed))
        versions.append(Version(MODEL, number, definition, note=note, since=since))
    return Model(MODEL, tuple(versions))


def bare_version(model: Model, release: tuple[int, int]) -> Version:
    """The seed's rule: the newest version whose release is not newer than the machine type's."""
    eligible = [v for v in model.versions if release_tuple(v.since or "0")[:2] <= release]
    return eligible[-1]


def build_machines(model: Model) -> dict[str, MachineType]:
    """pc-i440fx-X.Y and pc-q35-X.Y mapping the bare name to the seed's version of X.Y."""
    newest = max(MACHINE_RELEASES)
    machines = {}
    for family, alias in (("pc-i440fx", "pc"), ("pc-q35", "q35")):
        for release in MACHINE_RELEASES:
            name = f"{family}-{release[0]}.{release[1]}"
            target = bare_version(model, release)
            machines[name] = MachineType(
                name=name,
                bare=BareRule.V1,
                release=machine_release(name),
                alias=alias if release == newest else None,
                versions=((model.name, target.number),) if target.number != 1 else (),
            )
    return machines


def build_catalog(source: Catalog) -> Catalog:
    model = build_model(source)
    versions = {v.name for v in model.versions}
    accelerators = {
        name: Accelerator(
            name,
            acc.defaults,
            acc.host_vendor,
            tuple((v, delta) for v, delta in acc.levels if v in versions),
        )
        for name, acc in source.accelerators.items()
    }
    return Catalog(
        release=RELEASE,
        build=BUILD,
        models={model.name: model},
        machines=build_machines(model),
        accelerators=accelerators,
        tcg_offers=source.tcg_offers,
        source="tools/build_seed_example.py",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="catalog directory")
    args = parser.parse_args(argv)
    catalog = build_catalog(load(bundled_dir(SOURCE_RELEASE)))
    dump(catalog, args.output)
    written = load(args.output)
    if written.models != catalog.models or written.machines != catalog.machines:
        print(f"{args.output}: does not read back as written", file=sys.stderr)
        return 1
    print(
        f"wrote {args.output}: {sum(len(m.versions) for m in catalog.models.values())} versions, "
        f"{len(catalog.machines)} machine types",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
