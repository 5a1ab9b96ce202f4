"""Importing a bundled catalog again from its QEMU build reproduces it byte for byte.

The importer needs KVM as well as TCG (the two expansions together tell a model's own features
from each accelerator's defaults), so this test needs ``/dev/kvm``. An import takes one to three
minutes on 2 cores; to keep the suite short this runs for 7.2 and 10.0. The 5.2 and 11.1 catalogs
are proven by the oracle tests of every name, machine type and accelerator, and re-imported and
compared byte for byte by ``bench/bench_import.py`` (``bench/run.py --imports``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cpuver.catalog.files import bundled_dir, dump
from cpuver.host.qemu import QemuInstall as CpuverQemuInstall
from cpuver.importer import import_catalog
from qemu_install import QemuInstall

from .qemu_oracle import report

REGENERATED = ("7.2", "10.0")

pytestmark = [pytest.mark.qemu, pytest.mark.kvm]


def catalog_files(directory: Path) -> dict[str, bytes]:
    """Every file of a catalog directory by relative path (caches and stray files excluded)."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.parametrize("release", REGENERATED)
def test_regenerating_a_bundled_catalog_is_byte_identical(
    qemu_binary: Callable[[str], QemuInstall], release: str, tmp_path: Path
) -> None:
    build = qemu_binary(release)
    dump(import_catalog(CpuverQemuInstall(build.binary)), tmp_path)
    bundled, fresh = catalog_files(bundled_dir(release)), catalog_files(tmp_path)
    problems = [f"{name}: only in the bundled catalog" for name in sorted(bundled.keys() - fresh)]
    problems += [f"{name}: only in the fresh import" for name in sorted(fresh.keys() - bundled)]
    problems += [
        f"{name}: contents differ"
        for name in sorted(bundled.keys() & fresh)
        if bundled[name] != fresh[name]
    ]
    assert not problems, report(f"files differ from {bundled_dir(release)}", problems)
