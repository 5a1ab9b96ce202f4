"""Pinned libvirt domains on real libvirt 11.3 daemons: pin in place, start, verify, keep the pin
through save/restore, snapshots and live migration; cpuver's hook refuses what a host cannot run.

Every realized vCPU is read through libvirt's QEMU monitor passthrough (qom-get on the vCPU) and
compared with cpuver's own resolution of the spec (plus QEMU's topology bits), feature by feature
and every signature field: nothing is taken from the pin that is being checked.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from libvirt_pair import Pair, hook_answers_for, this_host_without

from cpuver import api
from cpuver.domain.topology import topology_delta
from cpuver.domain.xml import NAMESPACE
from cpuver.host import hookcache
from cpuver.libvirt import Connection
from cpuver.models import SIGNATURE_FIELDS
from cpuver.resolve import Resolver

DefineFn = Callable[..., None]
SPEC = "Westmere,version=best"
MIGRATE = ("--live", "--unsafe", "--migrateuri", "tcp://127.0.0.1")
"""--unsafe: the disk is one file both daemons see (libvirt cannot tell it is shared storage);
the migration stream goes to 127.0.0.1 (the destination's host name is its own namespace's)."""


def canonical_without_cpu(xml: str) -> str:
    """libvirt's XML with <cpu> and cpuver's metadata element removed, whitespace dropped."""
    root = ET.fromstring(xml)
    for cpu in root.findall("cpu"):
        root.remove(cpu)
    metadata = root.find("metadata")
    if metadata is not None:
        for child in list(metadata):
            if child.tag.startswith(f"{{{NAMESPACE}}}"):
                metadata.remove(child)
    for element in root.iter():
        element.text = element.text if element.text and element.text.strip() else None
        element.tail = None
    return ET.tostring(root, encoding="unicode")


def expected_cpu(
    spec: str, threads: int = 2, machine: str = "pc-q35-10.0", accel: str = "tcg"
) -> tuple[frozenset[str], dict[str, object]]:
    """cpuver's own resolution of ``spec`` (QEMU 10.0 catalog), with QEMU's topology bits."""
    catalog = api.open_catalog("10.0")
    resolution = Resolver(catalog, machine, accel).resolve(spec)
    signature = resolution.definition.signature
    features = (
        resolution.definition.features
        | topology_delta(catalog.release, signature.vendor, threads).on
    )
    return features, signature.as_dict()


def realized(uri: str, name: str) -> tuple[frozenset[str], dict[str, object]]:
    known = api.open_catalog("10.0").known_features
    with Connection(uri) as conn:
        return conn.vcpu(name, sorted(known), SIGNATURE_FIELDS)


def assert_runs_the_resolution(uri: str, name: str, spec: str = SPEC) -> None:
    features, signature = realized(uri, name)
    want_features, want_signature = expected_cpu(spec)
    assert sorted(features ^ want_features) == []
    assert signature == want_signature
    _pin, problems = api.verify_domain(uri, name)
    assert problems == []


def pinned(daemons: Pair, define: DefineFn, domain_xml: Callable[..., str], name: str) -> None:
    define(daemons.a, domain_xml(name))
    api.pin_domain(daemons.a.uri, name, spec=SPEC)


def test_pinning_changes_nothing_but_the_cpu_and_cpuvers_element(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    define(daemons.a, domain_xml("web1"))
    before = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    done = api.pin_domain(daemons.a.uri, "web1", spec=SPEC)
    after = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    assert done.changed
    assert canonical_without_cpu(after) == canonical_without_cpu(before)
    topology = ET.fromstring(after).find("cpu/topology")
    assert topology is not None and topology.get("cores") == "2"


def test_pinning_again_leaves_a_pinned_domain_as_it_is(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    pinned(daemons, define, domain_xml, "web1")
    before = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    assert not api.pin_domain(daemons.a.uri, "web1").changed
    assert daemons.a.virsh("dumpxml", "--inactive", "web1").stdout == before


def test_a_pinned_domain_starts_and_runs_cpuvers_resolution(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    pinned(daemons, define, domain_xml, "web1")
    daemons.a.virsh("start", "web1")
    assert_runs_the_resolution(daemons.a.uri, "web1")


def test_the_pin_survives_save_restore_snapshots_and_live_migration(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str], tmp_path: Path
) -> None:
    a, b = daemons.a, daemons.b
    pinned(daemons, define, domain_xml, "web1")
    a.virsh("start", "web1")
    saved = tmp_path / "web1.saved"
    a.virsh("save", "web1", str(saved))
    a.virsh("restore", str(saved))
    assert_runs_the_resolution(a.uri, "web1")
    a.virsh("snapshot-create-as", "web1", "before-upgrade")
    a.virsh("snapshot-revert", "web1", "before-upgrade")
    assert_runs_the_resolution(a.uri, "web1")
    a.virsh("snapshot-delete", "web1", "before-upgrade")
    a.virsh("migrate", *MIGRATE, "--persistent", "--undefinesource", "web1", b.uri)
    assert_runs_the_resolution(b.uri, "web1")


def test_an_unpinned_domain_starts_untouched(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    define(daemons.a, domain_xml("plain"))
    daemons.a.virsh("start", "plain")
    assert daemons.a.virsh("domstate", "plain").stdout.strip() == "running"


def test_a_domain_without_a_cpu_is_pinned_to_what_qemu_gives_it(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    """Unpinned, QEMU gives it its default CPU; pinned, it keeps exactly that."""
    define(daemons.a, domain_xml("nocpu", cpu=""))
    daemons.a.virsh("start", "nocpu")
    qemus_default = realized(daemons.a.uri, "nocpu")
    daemons.a.virsh("destroy", "nocpu")
    done = api.pin_domain(daemons.a.uri, "nocpu")
    assert done.pin.name == "qemu64-v1"
    assert qemus_default == expected_cpu("qemu64", threads=1)
    daemons.a.virsh("start", "nocpu")
    assert realized(daemons.a.uri, "nocpu") == qemus_default


def test_a_legacy_machine_types_cpu_is_pinned_as_the_bare_name_and_runs_exactly(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    """Under pc-i440fx-4.0 QEMU's default qemu64 has that machine type's compat changes
    (family 6 model 6 stepping 3), which qemu64-v1 lacks: <model>qemu64</model> keeps them."""
    machine = "pc-i440fx-4.0"
    define(daemons.a, domain_xml("old", cpu="", machine=machine))
    daemons.a.virsh("start", "old")
    qemus_default = realized(daemons.a.uri, "old")
    daemons.a.virsh("destroy", "old")
    done = api.pin_domain(daemons.a.uri, "old")
    assert (done.pin.name, done.model) == ("qemu64-4.0.0", "qemu64")
    assert qemus_default == expected_cpu("qemu64", threads=1, machine=machine)
    daemons.a.virsh("start", "old")
    assert realized(daemons.a.uri, "old") == qemus_default


@pytest.mark.kvm
def test_kvm_paravirtual_settings_are_realized_through_libvirts_own_elements(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    """kvmclock off and kvm-pv-unhalt on have no <feature> name in libvirt: <clock> and
    <features><pvspinlock> carry them, and the vCPU has them so."""
    spec = "pentium3-v1,-kvmclock,+kvm-pv-unhalt"
    define(daemons.a, domain_xml("pv", model="pentium3", type="kvm"))
    api.pin_domain(daemons.a.uri, "pv", spec=spec)
    xml = daemons.a.virsh("dumpxml", "--inactive", "pv").stdout
    assert "<timer name='kvmclock' present='no'/>" in xml and "<pvspinlock state='on'/>" in xml
    daemons.a.virsh("start", "pv")
    features, _signature = realized(daemons.a.uri, "pv")
    want, _ = expected_cpu(spec, accel="kvm")
    assert ("kvmclock" in features, "kvm-pv-unhalt" in features) == (False, True)
    _pin, problems = api.verify_domain(daemons.a.uri, "pv")
    assert problems == [] and features == want


def test_a_hand_edited_cpu_is_refused_at_start(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str], tmp_path: Path
) -> None:
    pinned(daemons, define, domain_xml, "web1")
    xml = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    define(daemons.a, xml.replace("policy='require' name='aes'", "policy='disable' name='aes'"))
    refused = daemons.a.virsh("start", "web1", check=False)
    assert refused.returncode != 0
    assert "cpuver: cannot start guest 'web1': its <cpu> no longer matches" in refused.stderr


def test_start_is_refused_on_a_host_that_lacks_a_pinned_feature(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    define(daemons.b, domain_xml("web1"))
    api.pin_domain(daemons.b.uri, "web1", spec=SPEC)
    with hook_answers_for(daemons, daemons.b, this_host_without(daemons, "aes")):
        refused = daemons.b.virsh("start", "web1", check=False)
    assert refused.returncode != 0
    assert (
        "cpuver: cannot start guest 'web1' (pinned Westmere-v1) on host 'hv-b': it lacks "
        "pinned feature(s) aes under tcg"
    ) in refused.stderr


def test_restore_is_refused_on_a_host_that_lacks_a_pinned_feature(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str], tmp_path: Path
) -> None:
    pinned(daemons, define, domain_xml, "web1")
    daemons.a.virsh("start", "web1")
    saved = tmp_path / "web1.saved"
    daemons.a.virsh("save", "web1", str(saved))
    with hook_answers_for(daemons, daemons.b, this_host_without(daemons, "aes")):
        refused = daemons.b.virsh("restore", str(saved), check=False)
    assert refused.returncode != 0
    assert "cpuver: cannot restore guest 'web1' (pinned Westmere-v1) on host 'hv-b'" in (
        refused.stderr
    )
    assert "lacks pinned feature(s) aes" in refused.stderr


def test_a_migration_to_a_host_that_lacks_a_feature_is_refused_and_the_source_runs_on(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    pinned(daemons, define, domain_xml, "web1")
    daemons.a.virsh("start", "web1")
    with hook_answers_for(daemons, daemons.b, this_host_without(daemons, "aes")):
        refused = daemons.a.virsh("migrate", *MIGRATE, "web1", daemons.b.uri, check=False)
    assert refused.returncode != 0
    assert "cpuver: cannot receive the migration of guest 'web1' (pinned Westmere-v1)" in (
        refused.stderr
    )
    assert daemons.a.virsh("domstate", "web1").stdout.strip() == "running"
    assert_runs_the_resolution(daemons.a.uri, "web1")


@pytest.mark.kvm
def test_a_kvm_domain_pinned_for_a_recorded_host_is_refused_here(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str], recorded_intel: object
) -> None:
    """Pinned for a real Intel host (its recorded KVM dump), started on this machine's nested
    KVM, which offers far less: cpuver's hook says what is missing."""
    define(daemons.a, domain_xml("kvm1", model="Haswell-noTSX", type="kvm"))
    done = api.pin_domain(daemons.a.uri, "kvm1", host=recorded_intel)  # type: ignore[arg-type]
    refused = daemons.a.virsh("start", "kvm1", check=False)
    here = hookcache.load(str(daemons.hook_caches["hv-a"]))["host"]
    assert refused.returncode != 0
    assert f"cpuver: cannot start guest 'kvm1' (pinned {done.pin.name}) on host '{here}'" in (
        refused.stderr
    )


