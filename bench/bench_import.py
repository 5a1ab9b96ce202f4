"""(m) Importing a catalog from each QEMU release cpuver imports: 5.2 (bullseye), 7.2 (bookworm),
10.0 (trixie) and 11.1 (trixie-backports), each the binary ``./dev setup`` unpacks.

Timed: :func:`cpuver.importer.import_catalog` from start to the catalog in memory (every
``-vN`` name expanded under TCG and KVM, every machine type under TCG and KVM, QEMU's filter for
TCG, ``-cpu help``), once per release; the result is checked against the bundled catalog. Needs
``/dev/kvm``. Takes minutes: ``bench/run.py --imports`` includes it.

Run alone: ``.venv/bin/python bench/bench_import.py [RELEASE ...]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Result

sys.path.insert(0, str(ROOT / "tests"))

from cpuver.catalog.files import BUNDLED, bundled_dir, dump
from cpuver.host.kvm import kvm_usable
from cpuver.host.qemu import QemuInstall
from cpuver.importer import import_catalog
from qemu_install import find


def same_files(a: Path, b: Path) -> bool:
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*.json")}  # noqa: E731
    return files(a) == files(b)


def run(releases: tuple[str, ...] = BUNDLED) -> list[Result]:
    if not kvm_usable():
        return [Result("(m) catalog import", "—", "skipped: importing needs /dev/kvm", "INFO")]
    results = []
    for release in releases:
        found = find(release)
        if isinstance(found, str):
            results.append(Result(f"(m) import QEMU {release}", "—", f"skipped: {found}", "INFO"))
            continue
        install = QemuInstall(found.binary)
        started = time.perf_counter()
        catalog = import_catalog(install)
        took = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as out:
            dump(catalog, Path(out))
            same = same_files(Path(out), bundled_dir(release))
        versions = sum(len(m.versions) for m in catalog.models.values())
        figure = (
            f"{took:.0f} s: {len(catalog.models)} models, {versions} versions, "
            f"{len(catalog.machines)} machine types ({'same as' if same else 'DIFFERS from'} "
            "the bundled catalog)"
        )
        name = f"(m) import QEMU {catalog.release}"
        details = [install.version()]
        results.append(Result(name, "—", figure, "INFO", details, {"seconds": took}))
    return results


if __name__ == "__main__":
    for result in run(tuple(sys.argv[1:]) or BUNDLED):
        print(result.line())
