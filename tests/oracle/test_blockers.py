"""cpuver's blockers of every name are QEMU's ``unavailable-features`` on this machine.

QEMU's ``unavailable-features`` of every name (one process per accelerator, under the release's
default machine type) is compared with cpuver's blockers, given what cpuver's QEMU probe says the
accelerator offers (QEMU's own filter on a vCPU asking for every feature: the plain ``host`` /
``max`` expansion under-reports, e.g. ``topoext``, ``invtsc``, TCG's ``arch-capabilities`` bits).
For TCG without a host, the catalog's own record of what TCG offers must give the same answer.
Lists are compared as sets: QEMU repeats a name once per XSAVE component it needs.
"""

from __future__ import annotations

import pytest

from cpuver.catalog import Catalog
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.qemu import offered_features
from cpuver.resolve import Resolver

from .qemu_oracle import Oracle, report

pytestmark = pytest.mark.qemu


def blocker_problems(
    catalog: Catalog, oracle: Oracle, accel: str, host: HostCapabilities | None
) -> list[str]:
    machine = catalog.default_machine
    answers = oracle.answers(machine, accel)
    resolver = Resolver(catalog, machine=machine, accel=accel, host=host)
    problems = []
    for ref in catalog.names():
        if ref.name not in answers.definitions:
            problems.append(f"{ref.name}: QEMU does not know this name")
            continue
        ours = set(resolver.blockers(resolver.effective(ref)))
        theirs = {str(f) for f in answers.definitions[ref.name].get("unavailable-features", [])}
        if ours != theirs:
            extra, missing = sorted(ours - theirs), sorted(theirs - ours)
            problems.append(
                f"{machine} {accel} {ref.name}: only cpuver blocks on {extra}, "
                f"only QEMU on {missing}"
            )
    return problems


def probed(oracle: Oracle, accel: str) -> HostCapabilities:
    offered, vendor = offered_features(oracle.install, accel)
    return HostCapabilities("this machine", {accel: offered}, vendor)


def test_blockers_equal_unavailable_features_under_tcg(catalog: Catalog, oracle: Oracle) -> None:
    problems = blocker_problems(catalog, oracle, "tcg", probed(oracle, "tcg"))
    assert not problems, report("names whose blockers differ from QEMU (TCG)", problems)


def test_catalog_tcg_offers_give_qemus_unavailable_features(
    catalog: Catalog, oracle: Oracle
) -> None:
    problems = blocker_problems(catalog, oracle, "tcg", None)
    assert not problems, report("names whose blockers differ from QEMU (TCG, catalog)", problems)


@pytest.mark.kvm
def test_blockers_equal_unavailable_features_under_kvm(catalog: Catalog, oracle: Oracle) -> None:
    problems = blocker_problems(catalog, oracle, "kvm", probed(oracle, "kvm"))
    assert not problems, report("names whose blockers differ from QEMU (KVM)", problems)
