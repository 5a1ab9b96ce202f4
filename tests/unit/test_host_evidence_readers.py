"""Reading QMP replies and libvirt's QEMU capabilities cache as host files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuver.api.hosts import read_host
from cpuver.cli import main
from cpuver.errors import HostError
from cpuver.host import libvirt_caps, qmp_replies
from replays import manifest, text_of


def entry(name: str) -> dict[str, Any]:
    return next(e for e in manifest() if e["replies"].startswith(name))


RYZEN_82 = "qemu-8.2.0-amd-ryzen-9-3900x"


def written(tmp_path: Path, name: str, form: str, as_name: str) -> Path:
    path = tmp_path / as_name
    path.write_text(text_of(entry(name), form))
    return path


# ---------------------------------------------------------------------------------- QMP replies


def test_a_libvirt_recording_is_one_kvm_and_one_tcg_process() -> None:
    evidence = qmp_replies.read(text_of(entry(RYZEN_82), "replies"), "r")
    assert (evidence.release, evidence.build) == ("8.2", "QEMU 8.2.0 (v8.2.0)")
    assert sorted(evidence.accels) == ["kvm", "tcg"]
    kvm = evidence.accels["kvm"]
    assert [(e.model, e.kind, e.migratable) for e in kvm.expansions] == [
        ("host", "static", True),
        ("host", "static", False),
        ("host", "full", False),
    ]
    assert kvm.definitions is not None and len(kvm.definitions) == 143
    assert kvm.aliases["Haswell"] == "Haswell-v1"
    assert evidence.facts["model-id"] == "AMD Ryzen 9 3900X 12-Core Processor"


def expansion_reply(name: str, **props: Any) -> dict[str, Any]:
    return {"return": {"model": {"name": name, "props": {"vendor": "GenuineIntel", **props}}}}


def test_a_lone_static_reply_is_kvm_when_a_kvm_paravirtual_feature_is_on() -> None:
    kvm = qmp_replies.read(json.dumps(expansion_reply("base", kvmclock=True, sse2=True)), "r")
    tcg = qmp_replies.read(json.dumps(expansion_reply("base", sse2=True)), "r")
    assert (list(kvm.accels), list(tcg.accels)) == (["kvm"], ["tcg"])
    assert kvm.release is None


def test_replies_as_a_json_array_with_their_commands() -> None:
    messages = [
        {"QMP": {"version": {"qemu": {"major": 9, "minor": 1, "micro": 2}, "package": ""}}},
        {
            "execute": "query-cpu-model-expansion",
            "arguments": {"type": "full", "model": {"name": "max"}},
        },
        expansion_reply("max", sse2=True),
    ]
    evidence = qmp_replies.read(json.dumps(messages), "r")
    assert (evidence.release, list(evidence.accels)) == ("9.1", ["tcg"])
    assert evidence.accels["tcg"].expansions[0].kind == "full"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"return": {"model": ', "r: not valid JSON at line 1 column 22: Expecting value"),
        ("[1, 2]", "r: message 1: expected a JSON object"),
        ("  ", "r: empty: expected QEMU's QMP replies"),
        (
            json.dumps(expansion_reply("Haswell")),
            "r: message 1: model.name: expected an expansion of host (KVM) or max (TCG), "
            "got 'Haswell'",
        ),
        (
            json.dumps({"return": [{"name": "Haswell-v1", "unavailable-features": []}]}),
            "r: tcg: query-cpu-definitions alone does not say what the host offers",
        ),
        (json.dumps({"return": {}}), "r: no query-cpu-model-expansion or query-cpu-definitions"),
    ],
)
def test_bad_replies_get_one_line_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(HostError) as caught:
        qmp_replies.read(text, "r")
    assert str(caught.value).startswith(problem)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------- libvirt cache


def test_libvirts_cache_gives_release_both_expansions_and_blockers() -> None:
    evidence = libvirt_caps.read(text_of(entry(RYZEN_82), "caps"), "c")
    assert (evidence.release, evidence.build) == ("8.2", "QEMU 8.2.0 (v8.2.0)")
    kvm = evidence.accels["kvm"]
    migratable, everything = kvm.expansions
    assert (migratable.migratable, everything.migratable) == (True, False)
    assert migratable.props["invtsc"] is False and everything.props["invtsc"] is True
    assert kvm.definitions is not None
    assert kvm.definitions["EPYC-Rome-v1"] == ("xsaves",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<qemuCaps><version>", "c: line 1, column 20: malformed XML: no element found"),
        (
            '<!DOCTYPE q [<!ENTITY x "y">]><qemuCaps/>',
            "c: line 1, column 1: <!DOCTYPE is refused: document type declarations and entities "
            "are not accepted",
        ),
        ("<domainCapabilities/>", "c: expected libvirt's <qemuCaps>, got <domainCapabilities>"),
        ("<qemuCaps><version>8.2</version></qemuCaps>", "c: version: expected libvirt's number"),
        (
            "<qemuCaps><hostCPU type='kvm'><property name='avx' type='boolean' value='yes'/>"
            "</hostCPU></qemuCaps>",
            "c: hostCPU[1].property[1]: value: expected true or false, got 'yes'",
        ),
        ("<qemuCaps/>", "c: no <hostCPU> of KVM or TCG"),
    ],
)
def test_a_bad_cache_file_gets_one_line_naming_the_place(text: str, problem: str) -> None:
    with pytest.raises(HostError) as caught:
        libvirt_caps.read(text, "c")
    assert str(caught.value).startswith(problem)


# ---------------------------------------------------------------------------------- as host files


@pytest.mark.parametrize(("form", "method"), [("replies", "qmp"), ("caps", "libvirt-cache")])
def test_either_form_is_a_host_file_of_its_release(tmp_path: Path, form: str, method: str) -> None:
    host = read_host(
        str(
            written(
                tmp_path, RYZEN_82, form, "rack1-hv3" + (".xml" if form == "caps" else ".replies")
            )
        )
    )
    assert host.name == "rack1-hv3"
    assert sorted(host.releases) == ["8.2"]
    offer = host.offer("kvm", "8.2")
    assert offer is not None and offer.method == method
    assert {"topoext", "invtsc"} <= offer.features
    assert offer.qemu == "QEMU 8.2.0 (v8.2.0)"
    assert host.facts is not None and host.facts.vendor == "AuthenticAMD"


def test_both_forms_of_one_recording_offer_the_same(tmp_path: Path) -> None:
    a = read_host(str(written(tmp_path, RYZEN_82, "replies", "a.replies")))
    b = read_host(str(written(tmp_path, RYZEN_82, "caps", "b.xml")))
    for accel in ("kvm", "tcg"):
        assert a.offered(accel, "8.2") == b.offered(accel, "8.2")


def test_a_snapshot_written_from_evidence_reads_back_with_its_unknowns(tmp_path: Path) -> None:
    reply = expansion_reply("host", kvmclock=True, sse2=True)
    source = tmp_path / "lone.json"
    source.write_text(json.dumps(reply))
    host = read_host(str(source))
    assert host.releases == {} and "ht" in host.unknown_for("kvm")
    caps = read_host(str(written(tmp_path, RYZEN_82, "caps", "c.xml")))
    snapshot = tmp_path / "snap.json"
    snapshot.write_text(json.dumps(caps.to_json()))
    assert read_host(str(snapshot)).offer("kvm", "8.2") == caps.offer("kvm", "8.2")


def test_cpuver_resolves_best_against_a_libvirt_cache_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = written(tmp_path, "qemu-9.2.0-amd-epyc-9654", "caps", "epyc.xml")
    code = main(
        ["resolve", "EPYC-Genoa,version=best", "--host", str(path), "--qemu", "9.2", "--json"]
    )
    [result] = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (result["name"], result["accel"]) == ("EPYC-Genoa-v1", "kvm")


def test_an_unknown_feature_is_named_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = expansion_reply("host", kvmclock=True, sse2=True, sse=True, fpu=True)
    source = tmp_path / "lone.json"
    source.write_text(json.dumps(reply))
    code = main(["resolve", "qemu64,+invtsc", "--host", str(source), "--accel", "kvm"])
    out = capsys.readouterr().out
    assert code == 0
    assert "  unknown: invtsc, not in QEMU's expansion: a migratable host expansion never" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 100_000, "r: JSON nested too deeply to read"),
        ('{"return": {"model": {"name": "host", "props": {"family": ' + "9" * 5000 + "}}}}",
         "r: JSON holds a number too long to read"),
    ],
)  # fmt: skip
def test_replies_too_deep_or_too_long_to_read_get_one_line(text: str, problem: str) -> None:
    with pytest.raises(HostError) as caught:
        qmp_replies.read(text, "r")
    assert str(caught.value) == problem
