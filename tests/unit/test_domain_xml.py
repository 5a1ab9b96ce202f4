"""Guest definitions (domain/xml.py): libvirt XML read with libvirt's meaning, guest files, and
pinned domain XML that changes nothing but the <cpu> and cpuver's metadata element."""

from __future__ import annotations

import re

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.domain import DomainError
from cpuver.domain.pinning import Pin, pin
from cpuver.domain.xml import (
    XmlError,
    parse_xml,
    pin_mismatch,
    pinned_document,
    read_domain_xml,
    read_guest,
    read_guest_json,
    read_guest_toml,
    skeleton,
)
from cpuver.emit.libvirt import pinned_cpu
from cpuver.features import FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

NS = "https://cpuver.dev/xmlns/1"

DOMAIN = f"""<domain type='kvm'>
  <name>web1</name>
  <metadata>
    <cpuver:cpu xmlns:cpuver="{NS}" version="best"/>
  </metadata>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>Haswell</model>
    <feature policy='require' name='pclmuldq'/>
    <feature policy='disable' name='hle'/>
    <feature policy='forbid' name='rtm'/>
    <feature policy='require' name='lahf_lm'/>
  </cpu>
</domain>
"""


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def pin_of(catalog: Catalog, spec: str, machine: str | None = None, accel: str = "tcg") -> Pin:
    host = HostCapabilities("h", {"tcg": catalog.tcg_offers})
    resolver = Resolver(catalog, machine=machine, accel=accel, host=host)
    return pin(resolver.resolve(spec), catalog)


def test_domain_xml_is_read_into_a_cpuver_spec_with_qemu_feature_names() -> None:
    read = read_domain_xml(DOMAIN)
    assert (read.name, read.machine, read.mode) == ("web1", "pc-q35-7.2", "custom")
    assert read.spec == "Haswell,version=best,+pclmulqdq,-hle,-rtm,+lahf-lm"


def test_an_xml_declaration_is_accepted() -> None:
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + DOMAIN
    assert read_domain_xml(text).name == "web1"


def test_metadata_policy_is_read() -> None:
    assert read_domain_xml(DOMAIN).policy == "best"
    latest = DOMAIN.replace('version="best"', 'version="v3"')
    assert read_domain_xml(latest).spec == "Haswell,version=v3,+pclmulqdq,-hle,-rtm,+lahf-lm"


def test_a_bad_metadata_policy_is_refused() -> None:
    with pytest.raises(XmlError, match=r"'newest' is not best, latest, vN or X\.Y\.Z"):
        read_domain_xml(DOMAIN.replace('version="best"', 'version="newest"'))


def test_policy_does_not_apply_to_a_versioned_model() -> None:
    read = read_domain_xml(DOMAIN.replace(">Haswell<", ">Haswell-v4<"))
    assert read.spec == "Haswell-v4,+pclmulqdq,-hle,-rtm,+lahf-lm"
    assert any("already names a version" in note for note in read.notes)


def test_policy_does_not_apply_to_an_alias_the_catalog_knows(q10: Catalog) -> None:
    read = read_domain_xml(DOMAIN.replace(">Haswell<", ">Haswell-noTSX<"), catalog=q10)
    assert read.spec == "Haswell-noTSX,+pclmulqdq,-hle,-rtm,+lahf-lm"


def test_doctype_is_refused() -> None:
    text = '<?xml version="1.0"?>\n<!DOCTYPE domain>\n<domain><name>x</name></domain>'
    with pytest.raises(XmlError, match="line 2, column 1: <!DOCTYPE is refused"):
        read_domain_xml(text)


def test_entity_expansion_is_refused() -> None:
    laughs = (
        '<!DOCTYPE d [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        "<domain><name>&lol2;</name></domain>"
    )
    with pytest.raises(XmlError, match="refused"):
        read_domain_xml(laughs)


def test_external_entity_is_refused() -> None:
    text = '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain><name>&x;</name></domain>'
    with pytest.raises(XmlError, match="refused"):
        parse_xml(text)


def test_malformed_xml_error_names_line_and_column() -> None:
    text = "<domain>\n  <name>web1</nam>\n</domain>"
    with pytest.raises(XmlError) as caught:
        read_domain_xml(text, source="web1.xml")
    assert (caught.value.line, caught.value.column) == (2, 15)
    assert str(caught.value).startswith(
        "web1.xml: line 2, column 15: malformed XML: mismatched tag"
    )


def test_unknown_feature_is_named() -> None:
    text = DOMAIN.replace("name='hle'", "name='hlee'")
    with pytest.raises(XmlError, match="hlee"):
        read_domain_xml(text)


def test_a_domain_without_a_name_is_refused() -> None:
    with pytest.raises(XmlError, match="domain/name: missing"):
        read_domain_xml("<domain><os/></domain>")


def test_host_passthrough_has_no_spec() -> None:
    text = "<domain><name>x</name><cpu mode='host-passthrough'/></domain>"
    read = read_domain_xml(text)
    assert (read.spec, read.mode) == (None, "host-passthrough")
    assert read.notes


