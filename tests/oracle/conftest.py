"""Fixtures of the oracle tests, parametrised by ``qemu_release`` over every QEMU release of the
test set-up (5.2, 7.2, 10.0, 11.1).

``oracle``   the release's QEMU, asked once per (machine type, accelerator) for the whole session
``catalog``  the bundled catalog of that release
"""

from __future__ import annotations

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import bundled_dir, load
from qemu_install import QemuInstall

from .qemu_oracle import Oracle

_ORACLES: dict[str, Oracle] = {}


@pytest.fixture(scope="session")
def oracle(qemu_release: QemuInstall) -> Oracle:
    if qemu_release.release not in _ORACLES:
        _ORACLES[qemu_release.release] = Oracle(qemu_release.binary)
    return _ORACLES[qemu_release.release]


@pytest.fixture(scope="session")
def catalog(qemu_release: QemuInstall) -> Catalog:
    return load(bundled_dir(qemu_release.release))
