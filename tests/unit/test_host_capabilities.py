"""Host capabilities: QEMU's expansion reply and cpuver's snapshot, with errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from cpuver.errors import HostError
from cpuver.host.capabilities import SNAPSHOT_SCHEMA_V1 as SNAPSHOT_SCHEMA
from cpuver.host.capabilities import HostCapabilities, from_json

MAX_PROPS: dict[str, Any] = {
    "vendor": "AuthenticAMD",
    "family": 6,
    "model-id": "QEMU TCG CPU version 2.5+",
    "sse2": True,
    "avx2": True,
    "hle": False,
    "pmu": False,
}


def snapshot(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": SNAPSHOT_SCHEMA,
        "host": "node1",
        "vendor": "GenuineIntel",
        "accelerators": {"kvm": {"features": ["sse2", "avx2"]}, "tcg": {"features": ["sse2"]}},
        "provenance": {"method": "qemu", "kernel": "6.1.0"},
    }
    data.update(overrides)
    return data


def host_error(data: Any) -> str:
    with pytest.raises(HostError) as caught:
        from_json(data, "host.json")
    return str(caught.value)


def test_qmp_reply_with_return_wrapper_gives_tcg_offers_for_max() -> None:
    caps = from_json({"return": {"model": {"name": "max", "props": MAX_PROPS}}}, "max.json")
    assert caps.offers == {"tcg": frozenset({"sse2", "avx2"})}


def test_qmp_reply_without_return_wrapper_is_read_the_same() -> None:
    wrapped = from_json({"return": {"model": {"name": "max", "props": MAX_PROPS}}}, "f")
    bare = from_json({"model": {"name": "max", "props": MAX_PROPS}}, "f")
    assert bare == wrapped


def test_qmp_reply_for_host_model_gives_kvm_offers() -> None:
    caps = from_json({"model": {"name": "host", "props": {"sse2": True}}}, "host.json")
    assert caps.offers == {"kvm": frozenset({"sse2"})}


def test_qmp_reply_takes_the_vendor_from_props() -> None:
    caps = from_json({"model": {"name": "max", "props": MAX_PROPS}}, "f")
    assert caps.vendor == "AuthenticAMD"


def test_qmp_reply_ignores_disabled_features_and_non_feature_props() -> None:
    caps = from_json({"model": {"name": "max", "props": MAX_PROPS}}, "f")
    assert caps.offered("tcg") == frozenset({"sse2", "avx2"})


def test_qmp_reply_for_another_model_names_model_name() -> None:
    message = host_error({"model": {"name": "Haswell", "props": {}}})
    assert message.startswith("host.json: model.name: ")
    assert "'Haswell'" in message


def test_qmp_reply_without_props_names_model_props() -> None:
    assert host_error({"model": {"name": "max"}}).startswith("host.json: model.props: ")


def test_snapshot_gives_offers_per_accelerator_vendor_and_provenance() -> None:
    caps = from_json(snapshot(), "node1.json")
    assert caps == HostCapabilities(
        name="node1",
        offers={"kvm": frozenset({"sse2", "avx2"}), "tcg": frozenset({"sse2"})},
        vendor="GenuineIntel",
        source="node1.json",
        provenance={"method": "qemu", "kernel": "6.1.0"},
    )


def test_snapshot_round_trips_through_to_json() -> None:
    caps = from_json(snapshot(), "node1.json")
    assert from_json(caps.to_json(), "node1.json") == caps


def test_offered_is_none_for_an_accelerator_not_probed() -> None:
    caps = from_json(snapshot(accelerators={"tcg": {"features": ["sse2"]}}), "f")
    assert caps.offered("kvm") is None


def test_snapshot_of_another_schema_names_schema() -> None:
    message = host_error(snapshot(schema="cpuver-host/3"))
    assert message.startswith("host.json: schema: ")
    assert "cpuver-host/3" in message


def test_snapshot_without_host_name_names_host() -> None:
    data = snapshot()
    del data["host"]
    assert host_error(data).startswith("host.json: host: ")


def test_snapshot_without_accelerators_names_accelerators() -> None:
    data = snapshot()
    del data["accelerators"]
    assert host_error(data).startswith("host.json: accelerators: ")


def test_snapshot_with_a_non_list_feature_entry_names_the_accelerator() -> None:
    message = host_error(snapshot(accelerators={"kvm": {"features": "sse2"}}))
    assert message.startswith("host.json: accelerators.kvm.features: ")


def test_snapshot_with_an_unknown_feature_names_it_and_its_field() -> None:
    message = host_error(snapshot(accelerators={"tcg": {"features": ["sse2", "warpdrive"]}}))
    assert message == "host.json: accelerators.tcg.features: unknown feature 'warpdrive'"


def test_snapshot_feature_alias_spellings_are_read_as_canonical_names() -> None:
    caps = from_json(snapshot(accelerators={"tcg": {"features": ["sse4_1", "sse4-2"]}}), "f")
    assert caps.offered("tcg") == frozenset({"sse4.1", "sse4.2"})


def test_json_that_is_neither_form_says_what_was_expected() -> None:
    message = host_error({"hello": "world"})
    assert "no 'schema'" in message
    assert "no 'model'" in message


def test_json_that_is_not_an_object_is_refused() -> None:
    assert host_error(["sse2"]) == "host.json: expected a JSON object"
