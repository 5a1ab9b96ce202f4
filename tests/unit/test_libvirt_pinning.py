"""Pinning a libvirt domain XML (api.pin_definition, ``cpuver domain pin -``) in libvirt's meaning,
without a daemon: what the <cpu> asks for, host-model, no <cpu>, optional features, topology."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuver import api
from cpuver.catalog import Catalog
from cpuver.cli import main
from cpuver.domain import DomainError
from cpuver.domain.xml import parse_xml, pin_mismatch
from cpuver.errors import HostError
from cpuver.features import FeatureTable
from cpuver.host.capabilities import HostCapabilities

DOMAIN = """<domain type='{type}'>
  <name>web1</name>
  <memory unit='KiB'>131072</memory>
  <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>
  {cpu}
</domain>
"""


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return api.open_catalog("10.0")


def domain(cpu: str, type: str = "qemu") -> str:
    return DOMAIN.format(cpu=cpu, type=type)


def tcg_host(catalog: Catalog, lacking: frozenset[str] = frozenset()) -> HostCapabilities:
    return HostCapabilities("hv1", {"tcg": catalog.tcg_offers - lacking})


def test_a_custom_model_is_pinned_with_every_feature(q10: Catalog) -> None:
    done = api.pin_definition(domain("<cpu><model>Westmere-v1</model></cpu>"), "d.xml", q10)
    assert (done.pin.name, done.pin.accel, done.changed) == ("Westmere-v1", "tcg", True)
    assert pin_mismatch(parse_xml(done.xml)) is None


def test_domain_type_kvm_pins_for_kvm(q10: Catalog) -> None:
    done = api.pin_definition(domain("<cpu><model>pentium3</model></cpu>", "kvm"), "d.xml", q10)
    assert done.pin.accel == "kvm"


def test_a_pinned_domain_is_left_as_it_is(q10: Catalog) -> None:
    first = api.pin_definition(domain("<cpu><model>Westmere</model></cpu>"), "d.xml", q10)
    again = api.pin_definition(first.xml, "d.xml", q10)
    assert (again.changed, again.xml, again.pin.fingerprint) == (
        False,
        first.xml,
        first.pin.fingerprint,
    )


def test_an_edited_pinned_domain_is_refused_unless_forced(q10: Catalog) -> None:
    first = api.pin_definition(domain("<cpu><model>Westmere</model></cpu>"), "d.xml", q10)
    edited = first.xml.replace("policy='require' name='aes'", "policy='disable' name='aes'")
    with pytest.raises(DomainError, match="is pinned but its <cpu> no longer matches"):
        api.pin_definition(edited, "d.xml", q10)
    forced = api.pin_definition(edited, "d.xml", q10, force=True)
    assert "aes" in forced.pin.off


def test_no_cpu_pins_qemus_default_cpu(q10: Catalog) -> None:
    done = api.pin_definition(domain(""), "d.xml", q10)
    assert done.pin.name == "qemu64-v1"
    assert any("QEMU's default CPU" in note for note in done.notes)


def test_host_model_is_expanded_to_a_runnable_model_and_the_hosts_features(q10: Catalog) -> None:
    host = tcg_host(q10)
    done = api.pin_definition(domain("<cpu mode='host-model'/>"), "d.xml", q10, host)
    table = FeatureTable.bundled()
    assert done.pin.on <= q10.tcg_offers
    nameable = {f for f in q10.tcg_offers & q10.known_features if table.libvirt_name(f)}
    assert nameable <= done.pin.on


def test_host_passthrough_is_refused_with_the_reason(q10: Catalog) -> None:
    with pytest.raises(DomainError, match="no portable definition to pin"):
        api.pin_definition(domain("<cpu mode='host-passthrough'/>"), "d.xml", q10)


def test_optional_features_are_on_where_the_host_has_them(q10: Catalog) -> None:
    cpu = (
        "<cpu><model>Westmere-v1</model><feature policy='optional' name='pdpe1gb'/>"
        "<feature policy='optional' name='avx'/></cpu>"
    )
    host = tcg_host(q10, lacking=frozenset({"avx"}))
    done = api.pin_definition(domain(cpu), "d.xml", q10, host)
    assert "pdpe1gb" in done.pin.on and "avx" in done.pin.off
    assert any("optional features decided for hv1: +pdpe1gb -avx" in n for n in done.notes)


def test_optional_features_under_kvm_need_the_host(q10: Catalog) -> None:
    cpu = "<cpu><model>pentium3</model><feature policy='optional' name='sse2'/></cpu>"
    with pytest.raises(HostError, match=r"optional features .* give the host"):
        api.pin_definition(domain(cpu, "kvm"), "d.xml", q10)


def test_a_vendor_that_is_not_the_models_is_refused(q10: Catalog) -> None:
    cpu = "<cpu><model>Westmere-v1</model><vendor>AMD</vendor></cpu>"
    with pytest.raises(DomainError, match="AuthenticAMD is not the vendor of Westmere-v1"):
        api.pin_definition(domain(cpu), "d.xml", q10)


def test_a_multi_core_socket_pins_qemus_topology_bits(q10: Catalog) -> None:
    cpu = (
        "<cpu><model>EPYC-v1</model>"
        "<topology sockets='1' dies='1' clusters='1' cores='2' threads='1'/></cpu>"
    )
    done = api.pin_definition(domain(cpu), "d.xml", q10)
    assert {"ht", "cmp-legacy"} <= done.pin.on


def test_a_cpu_libvirt_cannot_express_is_refused(q10: Catalog) -> None:
    cpu = "<cpu><model>Westmere-v1</model></cpu>"
    with pytest.raises(DomainError, match=r"libvirt cannot express .* xstore=on"):
        api.pin_definition(domain(cpu), "d.xml", q10, spec="Westmere-v1,+xstore")


def test_the_filter_form_writes_the_whole_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "web1.xml"
    path.write_text(
        domain("<cpu><model>Westmere</model></cpu>").replace(
            "<memory", "<title>kept</title>\n  <memory"
        )
    )
    assert main(["domain", "pin", str(path)]) == 0
    out = capsys.readouterr().out
    root = parse_xml(out)
    assert root.findtext("title") == "kept" and pin_mismatch(root) is None


def test_dumpxml_of_a_stored_guest_is_its_whole_document_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'g.db'}"]
    path = tmp_path / "web1.xml"
    original = domain("<cpu><model>Westmere</model></cpu>").replace(
        "<memory unit='KiB'>131072</memory>",
        "<uuid>6f1c1c5e-7a55-4f57-9d0b-2d3d1c9f0a11</uuid>\n"
        "  <memory unit='KiB'>4194304</memory>\n  <vcpu>4</vcpu>",
    )
    path.write_text(original)
    assert main(["domain", "define", str(path), *db]) == 0
    capsys.readouterr()
    assert main(["domain", "dumpxml", "web1", *db]) == 0
    root = parse_xml(capsys.readouterr().out)
    memory = root.find("memory")
    assert memory is not None and (memory.text, memory.get("unit")) == ("4194304", "KiB")
    assert root.findtext("uuid") == "6f1c1c5e-7a55-4f57-9d0b-2d3d1c9f0a11"
    assert root.findtext("vcpu") == "4" and pin_mismatch(root) is None


def test_resolve_prints_the_same_cpu_a_pin_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "Westmere-v1", "--accel", "tcg", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]["libvirt_xml"]
    q10 = api.open_catalog("10.0")
    done = api.pin_definition(domain("<cpu><model>Westmere-v1</model></cpu>"), "d.xml", q10)
    features = {f.get("name"): f.get("policy") for f in parse_xml(printed).iter("feature")}
    pinned_cpu = parse_xml(done.xml).find("cpu")
    assert pinned_cpu is not None
    assert features == {f.get("name"): f.get("policy") for f in pinned_cpu.iter("feature")}


def test_the_filter_form_resolves_best_against_a_pool_under_the_domains_accelerator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], q10: Catalog
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'g.db'}"]
    snapshot = tmp_path / "hv1.json"
    snapshot.write_text(json.dumps(tcg_host(q10, frozenset({"aes"})).to_json()))
    assert main(["fleet", "add", str(snapshot), "--pool", "rack", *db]) == 0
    path = tmp_path / "web1.xml"
    metadata = "<metadata><c:cpu xmlns:c='https://cpuver.dev/xmlns/1' version='best'/></metadata>"
    path.write_text(
        domain("<cpu><model>Westmere</model></cpu>").replace("<memory", metadata + "<memory")
    )
    capsys.readouterr()
    assert main(["domain", "pin", str(path), "--pool", "rack", *db]) == 3  # refused
    err = capsys.readouterr().err
    assert "can run on pool rack (1 hosts):" in err and "Westmere-v1: missing aes" in err
