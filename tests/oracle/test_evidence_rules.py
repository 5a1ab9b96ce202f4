"""QEMU's rules, applied to what each imported QEMU shows of this machine, give what its filter
offers: for every release (5.2, 7.2, 10.0, 11.1), TCG and (where it answers) KVM.

QEMU is asked what libvirt asks it (static expansions of ``host``/``max`` with ``migratable`` on
and off, ``query-cpu-definitions`` under ``-machine none``); cpuver reads that as any host file
(:mod:`cpuver.host.evidence`), without the definitions, and must offer exactly what QEMU's own
filter offers (a vCPU asking for every feature: :func:`cpuver.host.qemu.offered_features`) and
block every name exactly as QEMU does.
"""

from __future__ import annotations

import pytest

from cpuver.api.catalogs import open_catalog
from cpuver.api.evidence import offers_of
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.evidence import AccelEvidence, Expansion
from cpuver.host.qemu import QemuInstall, QmpSession, offered_features
from cpuver.resolve import Resolver
from qemu_install import QemuInstall as Build

from .qemu_oracle import report

pytestmark = pytest.mark.qemu

MAXIMAL = {"kvm": "host", "tcg": "max"}


def asked(build: Build, accel: str) -> AccelEvidence:
    """What a management layer asks QEMU, once per accelerator."""
    with QmpSession(QemuInstall(build.binary), "none", accel) as session:
        expansions = tuple(
            Expansion(
                MAXIMAL[accel],
                "static",
                migratable,
                session.command(
                    "query-cpu-model-expansion",
                    type="static",
                    model={"name": MAXIMAL[accel], "props": {"migratable": migratable}},
                )["model"]["props"],
            )
            for migratable in (True, False)
        )
        definitions = {
            str(d["name"]): tuple(d.get("unavailable-features", []))
            for d in session.command("query-cpu-definitions")
        }
    return AccelEvidence(accel, expansions, definitions)


def check(build: Build, accel: str) -> list[str]:
    catalog = open_catalog(build.release)
    evidence = asked(build, accel)
    found = offers_of(evidence, build.release, catalog, use_definitions=False)
    filtered, vendor = offered_features(QemuInstall(build.binary), accel)
    known = catalog.known_features
    problems = [f"only the rules offer {f}" for f in sorted((found.features - filtered) & known)]
    problems += [
        f"only QEMU's filter offers {f}" for f in sorted((filtered - found.features) & known)
    ]
    host = HostCapabilities("this machine", {accel: found.features}, vendor)
    resolver = Resolver(catalog, "none", accel, host)
    for ref in catalog.names():
        qemu = set(evidence.definitions[ref.name]) if evidence.definitions else set()
        ours = set(resolver.unavailable(ref))
        if ours != qemu:
            problems.append(
                f"{ref.name}: only cpuver {sorted(ours - qemu)}, QEMU {sorted(qemu - ours)}"
            )
    assert found.unknown == {}, found.unknown
    return problems


def test_rules_on_the_tcg_expansion_give_qemus_filter(qemu_release: Build) -> None:
    problems = check(qemu_release, "tcg")
    assert not problems, report(f"differences from QEMU {qemu_release.release} (TCG)", problems)


@pytest.mark.kvm
def test_rules_on_the_host_expansion_give_qemus_filter(qemu_release: Build) -> None:
    problems = check(qemu_release, "kvm")
    assert not problems, report(f"differences from QEMU {qemu_release.release} (KVM)", problems)


@pytest.mark.kvm
def test_a_migratable_host_expansion_alone_leaves_invtsc_unknown(qemu111: Build) -> None:
    evidence = asked(qemu111, "kvm")
    alone = AccelEvidence("kvm", evidence.expansions[:1], None)
    found = offers_of(alone, "11.1", open_catalog("11.1"))
    assert set(found.unknown) == {"invtsc"}
    assert found.unknown["invtsc"].startswith("not in QEMU's expansion")
