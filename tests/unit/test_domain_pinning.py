"""Pins (domain/pinning.py): a resolution frozen with every known feature on or off."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.domain import DomainError
from cpuver.domain.pinning import Pin, check, missing_on, pin, qemu_cpu_arg
from cpuver.host.capabilities import HostCapabilities
from cpuver.models import Version
from cpuver.resolve import Resolver


@pytest.fixture(scope="module")
def q72() -> Catalog:
    return open_catalog("7.2")


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def tcg_host(catalog: Catalog, name: str = "h1") -> HostCapabilities:
    return HostCapabilities(name, {"tcg": catalog.tcg_offers})


def pin_of(catalog: Catalog, spec: str, machine: str | None = None) -> Pin:
    resolver = Resolver(catalog, machine=machine, accel="tcg", host=tcg_host(catalog))
    return pin(resolver.resolve(spec), catalog)


def test_pin_has_every_known_feature_on_or_off(q10: Catalog) -> None:
    pinned = pin_of(q10, "Westmere,version=best")
    assert pinned.on <= q10.known_features
    assert pinned.on | pinned.off == q10.known_features
    assert not pinned.on & pinned.off
    assert list(pinned.features_on) == sorted(pinned.features_on)


def test_pin_records_resolution_and_catalog(q72: Catalog) -> None:
    pinned = pin_of(q72, "Westmere,version=best")
    assert (pinned.spec, pinned.rule, pinned.model, pinned.version, pinned.name) == (
        "Westmere,version=best",
        "best",
        "Westmere",
        "Westmere-v1",
        "Westmere-v1",
    )
    assert (pinned.machine, pinned.accel, pinned.catalog_release) == ("pc-q35-7.2", "tcg", "7.2.22")
    assert pinned.catalog_build == q72.build
    assert pinned.signature.as_dict()["vendor"] == "GenuineIntel"


def test_fingerprint_is_stable_across_json_round_trip(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4,-hle")
    again = Pin.from_json(pinned.to_json())
    assert again == pinned
    assert again.fingerprint == pinned.fingerprint


def test_fingerprint_is_independent_of_how_the_cpu_was_asked_for(q10: Catalog) -> None:
    by_best = pin_of(q10, "Westmere,version=best")
    by_name = pin_of(q10, "Westmere-v1")
    assert by_best.spec != by_name.spec
    assert by_best.fingerprint == by_name.fingerprint


def test_fingerprint_changes_when_a_feature_changes(q10: Catalog) -> None:
    assert pin_of(q10, "Haswell-v4").fingerprint != pin_of(q10, "Haswell-v4,-pcid").fingerprint


def test_fingerprint_changes_when_the_signature_changes(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    stepped = dataclasses.replace(pinned, signature=pinned.signature.with_changes({"stepping": 9}))
    assert stepped.fingerprint != pinned.fingerprint


def test_fingerprint_changes_when_the_machine_type_changes(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    assert dataclasses.replace(pinned, machine="pc-q35-9.2").fingerprint != pinned.fingerprint


def test_newer_catalog_keeps_the_pin_and_its_fingerprint(q72: Catalog, q10: Catalog) -> None:
    pinned = pin_of(q72, "Westmere,version=best")
    before = pinned.to_json()
    assert check(pinned, q10) == []
    qemu_cpu_arg(pinned, q10)
    assert pinned.to_json() == before
    assert Pin.from_json(before).fingerprint == pinned.fingerprint
    # re-resolving with the newer catalog would give another pin: that is never done implicitly
    assert pin_of(q10, "Westmere,version=best").fingerprint != pinned.fingerprint


def test_from_json_names_the_bad_field(q10: Catalog) -> None:
    data: dict[str, Any] = pin_of(q10, "Haswell-v4").to_json()
    data["features"]["on"] = "avx2"
    with pytest.raises(DomainError, match=r"features\.on: expected a list"):
        Pin.from_json(data)


def test_from_json_names_a_bad_signature_field(q10: Catalog) -> None:
    data: dict[str, Any] = pin_of(q10, "Haswell-v4").to_json()
    data["signature"]["family"] = "six"
    with pytest.raises(DomainError, match=r"signature\.family: expected an integer"):
        Pin.from_json(data)


def test_from_json_refuses_an_unknown_feature_name(q10: Catalog) -> None:
    data: dict[str, Any] = pin_of(q10, "Haswell-v4").to_json()
    data["features"]["off"].append("warp-drive")
    with pytest.raises(DomainError, match=r"features\.off: 'warp-drive' is not a QEMU feature"):
        Pin.from_json(data)


def test_from_json_refuses_an_edited_pin(q10: Catalog) -> None:
    data: dict[str, Any] = pin_of(q10, "Haswell-v4").to_json()
    data["features"]["on"].remove("avx2")
    data["features"]["off"].append("avx2")
    with pytest.raises(DomainError, match=r"fingerprint: .* does not match"):
        Pin.from_json(data)


def test_from_json_refuses_another_schema(q10: Catalog) -> None:
    data = {**pin_of(q10, "Haswell-v4").to_json(), "schema": "cpuver-pin/9"}
    with pytest.raises(DomainError, match="schema"):
        Pin.from_json(data)


def test_qemu_cpu_arg_is_the_bare_version_when_nothing_differs(q10: Catalog) -> None:
    assert qemu_cpu_arg(pin_of(q10, "Haswell-v4"), q10) == "Haswell-v4,enforce"


def test_qemu_cpu_arg_names_changed_features(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4,+pcid,-avx2")
    assert qemu_cpu_arg(pinned, q10) == "Haswell-v4,avx2=off,enforce"
    assert qemu_cpu_arg(pin_of(q10, "Haswell-v4,-pcid,+vmx"), q10) == (
        "Haswell-v4,vmx=on,pcid=off,enforce"
    )


def test_qemu_cpu_arg_spells_out_a_legacy_revision(q72: Catalog) -> None:
    pinned = pin_of(q72, "Haswell,version=2.4.0")
    assert pinned.name == "Haswell-2.4.0"
    assert qemu_cpu_arg(pinned, q72) == "Haswell-v1,stepping=1,abm=off,enforce"


def test_qemu_cpu_arg_gives_the_same_cpu_under_a_newer_catalog(q72: Catalog, q10: Catalog) -> None:
    pinned = pin_of(q72, "Haswell-v4,-hle")
    name, *props, enforce = qemu_cpu_arg(pinned, q10).split(",")
    assert (name, enforce) == ("Haswell-v4", "enforce")
    changes = [("+" if p.endswith("=on") else "-") + p.rsplit("=", 1)[0] for p in props]
    spec = ",".join([name, *changes])
    again = Resolver(q10, machine=pinned.machine, accel="tcg").resolve(spec)
    assert again.definition == pinned.definition


def test_missing_on_lists_pinned_features_the_host_lacks(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    host = HostCapabilities("small", {"tcg": pinned.on - {"avx2", "fma"}})
    assert missing_on(pinned, host) == ("avx2", "fma")
    assert missing_on(pinned, HostCapabilities("big", {"tcg": pinned.on})) == ()


def test_missing_on_refuses_a_host_without_the_accelerator(q10: Catalog) -> None:
    pinned = pin_of(q10, "Westmere-v1")
    with pytest.raises(DomainError, match="no tcg capabilities"):
        missing_on(pinned, HostCapabilities("kvm-only", {"kvm": pinned.on}))


def test_check_reports_a_version_missing_from_the_catalog(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    gone = dataclasses.replace(pinned, version="Haswell-v9")
    assert check(gone, q10) == ["pinned version Haswell-v9 no longer exists in catalog 10.0.13"]
    with pytest.raises(DomainError, match="does not exist in catalog"):
        qemu_cpu_arg(gone, q10)


def test_check_reports_a_deprecated_version(q10: Catalog) -> None:
    pinned = pin_of(q10, "Haswell-v4")
    model = q10.models["Haswell"]
    versions = tuple(
        dataclasses.replace(v, deprecated=True) if v.number == 4 else v for v in model.versions
    )
    patched = dataclasses.replace(
        q10, models={**q10.models, "Haswell": dataclasses.replace(model, versions=versions)}
    )
    deprecated: Version = versions[3]
    assert deprecated.deprecated
    assert check(pinned, patched) == ["pinned version Haswell-v4 is deprecated in catalog 10.0.13"]


def test_check_reports_features_an_older_catalog_does_not_know(q72: Catalog, q10: Catalog) -> None:
    newest = pin_of(q10, "SapphireRapids-v3")
    problems = check(newest, q72)
    assert any("does not know pinned feature(s)" in p for p in problems)