def test_update_cpu_changes_the_persistent_definition_only(
    daemons: Pair, define: DefineFn, domain_xml: Callable[..., str]
) -> None:
    define(daemons.a, domain_xml("web1"))
    api.pin_domain(daemons.a.uri, "web1", spec="Nehalem-v1,-popcnt")
    daemons.a.virsh("start", "web1")
    diff = api.update_domain_cpu(
        daemons.a.uri, "web1", "v2", lambda _c, _a: [], accept_signature_change=True
    )
    assert diff.pending and diff.kept == ("-popcnt",)
    inactive = api.domain_pin(daemons.a.virsh("dumpxml", "--inactive", "web1").stdout)
    live = api.domain_pin(daemons.a.virsh("dumpxml", "web1").stdout)
    assert (live.version, inactive.version) == ("Nehalem-v1", "Nehalem-v2")
    assert "popcnt" in inactive.off
    _pin, problems = api.verify_domain(daemons.a.uri, "web1")
    assert problems == []  # still the CPU it booted with


@pytest.fixture
def recorded_intel() -> object:
    """A host snapshot of a real Intel machine with TSX off (tests/data/hosts/intel-notsx-kvm)."""
    from cpuver.host.capabilities import HostCapabilities
    from cpuver.host.kvm import KvmDump, kvm_offers

    data = Path(__file__).resolve().parents[1] / "data" / "hosts" / "intel-notsx-kvm.json"
    dump = KvmDump.from_json(json.loads(data.read_text()))
    catalog = api.open_catalog("10.0")
    offers = kvm_offers(dump, catalog.known_features, (10, 0))
    return HostCapabilities("intel-notsx", {"kvm": offers}, "GenuineIntel")
