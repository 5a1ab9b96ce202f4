"""Host snapshots, schema cpuver-host/2: round trip, v1 still read, errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuver import api
from cpuver.catalog.files import bundled_dir, load
from cpuver.errors import HostError
from cpuver.host.capabilities import (
    SNAPSHOT_SCHEMA,
    SNAPSHOT_SCHEMA_V1,
    AccelOffer,
    HostCapabilities,
    HostFacts,
    build,
    from_json,
)
from cpuver.resolve import Resolver

FACTS = HostFacts(
    vendor="GenuineIntel",
    brand="Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz",
    family=6,
    model=63,
    stepping=2,
    microcode="0x49",
    kernel="6.1.0-18-amd64",
    vulnerabilities={"mds": "Mitigation: Clear CPU buffers; SMT vulnerable"},
)


def v2_host() -> HostCapabilities:
    releases = {
        "7.2": {
            "kvm": AccelOffer(frozenset({"sse2", "avx2"}), "kvm", None, "2026-11-25T10:00:00Z"),
            "tcg": AccelOffer(frozenset({"sse2"}), "catalog", "QEMU emulator version 7.2.22"),
        },
        "10.0": {
            "kvm": AccelOffer(frozenset({"sse2", "avx2", "hle"}), "kvm", None, "t", "note"),
            "tcg": AccelOffer(frozenset({"sse2", "pni"}), "catalog"),
        },
    }
    return build("node1", releases, FACTS, "node1.json", "2026-11-25T10:00:00Z", "kvm")


def v2_json(**overrides: Any) -> dict[str, Any]:
    data = v2_host().to_json()
    data.update(overrides)
    return data


def host_error(data: Any) -> str:
    with pytest.raises(HostError) as caught:
        from_json(data, "host.json")
    return str(caught.value)


def test_v2_snapshot_round_trips_through_json_text() -> None:
    host = v2_host()
    text = json.dumps(host.to_json())
    assert from_json(json.loads(text), "node1.json") == host


def test_v2_snapshot_is_written_with_the_v2_schema_and_facts() -> None:
    data = v2_host().to_json()
    assert data["schema"] == SNAPSHOT_SCHEMA == "cpuver-host/2"
    assert data["cpu"]["microcode"] == "0x49"
    assert data["kernel"] == "6.1.0-18-amd64"
    assert data["releases"]["10.0"]["kvm"]["provenance"]["method"] == "kvm"


def test_v1_snapshot_is_still_read() -> None:
    data = {
        "schema": SNAPSHOT_SCHEMA_V1,
        "host": "old",
        "accelerators": {"kvm": {"features": ["sse2"]}},
    }
    assert from_json(data, "old.json").offered("kvm") == frozenset({"sse2"})


def test_v1_snapshot_offers_the_same_for_any_release() -> None:
    data = {"schema": "cpuver-host/1", "host": "old", "accelerators": {"tcg": {"features": []}}}
    assert from_json(data, "f").offered("tcg", "7.2") == frozenset()


def test_offered_without_release_gives_the_newest_release() -> None:
    assert v2_host().offered("kvm") == frozenset({"sse2", "avx2", "hle"})


def test_offered_for_a_release_gives_that_release() -> None:
    assert v2_host().offered("kvm", "7.2") == frozenset({"sse2", "avx2"})


def test_offered_for_an_unprobed_release_gives_the_newest_older_one() -> None:
    assert v2_host().offered("kvm", "9.2") == frozenset({"sse2", "avx2"})


def test_resolver_uses_the_release_of_its_catalog() -> None:
    catalog = load(bundled_dir("7.2"))
    assert Resolver(catalog, None, "kvm", v2_host()).offers == frozenset({"sse2", "avx2"})


def test_newer_schema_says_it_is_newer_than_this_cpuver_reads() -> None:
    message = host_error(v2_json(schema="cpuver-host/3"))
    assert message.startswith("host.json: schema: cpuver-host/3 is newer than this cpuver reads")


def test_missing_cpu_vendor_is_named() -> None:
    data = v2_json()
    del data["cpu"]["vendor"]
    assert host_error(data).startswith("host.json: cpu.vendor: ")


def test_missing_releases_is_named() -> None:
    data = v2_json()
    del data["releases"]
    assert host_error(data).startswith("host.json: releases: ")


def test_missing_provenance_method_is_named_with_its_path() -> None:
    data = v2_json()
    del data["releases"]["10.0"]["kvm"]["provenance"]["method"]
    assert host_error(data).startswith("host.json: releases.10.0.kvm.provenance.method: ")


def test_unknown_feature_is_named_with_its_path() -> None:
    data = v2_json()
    data["releases"]["7.2"]["tcg"]["features"] = ["warpdrive"]
    message = host_error(data)
    assert message == "host.json: releases.7.2.tcg.features: unknown feature 'warpdrive'"


def test_wrong_type_of_a_cpu_field_is_named() -> None:
    data = v2_json()
    data["cpu"]["family"] = "six"
    assert host_error(data).startswith("host.json: cpu.family: expected a int")


def test_truncated_snapshot_file_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    text = json.dumps(v2_host().to_json(), indent=2)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(HostError) as caught:
        api.read_host(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid JSON at line ")
    assert " column " in message
    assert "truncated?" in message


def test_cpuinfo_offers_are_marked_approximate_in_the_snapshot() -> None:
    offer = AccelOffer(frozenset({"sse2"}), "cpuinfo")
    host = build("n", {"10.0": {"kvm": offer}}, FACTS)
    provenance = host.to_json()["releases"]["10.0"]["kvm"]["provenance"]
    assert provenance == {"method": "cpuinfo", "approximate": True}
