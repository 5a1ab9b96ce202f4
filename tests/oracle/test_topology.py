"""What QEMU adds to a vCPU for its topology (domain/topology.py) equals real QEMU's vCPU.

For one model of every vendor in the catalog, QEMU is started under TCG with several ``-smp``
topologies; the realized vCPU must be cpuver's resolution with :func:`topology_delta` applied.
"""

from __future__ import annotations

import pytest

from cpuver.api import open_catalog
from cpuver.domain.topology import topology_delta
from cpuver.host import qemu as host_qemu
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.launch import vcpu_definition
from cpuver.resolve import Resolver
from qemu_install import QemuInstall

pytestmark = pytest.mark.qemu

# (-smp argument, threads per package)
TOPOLOGIES = [("2,sockets=2,cores=1,threads=1", 1), ("2,sockets=1,cores=2,threads=1", 2)]


def one_model_per_vendor(release: str) -> list[str]:
    catalog = open_catalog(release)
    found: dict[str, str] = {}
    for model in catalog.models.values():
        found.setdefault(model.versions[0].definition.signature.vendor, model.versions[0].name)
    return sorted(found.values())


@pytest.mark.parametrize(("smp", "threads"), TOPOLOGIES, ids=["sockets", "cores"])
def test_realized_vcpu_is_the_model_plus_the_topology_delta(
    qemu_release: QemuInstall, smp: str, threads: int
) -> None:
    catalog = open_catalog(qemu_release.release)
    machine = catalog.default_machine
    tcg = HostCapabilities("tcg", {"tcg": catalog.tcg_offers})
    resolver = Resolver(catalog, machine=machine, accel="tcg", host=tcg)
    install = host_qemu.QemuInstall(qemu_release.binary)
    for name in one_model_per_vendor(qemu_release.release):
        resolution = resolver.resolve(name)
        # QEMU drops what TCG cannot give (no enforce here), then adds the topology bits.
        runnable = resolution.definition.features - frozenset(resolution.missing)
        vendor = resolution.definition.signature.vendor
        expected = runnable | topology_delta(catalog.release, vendor, threads).on
        with host_qemu.QmpSession(install, machine, "tcg", name, extra_args=["-smp", smp]) as qmp:
            path = qmp.command("query-cpus-fast")[0]["qom-path"]
            vm = _Vcpu(qmp, path)
            features, _signature = vcpu_definition(vm)  # type: ignore[arg-type]
        assert features == expected, name


class _Vcpu:
    """The part of launch.RunningVm that vcpu_definition reads, over a plain QMP session."""

    def __init__(self, qmp: host_qemu.QmpSession, path: str) -> None:
        self.qmp = qmp
        self.path = path

    def properties(self) -> frozenset[str]:
        return frozenset(p["name"] for p in self.qmp.command("qom-list", path=self.path))

    def get(self, prop: str) -> object:
        return self.qmp.command("qom-get", path=self.path, property=prop)
