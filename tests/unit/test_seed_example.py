"""examples/seed-haswell keeps the seed's promises when resolved by the real resolver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import load
from cpuver.host.capabilities import HostCapabilities
from cpuver.models import Version
from cpuver.resolve import Resolver, Rule

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "seed-haswell"
TOOL = REPO_ROOT / "tools" / "build_seed_example.py"

TSX = frozenset({"hle", "rtm"})
ACCELERATORS = ("kvm", "tcg")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load(EXAMPLE)


def seed_version(catalog: Catalog, since: str) -> Version:
    """The Haswell version the seed named after QEMU release ``since``."""
    (found,) = [v for v in catalog.models["Haswell"].versions if v.since == since]
    return found


def host(
    catalog: Catalog, lacking: frozenset[str] = frozenset(), extra: frozenset[str] = frozenset()
) -> HostCapabilities:
    """A host offering the features of Haswell 3.0.0 (plus ``extra``) except ``lacking``.

    Under KVM it also offers the paravirt features KVM switches on for every model.
    """
    features = (seed_version(catalog, "3.0.0").definition.features | extra) - lacking
    kvm = features | catalog.accelerator("kvm").defaults.on
    return HostCapabilities("seed-test-host", {"kvm": kvm, "tcg": features}, "GenuineIntel")


def test_bare_name_under_pc_q35_2_4_is_the_2_3_0_version(catalog: Catalog) -> None:
    resolver = Resolver(catalog, machine="pc-q35-2.4", accel="tcg")
    definition = resolver.resolve("Haswell").definition
    assert definition == resolver.resolve(seed_version(catalog, "2.3.0").name).definition
    assert "rdrand" in definition.features
    assert not definition.features & (TSX | {"abm"})


def test_every_machine_type_maps_the_bare_name_to_the_newest_version_not_after_it(
    catalog: Catalog,
) -> None:
    def release(version: Version) -> tuple[int, int]:
        major, minor, _ = (version.since or "").split(".")
        return int(major), int(minor)

    for machine in catalog.machines.values():
        assert machine.release is not None
        resolver = Resolver(catalog, machine=machine.name, accel="tcg")
        expected = [v for v in catalog.models["Haswell"].versions if release(v) <= machine.release]
        bare = resolver.resolve("Haswell").definition
        assert bare == resolver.resolve(expected[-1].name).definition, machine.name


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_best_without_tsx_and_without_spectre_microcode_is_2_5_0(
    catalog: Catalog, accel: str
) -> None:
    errata_host = host(catalog, lacking=TSX | {"spec-ctrl", "ssbd"})
    resolution = Resolver(catalog, accel=accel, host=errata_host).resolve("Haswell,version=best")
    assert resolution.rule is Rule.BEST
    assert resolution.version == seed_version(catalog, "2.5.0")


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_best_without_tsx_with_spec_ctrl_is_2_12_0(catalog: Catalog, accel: str) -> None:
    ibrs_host = host(catalog, lacking=TSX | {"ssbd"})
    resolution = Resolver(catalog, accel=accel, host=ibrs_host).resolve("Haswell,version=best")
    assert resolution.version == seed_version(catalog, "2.12.0")


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_best_without_tsx_with_spec_ctrl_and_ssbd_is_3_0_0(catalog: Catalog, accel: str) -> None:
    patched_host = host(catalog, lacking=TSX)
    resolution = Resolver(catalog, accel=accel, host=patched_host).resolve("Haswell,version=best")
    assert resolution.version == seed_version(catalog, "3.0.0")


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_best_with_tsx_without_rdrand_is_1_3_0_and_lists_every_newer_versions_blockers(
    catalog: Catalog, accel: str
) -> None:
    old_host = host(catalog, lacking=frozenset({"rdrand"}), extra=TSX)
    resolution = Resolver(catalog, accel=accel, host=old_host).resolve("Haswell,version=best")
    assert resolution.version == seed_version(catalog, "1.3.0")
    newer = [v.name for v in reversed(catalog.models["Haswell"].versions[1:])]
    assert resolution.blockers == tuple((name, ("rdrand",)) for name in newer)


def test_release_selector_2_2_0_gives_the_2_2_0_definition(catalog: Catalog) -> None:
    resolver = Resolver(catalog, accel="tcg")
    resolution = resolver.resolve("Haswell,version=2.2.0")
    assert resolution.rule is Rule.RELEASE
    assert "pc-i440fx-2.2" in resolution.reason
    assert resolution.definition == resolver.resolve(seed_version(catalog, "2.2.0").name).definition


def test_tool_regenerates_the_example_byte_identically(tmp_path: Path) -> None:
    output = tmp_path / "seed-haswell"
    subprocess.run(
        [sys.executable, str(TOOL), "--output", str(output)], check=True, capture_output=True
    )

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}

    assert files(output) == files(EXAMPLE)
