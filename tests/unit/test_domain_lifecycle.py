"""The guest lifecycle (domain/lifecycle.py): transitions, refusals and CPU updates."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.domain import (
    DomainError,
    HostLacksFeatures,
    IdentityChangeRefused,
    IllegalTransition,
    UpdateConflict,
)
from cpuver.domain.lifecycle import (
    Guest,
    define,
    expect_generation,
    hosts_blocking,
    migrate,
    pause,
    restore,
    resume,
    save,
    shutdown,
    snapshot_create,
    snapshot_revert,
    start,
    update_cpu,
)
from cpuver.domain.pinning import Pin, pin
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def pin_of(catalog: Catalog, spec: str) -> Pin:
    return pin(Resolver(catalog, accel="tcg").resolve(spec), catalog)


@pytest.fixture(scope="module")
def haswell(q10: Catalog) -> Pin:
    return pin_of(q10, "Haswell-v4")


def offering(features: frozenset[str], name: str = "h") -> HostCapabilities:
    return HostCapabilities(name, {"tcg": features})


@pytest.fixture(scope="module")
def big(haswell: Pin) -> HostCapabilities:
    return offering(haswell.on | {"avx512f", "vmx"}, "big")


@pytest.fixture(scope="module")
def no_avx2(haswell: Pin) -> HostCapabilities:
    return offering(haswell.on - {"avx2", "fma"}, "old")


@pytest.fixture
def running(haswell: Pin, big: HostCapabilities) -> Guest:
    return start(define("web1", haswell), "node1", big)


def test_define_gives_a_shut_off_guest_at_generation_one(haswell: Pin) -> None:
    guest = define("web1", haswell)
    assert (guest.state, guest.host, guest.pending, guest.generation) == ("shutoff", None, None, 1)


def test_start_runs_the_guest_on_the_host(running: Guest) -> None:
    assert (running.state, running.host, running.generation) == ("running", "node1", 2)


def test_start_is_refused_with_blockers_on_a_host_lacking_pinned_features(
    haswell: Pin, no_avx2: HostCapabilities
) -> None:
    with pytest.raises(HostLacksFeatures, match="lacks pinned feature") as caught:
        start(define("web1", haswell), "old", no_avx2)
    assert caught.value.missing == ("avx2", "fma")
    assert caught.value.host == "old"


def test_every_transition_keeps_the_pin_and_bumps_the_generation(
    running: Guest, big: HostCapabilities
) -> None:
    steps: list[Callable[[Guest], Guest]] = [
        pause,
        resume,
        lambda g: migrate(g, "node2", big),
        lambda g: snapshot_create(g, "s1"),
        lambda g: snapshot_revert(g, "s1"),
        save,
        lambda g: restore(g, "node3", big),
        shutdown,
    ]
    guest = running
    for step in steps:
        after = step(guest)
        assert after.pin == guest.pin
        assert after.generation == guest.generation + 1
        guest = after
    assert (guest.state, guest.host, guest.snapshots) == ("shutoff", None, ("s1",))


def test_migrate_moves_a_running_guest(running: Guest, big: HostCapabilities) -> None:
    assert migrate(running, "node2", big).host == "node2"


def test_migrate_of_a_shut_off_guest_is_illegal(haswell: Pin, big: HostCapabilities) -> None:
    with pytest.raises(IllegalTransition, match="cannot migrate guest 'web1': it is shutoff"):
        migrate(define("web1", haswell), "node2", big)


def test_migrate_to_the_same_host_is_illegal(running: Guest, big: HostCapabilities) -> None:
    with pytest.raises(IllegalTransition, match="already runs on 'node1'"):
        migrate(running, "node1", big)


def test_migrate_is_refused_with_blockers_when_the_target_lacks_a_feature(
    running: Guest, no_avx2: HostCapabilities
) -> None:
    with pytest.raises(HostLacksFeatures) as caught:
        migrate(running, "old", no_avx2)
    assert caught.value.missing == ("avx2", "fma")
    assert "cannot migrate guest 'web1' on host 'old'" in str(caught.value)


def test_save_then_restore_checks_the_new_host(
    running: Guest, big: HostCapabilities, no_avx2: HostCapabilities
) -> None:
    saved = save(running)
    assert (saved.state, saved.host) == ("saved", None)
    with pytest.raises(HostLacksFeatures):
        restore(saved, "old", no_avx2)
    assert restore(saved, "node2", big).state == "running"


def test_shutdown_of_a_saved_guest_is_illegal(running: Guest) -> None:
    with pytest.raises(IllegalTransition, match="it is saved"):
        shutdown(save(running))


def test_start_of_a_running_guest_is_illegal(running: Guest, big: HostCapabilities) -> None:
    with pytest.raises(IllegalTransition, match="only a shutoff guest can be started"):
        start(running, "node2", big)


def test_snapshot_names_are_unique(running: Guest) -> None:
    with pytest.raises(IllegalTransition, match="already has a snapshot 's1'"):
        snapshot_create(snapshot_create(running, "s1"), "s1")


def test_revert_to_an_unknown_snapshot_is_illegal(running: Guest) -> None:
    with pytest.raises(IllegalTransition, match="no snapshot 'nope'"):
        snapshot_revert(running, "nope")


def test_snapshot_revert_keeps_a_pin_updated_after_the_snapshot(haswell: Pin, q10: Catalog) -> None:
    guest = snapshot_create(define("web1", haswell), "before")
    guest, _ = update_cpu(guest, pin_of(q10, "Haswell-v4,-pcid"))
    reverted = snapshot_revert(guest, "before")
    assert reverted.pin == guest.pin != haswell


def test_update_cpu_applies_at_once_to_a_shut_off_guest(haswell: Pin, q10: Catalog) -> None:
    newer = pin_of(q10, "Haswell-v4,+vmx,-pcid")
    guest, diff = update_cpu(define("web1", haswell), newer)
    assert guest.pin == newer and guest.pending is None and guest.generation == 2
    assert (diff.gained, diff.lost, diff.signature) == (("vmx",), ("pcid",), ())
    assert diff.applied and not diff.pending and not diff.identity_changed


def test_update_cpu_dry_run_changes_nothing(haswell: Pin, q10: Catalog) -> None:
    guest = define("web1", haswell)
    same, diff = update_cpu(guest, pin_of(q10, "Haswell-v4,+vmx"), dry_run=True)
    assert same is guest
    assert diff.gained == ("vmx",) and not diff.applied


def test_update_cpu_refuses_an_identity_change_unless_accepted(haswell: Pin, q10: Catalog) -> None:
    guest = define("web1", haswell)
    broadwell = pin_of(q10, "Broadwell-v4")
    with pytest.raises(IdentityChangeRefused, match="Windows may re-activate") as caught:
        update_cpu(guest, broadwell)
    assert any(change.startswith("model ") for change in caught.value.changes)
    updated, diff = update_cpu(guest, broadwell, accept_signature_change=True)
    assert updated.pin == broadwell
    assert "model" in diff.identity and diff.identity_changed
    assert any("re-activate" in line for line in diff.lines())


def test_update_cpu_of_a_running_guest_is_pending_until_cold_boot(
    running: Guest, q10: Catalog, big: HostCapabilities
) -> None:
    newer = pin_of(q10, "Haswell-v4,+vmx")
    updated, diff = update_cpu(running, newer)
    assert diff.pending and not diff.applied
    assert updated.pin == running.pin and updated.pending == newer
    restored = restore(save(updated), "node2", big)  # not a cold boot
    assert restored.pin == running.pin and restored.pending == newer
    booted = start(shutdown(restored), "node2", big)
    assert booted.pin == newer and booted.pending is None


def test_pending_update_is_checked_against_the_host_at_cold_boot(
    running: Guest, q10: Catalog, haswell: Pin
) -> None:
    updated, _ = update_cpu(running, pin_of(q10, "Haswell-v4,+vmx"))
    exact = offering(haswell.on, "exact")
    with pytest.raises(HostLacksFeatures) as caught:
        start(shutdown(updated), "exact", exact)
    assert caught.value.missing == ("vmx",)


def test_a_second_update_while_one_is_pending_is_illegal(running: Guest, q10: Catalog) -> None:
    updated, _ = update_cpu(running, pin_of(q10, "Haswell-v4,+vmx"))
    with pytest.raises(IllegalTransition, match="already has a pending CPU update"):
        update_cpu(updated, pin_of(q10, "Haswell-v4,-pcid"))


def test_update_to_the_same_cpu_is_a_no_op(haswell: Pin, q10: Catalog) -> None:
    guest = define("web1", haswell)
    same, diff = update_cpu(guest, pin_of(q10, "Haswell,version=v4"))
    assert same is guest and diff.empty


def test_expect_generation_detects_a_concurrent_change(running: Guest) -> None:
    expect_generation(running, running.generation)
    with pytest.raises(UpdateConflict, match="expected generation 1, found 2"):
        expect_generation(running, 1)


def test_guest_json_round_trip(running: Guest, q10: Catalog) -> None:
    updated, _ = update_cpu(snapshot_create(running, "s1"), pin_of(q10, "Haswell-v4,+vmx"))
    assert Guest.from_json(updated.to_json()) == updated


def test_guest_json_names_the_bad_field(running: Guest) -> None:
    data = {**running.to_json(), "state": "flying"}
    with pytest.raises(DomainError, match="state: expected one of"):
        Guest.from_json(data)


def test_a_running_guest_needs_a_host(haswell: Pin) -> None:
    with pytest.raises(DomainError, match="has no host"):
        dataclasses.replace(define("web1", haswell), state="running")


def test_hosts_blocking_lists_each_host_lacking_features(
    running: Guest, big: HostCapabilities, no_avx2: HostCapabilities
) -> None:
    assert hosts_blocking(running, {"big": big, "old": no_avx2}) == {"old": ("avx2", "fma")}
