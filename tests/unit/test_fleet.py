"""Pools of hosts (cpuver.fleet): best-for-pool, blockers per host, what-if, migration targets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpuver import fleet as fleet_module
from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.errors import HostError, InvalidSpec, NotRunnable
from cpuver.features import FeatureSet
from cpuver.fleet import Fleet, PoolAnswer, WhatIfChange, offers_of
from cpuver.host.capabilities import AccelOffer, HostCapabilities, HostFacts, build
from cpuver.resolve import Resolver

TSX = frozenset({"hle", "rtm"})


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def needs(catalog: Catalog, name: str, accel: str = "kvm") -> FeatureSet:
    """What ``name`` requires under ``accel`` on the default machine type."""
    return Resolver(catalog, accel=accel).resolve(name).definition.features


def capable_of(catalog: Catalog, name: str, accel: str = "kvm") -> FeatureSet:
    """A host offering a version's features plus the accelerator's defaults."""
    return needs(catalog, name, accel) | catalog.accelerator(accel).defaults.on


def real_looking_hosts(catalog: Catalog) -> dict[str, tuple[str, FeatureSet]]:
    """name -> (accelerator, offers)."""
    return {
        "tcg": ("tcg", catalog.tcg_offers),
        "haswell": ("kvm", capable_of(catalog, "Haswell-v4")),
        "haswell-tsx": ("kvm", capable_of(catalog, "Haswell-v3")),
        "amd-like": ("kvm", capable_of(catalog, "EPYC-Rome-v4") - TSX),
        "icelake": ("kvm", capable_of(catalog, "Icelake-Server-v7")),
        "cascadelake": ("kvm", capable_of(catalog, "Cascadelake-Server-v5")),
    }


@pytest.mark.parametrize(
    "host", ["tcg", "haswell", "haswell-tsx", "amd-like", "icelake", "cascadelake"]
)
def test_pool_of_one_host_equals_the_resolvers_best_for_every_model(
    q10: Catalog, host: str
) -> None:
    accel, offers = real_looking_hosts(q10)[host]
    caps = HostCapabilities(host, {accel: offers}, "GenuineIntel")
    resolver = Resolver(q10, accel=accel, host=caps)
    fleet = Fleet(q10, accel)
    fleet.set_host(host, offers)
    for model in q10.models:
        answer = fleet.best(model)
        try:
            resolution = resolver.resolve(f"{model},version=best")
        except NotRunnable as err:
            assert answer.best is None, model
            assert {v: set(m[0][1]) for v, m in answer.blocked} == {
                v: set(b) for v, b in err.blockers.items()
            }
            continue
        assert answer.best == resolution.name, model
        newer = [
            (name, ((host, missing),))
            for name, missing in resolution.blockers
            if q10.lookup(name).version.number > resolution.version.number  # type: ignore[union-attr]
        ]
        assert list(answer.blocked) == newer, model


def test_versions_are_every_versioned_name_of_the_catalog(q10: Catalog) -> None:
    fleet = Fleet(q10)
    expected = [v.name for m in q10.models.values() for v in m.versions]
    assert list(fleet.versions) == expected


def test_matrix_is_hosts_by_versions_in_the_order_asked(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("haswell", capable_of(q10, "Haswell-v4"))
    fleet.set_host("none", frozenset())
    matrix = fleet.matrix(["none", "haswell"])
    assert matrix.shape == (2, len(fleet.versions))
    assert matrix.dtype == np.bool_
    column = fleet.versions.index("Haswell-v4")
    assert not matrix[0, column]
    assert matrix[1, column]
    assert not fleet.matrix(["haswell"])[0, fleet.versions.index("Haswell-v3")]


def test_best_is_the_highest_version_every_host_runs_even_when_older_ones_do_not(
    q10: Catalog,
) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", capable_of(q10, "Haswell-v4"))
    fleet.set_host("b", capable_of(q10, "Haswell-v4"))
    answer = fleet.best("Haswell")
    assert answer == PoolAnswer("Haswell", "Haswell-v4", ("a", "b"), ())
    # Haswell-v1 and v3 need TSX, which neither host has: not monotone, and not in the answer.
    assert not fleet.matrix()[:, fleet.versions.index("Haswell-v3")].any()


def test_blocked_names_each_host_that_holds_a_newer_version_back_and_what_it_lacks(
    q10: Catalog,
) -> None:
    fleet = Fleet(q10)
    full = capable_of(q10, "Cascadelake-Server-v5") | capable_of(q10, "Cascadelake-Server-v1")
    fleet.set_host("ok-1", full)
    fleet.set_host("old-microcode", full - {"arch-capabilities"})
    fleet.set_host("ok-2", full)
    answer = fleet.best("Cascadelake-Server")
    v5_only = needs(q10, "Cascadelake-Server-v5") - needs(q10, "Cascadelake-Server-v1")
    assert "arch-capabilities" in v5_only
    assert answer.best == "Cascadelake-Server-v1"
    assert [name for name, _ in answer.blocked] == [
        f"Cascadelake-Server-v{n}" for n in (5, 4, 3, 2)
    ]
    for _name, holders in answer.blocked:
        assert holders == (("old-microcode", ("arch-capabilities",)),)


def test_blocked_lists_several_hosts_with_their_own_missing_features(q10: Catalog) -> None:
    fleet = Fleet(q10)
    full = capable_of(q10, "Haswell-v3")
    fleet.set_host("no-tsx", full - TSX)
    fleet.set_host("no-ibrs", full - {"spec-ctrl"})
    answer = fleet.best("Haswell", ["no-ibrs", "no-tsx"])
    assert answer.best == "Haswell-v2"
    assert answer.hosts == ("no-ibrs", "no-tsx")
    assert answer.blocked == (
        ("Haswell-v4", (("no-ibrs", ("spec-ctrl",)),)),
        ("Haswell-v3", (("no-ibrs", ("spec-ctrl",)), ("no-tsx", ("hle", "rtm")))),
    )


def test_no_version_runs_on_every_host_gives_none_and_lists_every_version(
    q10: Catalog,
) -> None:
    fleet = Fleet(q10)
    fleet.set_host("bare", frozenset())
    answer = fleet.best("Haswell")
    assert answer.best is None
    assert [name for name, _ in answer.blocked] == [f"Haswell-v{n}" for n in (4, 3, 2, 1)]


def test_best_takes_an_alias_versioned_name_or_best_spec_for_the_model(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", capable_of(q10, "Haswell-v4"))
    for text in ("Haswell", "Haswell-noTSX", "Haswell-v1", "Haswell,version=best"):
        assert fleet.best(text).best == "Haswell-v4", text


def test_best_spec_feature_changes_apply_to_every_version(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", capable_of(q10, "Haswell-v3"))
    assert fleet.best("Haswell,version=best").best == "Haswell-v4"
    answer = fleet.best("Haswell,version=best,+hle")
    assert answer.best == "Haswell-v4"
    fleet.set_host("a", capable_of(q10, "Haswell-v3") - {"rtm"})
    answer = fleet.best("Haswell,version=best,+rtm")
    assert answer.best is None
    assert dict(answer.blocked)["Haswell-v4"] == (("a", ("rtm",)),)


def test_best_with_a_fixed_version_is_an_invalid_spec(q10: Catalog) -> None:
    with pytest.raises(InvalidSpec):
        Fleet(q10).best("Haswell,version=v3")


def test_unknown_host_in_a_pool_is_a_host_error(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", frozenset())
    with pytest.raises(HostError, match="'b'"):
        fleet.best("Haswell", ["a", "b"])
    with pytest.raises(HostError):
        fleet.remove_host("b")


def test_set_host_replacing_a_host_updates_the_answers(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", capable_of(q10, "Icelake-Server-v7"))
    fleet.set_host("b", capable_of(q10, "Icelake-Server-v7"))
    assert fleet.baseline()["Icelake-Server"] == "Icelake-Server-v7"
    fleet.set_host("b", capable_of(q10, "Icelake-Server-v7") - TSX)
    assert fleet.hosts == ("a", "b")
    assert fleet.baseline()["Icelake-Server"] == "Icelake-Server-v6"
    assert fleet.best("Icelake-Server").blocked == (
        ("Icelake-Server-v7", (("b", ("hle", "rtm")),)),
    )
    fleet.set_host("b", capable_of(q10, "Icelake-Server-v7"))
    assert fleet.baseline()["Icelake-Server"] == "Icelake-Server-v7"


def test_remove_host_lifts_what_it_held_back(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("old", capable_of(q10, "Haswell-v4"))
    fleet.set_host("new", capable_of(q10, "Icelake-Server-v7"))
    fleet.set_host("new2", capable_of(q10, "Icelake-Server-v7"))
    assert fleet.baseline()["Icelake-Server"] is None
    fleet.remove_host("old")
    assert fleet.hosts == ("new", "new2")
    assert fleet.baseline()["Icelake-Server"] == "Icelake-Server-v7"
    assert fleet.matrix().shape == (2, len(fleet.versions))
    assert fleet.best("Icelake-Server", ["new2"]).best == "Icelake-Server-v7"


def test_set_hosts_in_bulk_equals_one_at_a_time(q10: Catalog) -> None:
    hosts = {name: offers for name, (_a, offers) in real_looking_hosts(q10).items()}
    one, bulk = Fleet(q10), Fleet(q10)
    for name, offers in hosts.items():
        one.set_host(name, offers)
    bulk.set_host("amd-like", frozenset())
    bulk.set_hosts(hosts)
    assert bulk.hosts == ("amd-like", *[h for h in hosts if h != "amd-like"])
    assert (bulk.matrix(one.hosts) == one.matrix()).all()
    assert bulk.baseline() == one.baseline()


def test_baseline_is_each_models_best_for_the_pool(q10: Catalog) -> None:
    fleet = Fleet(q10)
    for name, (_a, offers) in real_looking_hosts(q10).items():
        fleet.set_host(name, offers)
    pool = ["haswell", "icelake"]
    baseline = fleet.baseline(pool)
    assert set(baseline) == set(q10.models)
    assert baseline == {model: fleet.best(model, pool).best for model in q10.models}
    assert baseline["Haswell"] == "Haswell-v4"
    assert fleet.baseline() == {model: fleet.best(model).best for model in q10.models}


def test_empty_pool_runs_every_latest_version(q10: Catalog) -> None:
    assert Fleet(q10).baseline()["Haswell"] == "Haswell-v4"


def test_what_if_dropping_tsx_turns_icelake_v7_pools_to_v6(q10: Catalog) -> None:
    fleet = Fleet(q10)
    for name in ("ice-1", "ice-2", "ice-3"):
        fleet.set_host(name, capable_of(q10, "Icelake-Server-v7"))
    changes = fleet.what_if(drop=TSX, hosts=["ice-1", "ice-2"])
    assert (
        WhatIfChange("Icelake-Server", "Icelake-Server-v7", "Icelake-Server-v6", ("ice-1", "ice-2"))
        in changes
    )
    # The change is hypothetical: nothing in the fleet changed.
    assert fleet.baseline(["ice-1"])["Icelake-Server"] == "Icelake-Server-v7"


def test_what_if_of_some_hosts_answers_for_the_whole_pool(q10: Catalog) -> None:
    """A pool that never ran any Icelake version keeps that answer whatever ice-1 loses."""
    fleet = Fleet(q10)
    fleet.set_host("ice-1", capable_of(q10, "Icelake-Server-v7"))
    fleet.set_host("haswell", capable_of(q10, "Haswell-v3"))
    assert "Icelake-Server" not in {c.model for c in fleet.what_if(drop=TSX, hosts=["ice-1"])}


def test_what_if_dropping_tsx_leaves_haswell_v4_pools_alone(q10: Catalog) -> None:
    # Haswell-v4 is Haswell-v3 without TSX: a TSX-capable Haswell pool already gets v4.
    fleet = Fleet(q10)
    fleet.set_host("h", capable_of(q10, "Haswell-v3"))
    assert fleet.best("Haswell").best == "Haswell-v4"
    assert "Haswell" not in {c.model for c in fleet.what_if(drop=TSX)}


def test_what_if_adding_features_names_the_hosts_it_lifts(q10: Catalog) -> None:
    fleet = Fleet(q10)
    full = capable_of(q10, "Cascadelake-Server-v5") | capable_of(q10, "Cascadelake-Server-v1")
    fleet.set_host("ok", full)
    fleet.set_host("old", full - {"arch-capabilities"})
    changes = {c.model: c for c in fleet.what_if(add=frozenset({"arch-capabilities"}))}
    assert changes["Cascadelake-Server"] == WhatIfChange(
        "Cascadelake-Server", "Cascadelake-Server-v1", "Cascadelake-Server-v5", ("old",)
    )


def test_targets_are_the_hosts_offering_every_required_feature(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("haswell", capable_of(q10, "Haswell-v4"))
    fleet.set_host("haswell-tsx", capable_of(q10, "Haswell-v3"))
    fleet.set_host("icelake", capable_of(q10, "Icelake-Server-v7"))
    pin = needs(q10, "Haswell-v3")
    assert fleet.targets(pin) == ("haswell-tsx", "icelake")
    assert fleet.targets(frozenset()) == fleet.hosts


def test_targets_check_features_no_version_needs(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", frozenset({"sse2"}))
    fleet.set_host("b", frozenset({"sse2", "made-up-feature"}))
    assert fleet.targets(frozenset({"made-up-feature"})) == ("b",)


def test_offers_of_a_host_is_what_it_offers_for_the_catalogs_release(q10: Catalog) -> None:
    facts = HostFacts("GenuineIntel")
    caps = build(
        "h",
        {
            "7.2": {"kvm": AccelOffer(frozenset({"sse2"}), "kvm")},
            "10.0": {"kvm": AccelOffer(frozenset({"sse2", "avx"}), "kvm")},
        },
        facts,
    )
    assert offers_of(caps, "kvm", "10.0.2") == frozenset({"sse2", "avx"})
    assert offers_of(caps, "kvm", "7.2") == frozenset({"sse2"})
    assert offers_of(caps, "tcg", "10.0") is None
    assert offers_of(caps, "tcg", "10.0", q10) == q10.tcg_offers


def test_tcg_fleet_uses_tcg_definitions(q10: Catalog) -> None:
    fleet = Fleet(q10, "tcg")
    fleet.set_host("t", q10.tcg_offers)
    assert fleet.accel == "tcg"
    assert (
        fleet.best("Westmere").best
        == Resolver(q10, accel="tcg").resolve("Westmere,version=best").name
    )


_UNIVERSE = sorted(
    set().union(
        *(
            needs(open_catalog("10.0"), name)
            for name in ("Haswell-v4", "Cascadelake-Server-v5", "EPYC-Rome-v4")
        )
    )
    | TSX
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pool=st.lists(st.frozensets(st.sampled_from(_UNIVERSE)), min_size=1, max_size=4),
    extra=st.frozensets(st.sampled_from(_UNIVERSE)),
    drop=st.frozensets(st.sampled_from(_UNIVERSE), max_size=3),
)
def test_adding_a_host_never_makes_an_answer_newer(
    q10: Catalog, pool: list[FeatureSet], extra: FeatureSet, drop: FeatureSet
) -> None:
    fleet = Fleet(q10)
    full = frozenset(_UNIVERSE)
    for i, offers in enumerate(pool):
        fleet.set_host(f"h{i}", full - (offers & drop))
    before = fleet.baseline()
    fleet.set_host("extra", extra)
    after = fleet.baseline()
    for model, version in after.items():
        if version is not None:
            assert before[model] is not None
            assert fleet.versions.index(version) <= fleet.versions.index(before[model])
            # and the new answer still runs on every old host
            assert fleet.matrix(fleet.hosts)[:, fleet.versions.index(version)].all()


def test_usability_of_encoded_offers_equals_the_kept_matrix(q10: Catalog) -> None:
    fleet = Fleet(q10)
    for name, (_a, offers) in real_looking_hosts(q10).items():
        fleet.set_host(name, offers)
    assert (fleet.usability(fleet.bits()) == fleet.matrix()).all()


def test_blocked_lists_stay_exact_when_pattern_hashes_collide(
    q10: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(q10)
    full = capable_of(q10, "Haswell-v3")
    fleet.set_host("no-tsx", full - TSX)
    fleet.set_host("no-ibrs", full - {"spec-ctrl"})
    expected = fleet.best("Haswell")
    monkeypatch.setattr(fleet_module, "_mix", lambda words: words & np.uint64(0))
    assert fleet.best("Haswell") == expected


def test_missing_is_what_a_version_needs_beyond_the_host(q10: Catalog) -> None:
    fleet = Fleet(q10, "kvm")
    fleet.set_host("no-tsx", capable_of(q10, "Haswell-v1") - TSX)
    assert fleet.missing("no-tsx", "Haswell-v1") == ("hle", "rtm")
    assert fleet.missing("no-tsx", "Haswell-v2") == ()


def test_model_versions_are_a_models_columns_oldest_first(q10: Catalog) -> None:
    fleet = Fleet(q10, "kvm")
    assert fleet.model_versions("Haswell-noTSX") == tuple(f"Haswell-v{n}" for n in range(1, 5))


def random_pool(catalog: Catalog, count: int, seed: int) -> Fleet:
    """Hosts of a few generations, each missing random features (TSX often)."""
    import random

    rng = random.Random(seed)
    bases = [capable_of(catalog, n) for n in ("Haswell-v4", "Cascadelake-Server-v5", "EPYC-v4")]
    fleet = Fleet(catalog)
    for i in range(count):
        offers = set(rng.choice(bases))
        offers -= {f for f in offers if rng.random() < 0.03}
        if rng.random() < 0.3:
            offers -= TSX
        fleet.set_host(f"h{i}", frozenset(offers))
    return fleet


def test_every_blocked_pair_is_a_host_that_cannot_run_it_with_what_it_lacks(q10: Catalog) -> None:
    fleet = random_pool(q10, 60, seed=5)
    for model in ("Haswell", "Cascadelake-Server", "EPYC"):
        answer = fleet.best(model)
        versions = fleet.model_versions(model)
        best_at = versions.index(answer.best) if answer.best else -1
        assert [v for v, _ in answer.blocked] == list(reversed(versions[best_at + 1 :]))
        for version, holders in answer.blocked:
            column = fleet.versions.index(version)
            runs = fleet.matrix()[:, column]
            cannot = [h for h, ok in zip(fleet.hosts, runs, strict=True) if not ok]
            assert [h for h, _ in holders] == cannot
            assert all(missing == fleet.missing(h, version) for h, missing in holders)


def test_blockers_give_hosts_and_pair_count_without_spelling_features(q10: Catalog) -> None:
    fleet = random_pool(q10, 40, seed=7)
    blocked = fleet.best("Cascadelake-Server").blocked
    assert isinstance(blocked, fleet_module.Blockers)
    assert blocked.pairs == sum(len(holders) for _v, holders in blocked)
    assert [blocked.hosts(i) for i in range(len(blocked))] == [
        tuple(h for h, _ in holders) for _v, holders in blocked
    ]


def test_held_back_lists_older_versions_some_hosts_of_the_pool_cannot_run(q10: Catalog) -> None:
    fleet = Fleet(q10)
    fleet.set_host("a", capable_of(q10, "Haswell-v4"))
    fleet.set_host("b", capable_of(q10, "Haswell-v3"))
    assert fleet.best("Haswell").best == "Haswell-v4"
    assert fleet.held_back("Haswell") == (
        ("Haswell-v3", (("a", ("hle", "rtm")),)),
        ("Haswell-v1", (("a", ("hle", "rtm")),)),
    )
