"""`cpuver host diff`: what changed between two snapshots of one host, in words, and which model
versions that made unusable or usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuver import api
from cpuver.cli import main
from cpuver.errors import HostError
from cpuver.features import FeatureTable
from cpuver.host.capabilities import AccelOffer, HostCapabilities, HostFacts, build
from cpuver.host.explain import diff_hosts, explain, groups
from cpuver.resolve import Resolver

TSX = frozenset({"hle", "rtm"})


def haswell_features() -> frozenset[str]:
    """Everything any Haswell version needs under KVM (TSX and all)."""
    catalog = api.open_catalog("10.0")
    resolver = Resolver(catalog, None, "kvm")
    out: set[str] = set()
    for version in catalog.model("Haswell").versions:
        out |= resolver.resolve(version.name).definition.features
    return frozenset(out)


def snapshot(features: frozenset[str], microcode: str, kernel: str) -> HostCapabilities:
    facts = HostFacts("GenuineIntel", "Xeon E5-2680 v3", 6, 63, 2, microcode, kernel, {})
    offers = {"10.0": {"kvm": AccelOffer(features, "kvm")}}
    return build("node7", offers, facts, f"{microcode}.json")


@pytest.fixture
def before_after() -> tuple[HostCapabilities, HostCapabilities]:
    """node7 before and after a microcode update that turned TSX off and added MD_CLEAR."""
    features = haswell_features() - {"md-clear"}
    before = snapshot(features, "0x43", "6.1.0-17-amd64")
    after = snapshot((features - TSX) | {"md-clear"}, "0x49", "6.1.0-18-amd64")
    return before, after


def test_every_explained_feature_is_a_canonical_feature_name() -> None:
    table = FeatureTable.bundled()
    for group in groups():
        for name in group.features:
            assert table.canonical(name) == name


def test_tsx_loss_is_explained() -> None:
    assert [str(c) for c in explain({"rtm", "hle"}, "lost")] == [
        "lost hle, rtm (TSX disabled: microcode or tsx=off)"
    ]


def test_mds_gain_is_explained() -> None:
    assert [str(c) for c in explain({"md-clear"}, "gained")] == ["gained md-clear (MDS microcode)"]


def test_unexplained_features_are_listed_without_a_reason() -> None:
    assert [str(c) for c in explain({"rtm", "sse2"}, "lost")] == [
        "lost rtm (TSX disabled: microcode or tsx=off)",
        "lost sse2",
    ]


def test_diff_names_microcode_and_kernel_changes(
    before_after: tuple[HostCapabilities, HostCapabilities],
) -> None:
    diff = diff_hosts(*before_after)
    assert [str(c) for c in diff.facts] == [
        "microcode: 0x43 -> 0x49",
        "kernel: 6.1.0-17-amd64 -> 6.1.0-18-amd64",
    ]


def test_tsx_loss_makes_haswell_v1_and_v3_unusable(
    before_after: tuple[HostCapabilities, HostCapabilities],
) -> None:
    _diff, usability = api.host_diff(*before_after)
    (change,) = usability
    unusable = dict(change.unusable)
    assert unusable["Haswell-v1"] == ("hle", "rtm")
    assert unusable["Haswell-v3"] == ("hle", "rtm")
    assert "Haswell-v2" not in unusable
    assert "Haswell-v4" not in unusable


def test_reverse_diff_makes_them_usable_again(
    before_after: tuple[HostCapabilities, HostCapabilities],
) -> None:
    before, after = before_after
    _diff, (change,) = api.host_diff(after, before)
    assert {"Haswell-v1", "Haswell-v3"} <= set(change.usable)


def test_cli_host_diff_says_it_in_words(
    before_after: tuple[HostCapabilities, HostCapabilities],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = []
    for name, host in zip(("a.json", "b.json"), before_after, strict=True):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(host.to_json()))
    assert main(["host", "diff", str(paths[0]), str(paths[1])]) == 0
    out = capsys.readouterr().out
    assert "lost hle, rtm (TSX disabled: microcode or tsx=off)" in out
    assert "gained md-clear (MDS microcode)" in out
    assert "microcode: 0x43 -> 0x49" in out
    assert "now unusable: Haswell-v1 (needs hle, rtm)" in out
    assert "now unusable: Haswell-v3 (needs hle, rtm)" in out


def test_cli_host_diff_json_lists_unusable_versions(
    before_after: tuple[HostCapabilities, HostCapabilities],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(before_after[0].to_json()))
    b.write_text(json.dumps(before_after[1].to_json()))
    assert main(["host", "diff", str(a), str(b), "--json"]) == 0
    (accel,) = json.loads(capsys.readouterr().out)["accelerators"]
    assert {"Haswell-v1", "Haswell-v3"} <= set(accel["now-unusable"])
    assert accel["lost"] == ["hle", "rtm"]


def test_diff_of_snapshots_without_a_common_release_asks_for_one(
    before_after: tuple[HostCapabilities, HostCapabilities],
) -> None:
    before, _after = before_after
    older = build("node7", {"7.2": {"kvm": AccelOffer(frozenset(), "kvm")}}, HostFacts("x"))
    with pytest.raises(HostError, match="no QEMU release in common"):
        diff_hosts(before, older)


def test_vulnerability_status_changes_are_listed() -> None:
    def host(text: str) -> HostCapabilities:
        facts = HostFacts("GenuineIntel", vulnerabilities={"mds": text})
        return build("n", {"10.0": {"kvm": AccelOffer(frozenset(), "kvm")}}, facts)

    diff = diff_hosts(host("Vulnerable"), host("Mitigation: Clear CPU buffers"))
    assert [str(c) for c in diff.vulnerabilities] == [
        "mds: Vulnerable -> Mitigation: Clear CPU buffers"
    ]
