"""Every CPU name under every machine type means in the bundled catalog what it means in QEMU.

For each release the QEMU build the catalog was imported from is asked directly: which names
exist and what ``alias-of`` each has (``query-cpu-definitions``), and what each name expands to
(``query-cpu-model-expansion`` static) under every machine type with TCG, and under a
representative set of machine types with KVM.
"""

from __future__ import annotations

import pytest

from cpuver.catalog import Catalog
from cpuver.errors import QemuError
from cpuver.host.qemu import QemuInstall as CpuverQemuInstall

from .qemu_oracle import Answers, Oracle, definition_mismatch, expected_deprecated, report

pytestmark = pytest.mark.qemu

KVM_MACHINES = ("default", "none", "microvm", "isapc", "pc-i440fx-2.12", "pc-q35-2.12")
"""Machine types checked under KVM: the release's default (``default``), no machine, microvm
(latest versions for bare names in 10.0, split irqchip), and legacy ones whose compat properties
change bare names (in 11.1, which has no pc-*-2.12, its oldest pc-i440fx and pc-q35)."""


def machine_named(catalog: Catalog, name: str) -> str:
    if name == "default":
        return catalog.default_machine
    if name in catalog.machines or not name.startswith("pc-"):
        return name
    family = name.rsplit("-", 1)[0]
    same = [m for m in catalog.machines.values() if m.release and m.name.startswith(family + "-")]
    return min(same, key=lambda m: (m.release, m.name)).name


@pytest.fixture(scope="module")
def kvm_answers(catalog: Catalog, oracle: Oracle) -> dict[str, Answers]:
    """QEMU's answers under KVM for every machine type of :data:`KVM_MACHINES` it has."""
    present = [machine_named(catalog, m) for m in KVM_MACHINES]
    return oracle.many([m for m in present if m in catalog.machines], "kvm")


def expansion_problems(catalog: Catalog, answers: Answers, host_vendor: str | None) -> list[str]:
    """Names whose effective definition differs from QEMU's static expansion."""
    machine = catalog.machine(answers.machine)
    problems = []
    for ref in catalog.names():
        where = f"{answers.machine} {answers.accel} {ref.name}"
        if ref.name not in answers.expansions:
            problems.append(f"{where}: QEMU does not know this name")
            continue
        expected = catalog.effective(ref, machine, answers.accel, host_vendor=host_vendor)
        mismatch = definition_mismatch(expected, answers.expansions[ref.name])
        if mismatch:
            problems.append(f"{where}: {mismatch}")
    return problems


def test_bundled_catalog_is_of_the_installed_qemu_build(catalog: Catalog, oracle: Oracle) -> None:
    build = CpuverQemuInstall(oracle.install.binary).version()
    assert catalog.build == build, (
        f"the bundled catalog was imported from {catalog.build!r} but the installed binary is "
        f"{build!r}: the oracle tests below compare against a different build"
    )


def starts_under_tcg(oracle: Oracle, machine: str) -> bool:
    try:
        oracle.answers(machine, "tcg")
    except QemuError:
        return False
    return True


def test_machine_types_are_those_qemu_lists(catalog: Catalog, oracle: Oracle) -> None:
    """Except machine types QEMU cannot start here (Xen's need Xen, nitro more memory): the
    importer cannot ask them, and neither can this test."""
    listed = {str(entry["name"]): entry for entry in oracle.machine_list()}
    assert set(catalog.machines) <= set(listed)
    unstartable = sorted(set(listed) - set(catalog.machines))
    assert [m for m in unstartable if starts_under_tcg(oracle, m)] == []
    problems = []
    for name, machine in sorted(catalog.machines.items()):
        alias = listed[name].get("alias")
        if machine.alias != alias:
            problems.append(f"{name}: alias cpuver {machine.alias!r}, QEMU {alias!r}")
        deprecated = bool(listed[name].get("deprecated", False))
        if machine.deprecated != deprecated:
            problems.append(f"{name}: deprecated cpuver {machine.deprecated}, QEMU {deprecated}")
    assert not problems, report("machine types differ from query-machines", problems)


def test_every_name_of_every_machine_type_aliases_like_qemu(
    catalog: Catalog, oracle: Oracle
) -> None:
    problems: list[str] = []
    every = oracle.many(sorted(catalog.machines), "tcg")
    for machine_name, answers in every.items():
        machine = catalog.machine(machine_name)
        ours = {ref.name: ref for ref in catalog.names()}
        theirs = answers.definitions
        if only_ours := sorted(set(ours) - set(theirs)):
            problems.append(f"{machine_name}: names only cpuver knows: {only_ours}")
        if only_theirs := sorted(set(theirs) - set(ours)):
            problems.append(f"{machine_name}: names only QEMU knows: {only_theirs}")
        for name in sorted(set(ours) & set(theirs)):
            ref, entry = ours[name], theirs[name]
            want, got = catalog.alias_of(ref, machine), entry.get("alias-of")
            if want != got:
                problems.append(f"{machine_name} {name}: alias-of cpuver {want!r}, QEMU {got!r}")
            deprecated = bool(entry.get("deprecated", False))
            if expected_deprecated(ref) != deprecated:
                problems.append(
                    f"{machine_name} {name}: deprecated cpuver "
                    f"{expected_deprecated(ref)}, QEMU {deprecated}"
                )
            if entry.get("migration-safe") is not True:
                problems.append(
                    f"{machine_name} {name}: QEMU says migration-safe "
                    f"{entry.get('migration-safe')!r}, every builtin name is safe"
                )
    assert not problems, report("names differ from query-cpu-definitions (TCG)", problems)


def test_every_name_of_every_machine_type_expands_like_qemu(
    catalog: Catalog, oracle: Oracle
) -> None:
    problems: list[str] = []
    for answers in oracle.many(sorted(catalog.machines), "tcg").values():
        problems += expansion_problems(catalog, answers, host_vendor=None)
    assert not problems, report("effective definitions differ from QEMU (TCG)", problems)


@pytest.mark.kvm
@pytest.mark.parametrize("machine", KVM_MACHINES)
def test_every_name_of_representative_machine_types_expands_like_qemu_under_kvm(
    catalog: Catalog, kvm_answers: dict[str, Answers], machine: str
) -> None:
    name = machine_named(catalog, machine)
    if name not in kvm_answers:
        pytest.skip(f"QEMU {catalog.release} has no machine type {name}")
    answers = kvm_answers[name]
    vendor = answers.offers.get("vendor")
    assert isinstance(vendor, str), f"{name}: QEMU's host expansion has no vendor"
    problems = expansion_problems(catalog, answers, host_vendor=vendor)
    assert not problems, report(f"effective definitions differ from QEMU (KVM, {name})", problems)
