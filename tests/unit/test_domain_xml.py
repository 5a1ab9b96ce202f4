"""Guest definitions (domain/xml.py): safe libvirt XML reading, guest files, pinned domain XML."""

from __future__ import annotations

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.domain import DomainError
from cpuver.domain.pinning import Pin, pin
from cpuver.domain.xml import (
    XmlError,
    domain_xml,
    parse_xml,
    read_domain_xml,
    read_guest,
    read_guest_json,
    read_guest_toml,
)
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


def test_domain_xml_round_trips_to_the_same_pinned_cpu(q10: Catalog) -> None:
    pinned = pin_of(q10, "Westmere,version=best")
    text = domain_xml("web1", pinned.machine, pinned, q10)
    read = read_domain_xml(text, catalog=q10)
    assert (read.name, read.machine, read.fingerprint, read.policy) == (
        "web1",
        pinned.machine,
        pinned.fingerprint,
        "best",
    )
    assert read.spec is not None and read.spec.startswith("Westmere-v1,+")
    again = Resolver(q10, machine=read.machine, accel="tcg").resolve(read.spec)
    assert again.definition == pinned.definition
    assert pin(again, q10).fingerprint == pinned.fingerprint


def test_domain_xml_names_every_feature_libvirt_can_name(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    text = domain_xml("web1", pinned.machine, pinned, q10)
    root = parse_xml(text)
    cpu = root.find("cpu")
    assert cpu is not None and cpu.attrib == {"mode": "custom", "match": "exact", "check": "full"}
    assert root.get("type") == "qemu"
    policies = [f.get("policy") for f in cpu.findall("feature")]
    assert policies.count("require") + policies.count("disable") == len(policies)
    named_on = {n for n in pinned.features_on if _libvirt(n)}
    named_off = {n for n in pinned.features_off if _libvirt(n)}
    assert policies.count("require") == len(named_on)
    assert policies.count("disable") == len(named_off)
    assert "not expressible in libvirt" in text  # kvm-* paravirt features have no libvirt name


def test_domain_xml_comments_a_signature_libvirt_cannot_say() -> None:
    q72 = open_catalog("7.2")
    pinned = pin_of(q72, "Haswell,version=2.4.0")
    text = domain_xml("old", "pc-i440fx-2.4", pinned, q72)
    assert "<!-- not expressible in libvirt: stepping=1 -->" in text


def _libvirt(name: str) -> str | None:
    return FeatureTable.bundled().libvirt_name(name)