def test_guest_json_file_is_read() -> None:
    text = '{"name": "web1", "machine": "pc-q35-10.0", "cpu": "Haswell,version=best"}'
    read = read_guest_json(text)
    assert (read.name, read.machine, read.spec, read.policy) == (
        "web1",
        "pc-q35-10.0",
        "Haswell,version=best",
        "best",
    )


def test_guest_toml_file_is_read() -> None:
    read = read_guest_toml('name = "web1"\ncpu = "Haswell-v4,-hle"\n')
    assert (read.name, read.machine, read.spec, read.policy) == (
        "web1",
        None,
        "Haswell-v4,-hle",
        None,
    )


def test_guest_file_errors_name_the_field() -> None:
    with pytest.raises(DomainError, match=r"guest\.json: cpu: "):
        read_guest_json('{"name": "web1", "cpu": "Haswell,version=soon"}')
    with pytest.raises(DomainError, match="unknown field"):
        read_guest_json('{"name": "web1", "cpu": "Haswell", "ram": 4}')
    with pytest.raises(DomainError, match="line 1, column 2"):
        read_guest_json("{nope}")


def test_read_guest_picks_the_reader_by_suffix() -> None:
    assert read_guest(DOMAIN, "web1.xml").name == "web1"
    assert read_guest('name = "t"\ncpu = "qemu64"\n', "t.toml").spec == "qemu64"


def test_domain_type_qemu_is_tcg_and_kvm_is_kvm() -> None:
    assert read_domain_xml(DOMAIN).accel == "kvm"
    assert read_domain_xml(DOMAIN.replace("type='kvm'", "type='qemu'")).accel == "tcg"


def test_a_domain_type_that_is_not_qemus_is_refused() -> None:
    with pytest.raises(XmlError, match="domain/@type: 'xen' is not a QEMU domain"):
        read_domain_xml(DOMAIN.replace("type='kvm'", "type='xen'"))


def test_a_spec_inside_model_is_refused() -> None:
    text = DOMAIN.replace(">Haswell<", ">Haswell,version=best<")
    with pytest.raises(XmlError, match="is not a model name: libvirt's <model> names a model"):
        read_domain_xml(text)


def test_optional_features_are_kept_apart_for_the_host_to_decide() -> None:
    text = DOMAIN.replace("policy='forbid' name='rtm'", "policy='optional' name='rtm'")
    read = read_domain_xml(text)
    assert read.optional == ("rtm",)
    assert read.spec == "Haswell,version=best,+pclmulqdq,-hle,+lahf-lm"


def test_vendor_is_read_as_the_cpuid_vendor() -> None:
    text = DOMAIN.replace("<model fallback='forbid'>", "<vendor>AMD</vendor><model>")
    assert read_domain_xml(text).vendor == "AuthenticAMD"


def test_a_vendor_libvirt_does_not_know_is_refused() -> None:
    with pytest.raises(XmlError, match="cpu/vendor: 'Cyrix' is not a libvirt vendor"):
        read_domain_xml(DOMAIN.replace("<model", "<vendor>Cyrix</vendor><model", 1))


def test_topology_gives_the_threads_per_package() -> None:
    topology = "<topology sockets='2' dies='1' clusters='1' cores='4' threads='2'/></cpu>"
    assert read_domain_xml(DOMAIN.replace("</cpu>", topology)).threads_per_package == 8
    assert read_domain_xml(DOMAIN).threads_per_package == 1


def test_libvirts_paravirtual_elements_are_read_as_features() -> None:
    extra = (
        "<clock offset='utc'><timer name='kvmclock' present='no'/></clock>"
        "<features><pvspinlock state='on'/><apic eoi='off'/></features></domain>"
    )
    read = read_domain_xml(DOMAIN.replace("</domain>", extra))
    assert read.spec is not None
    assert read.spec.endswith(",-kvmclock,+kvm-pv-unhalt,-kvm-pv-eoi")


def test_host_model_and_a_missing_cpu_are_pinnable_kinds() -> None:
    host_model = "<domain><name>x</name><cpu mode='host-model'/></domain>"
    assert read_domain_xml(host_model).cpu == "host-model"
    assert read_domain_xml("<domain><name>x</name></domain>").cpu == "default"


# ------------------------------------------------------------------------------ writing

REALISTIC = f"""<?xml version="1.0"?>
<!-- kept: a comment before the root -->
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web1</name>
  <uuid>6f1c1c5e-7a55-4f57-9d0b-2d3d1c9f0a11</uuid>
  <title>Web &amp; one</title>
  <metadata>
    <app:owner xmlns:app="https://example.org/inventory/1">team-web</app:owner>
    <cpuver:cpu xmlns:cpuver="{NS}" version="best"/>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-10.0'>hvm</type>
  </os>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>Westmere</model>
    <feature policy='optional' name='aes'/>
    <topology sockets='1' dies='1' clusters='1' cores='2' threads='1'/>
    <numa>
      <cell id='0' cpus='0-1' memory='131072' unit='KiB'/>
    </numa>
  </cpu>
  <devices>
    <!-- a comment inside -->
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
  <qemu:commandline><qemu:arg value='-no-reboot'/></qemu:commandline>
</domain>
"""


def document(catalog: Catalog, text: str, spec: str = "Westmere-v1") -> str:
    pinned = pin_of(catalog, spec)
    return pinned_document(text, pinned_cpu(pinned, catalog, policy="best"), machine=pinned.machine)


def _without_cpu_and_cpuver(text: str) -> str:
    text = re.sub(r"\n *<cpu .*?</cpu>", "", text, flags=re.S)
    return re.sub(r"\n *<cpuver:cpu\b(?:[^>]*/>|.*?</cpuver:cpu>)", "", text, flags=re.S)


def test_pinning_a_document_changes_no_byte_outside_cpu_and_cpuvers_element(q10: Catalog) -> None:
    pinned = document(q10, REALISTIC)
    assert _without_cpu_and_cpuver(pinned) == _without_cpu_and_cpuver(REALISTIC)


def test_the_pinned_cpu_keeps_its_topology_and_numa(q10: Catalog) -> None:
    cpu = parse_xml(document(q10, REALISTIC)).find("cpu")
    assert cpu is not None
    topology = cpu.find("topology")
    assert topology is not None and topology.get("cores") == "2"
    assert cpu.find("numa/cell") is not None
    assert cpu.find("feature[@policy='optional']") is None


def test_cpuvers_element_keeps_the_policy_and_records_the_pin(q10: Catalog) -> None:
    root = parse_xml(document(q10, REALISTIC))
    element = root.find(f"metadata/{{{NS}}}cpu")
    assert element is not None
    assert (element.get("version"), element.get("base")) == ("best", "Westmere-v1")
    assert root.find("metadata/{https://example.org/inventory/1}owner") is not None
    assert len(root.findall(f"metadata/{{{NS}}}cpu")) == 1


def test_a_document_without_metadata_or_cpu_gets_both(q10: Catalog) -> None:
    text = skeleton("web1", "pc-q35-10.0", "tcg")
    root = parse_xml(document(q10, text))
    assert root.find(f"metadata/{{{NS}}}cpu") is not None
    cpu = root.find("cpu/model")
    assert cpu is not None and cpu.text == "Westmere-v1"


def test_a_machine_alias_is_written_as_the_pinned_machine_type(q10: Catalog) -> None:
    text = REALISTIC.replace("machine='pc-q35-10.0'", "machine='q35'")
    os_type = parse_xml(document(q10, text)).find("os/type")
    assert os_type is not None and os_type.get("machine") == "pc-q35-10.0"


def test_paravirtual_settings_are_written_into_clock_and_features(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4,-kvmclock,+kvm-pv-unhalt", accel="kvm")
    text = REALISTIC.replace("type='qemu'", "type='kvm'")
    root = parse_xml(pinned_document(text, pinned_cpu(pinned, q10)))
    timer = root.find("clock/timer[@name='kvmclock']")
    spinlock = root.find("features/pvspinlock")
    assert timer is not None and timer.get("present") == "no"
    assert spinlock is not None and spinlock.get("state") == "on"


def test_a_pinned_document_matches_its_pin(q10: Catalog) -> None:
    assert pin_mismatch(parse_xml(document(q10, REALISTIC))) is None


def test_an_edited_feature_no_longer_matches_the_pin(q10: Catalog) -> None:
    edited = document(q10, REALISTIC).replace(
        "policy='require' name='aes'", "policy='disable' name='aes'"
    )
    problem = pin_mismatch(parse_xml(edited))
    assert problem is not None and "no longer matches the fingerprint" in problem


def test_an_edited_model_no_longer_matches_the_pin(q10: Catalog) -> None:
    edited = document(q10, REALISTIC).replace(">Westmere-v1</model>", ">Westmere-v2</model>")
    assert "names model Westmere-v2, the pin Westmere-v1" in (pin_mismatch(parse_xml(edited)) or "")


def test_a_pinned_document_reads_back_to_the_same_cpu(q10: Catalog) -> None:
    pinned = pin_of(q10, "Westmere,version=best")
    text = document(q10, skeleton("web1", pinned.machine, "tcg"), "Westmere,version=best")
    read = read_domain_xml(text, catalog=q10)
    assert (read.fingerprint, read.policy, read.accel) == (pinned.fingerprint, "best", "tcg")
    assert read.spec is not None and read.spec.startswith("Westmere-v1,")
    again = Resolver(q10, machine=read.machine, accel="tcg").resolve(read.spec)
    assert pin(again, q10).fingerprint == pinned.fingerprint


def _libvirt(name: str) -> str | None:
    return FeatureTable.bundled().libvirt_name(name)
