"""Fleet use cases: hosts and pools in the store, a pool's best version and its blockers, the
pool as one host (migration-safe best), what-if changes, and where a guest's pin can go.

Hosts and pools live in the guest store's database (HostStore); the fleet's matrices in
cpuver.fleet (numpy). Both are imported inside these functions, as for guests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cpuver.api.guests import get_guest, list_guests
from cpuver.api.hosts import read_host, stored_host
from cpuver.catalog import Catalog
from cpuver.errors import HostError, shown
from cpuver.features import FeatureSet
from cpuver.host.capabilities import HostCapabilities, from_json
from cpuver.names import check_name, is_name

if TYPE_CHECKING:
    from cpuver.domain.lifecycle import Guest
    from cpuver.fleet import Fleet, PoolAnswer, WhatIfChange
    from cpuver.store import GuestStore, HostRecord, HostStore


def open_host_store(url: str | None = None) -> HostStore:
    from cpuver.store import HostStore

    return HostStore(url)


def add_host_files(
    store: HostStore,
    files: Sequence[str],
    pools: Sequence[str],
    progress: Callable[[str, int, int, str], None] | None = None,
    connections: Sequence[str] = (),
) -> list[HostRecord]:
    """Read each host snapshot (as :func:`read_host` does), and the host behind each libvirt
    connection URI (its domcapabilities), and store them under their host names in ``pools``;
    a host added before is refreshed (its old snapshot stays in the history). Everything is
    read and checked before the first is stored, and all are stored in one transaction: a bad
    file, an error or a kill stores none of them. ``progress(verb, done, total, host)`` is
    called after each read ("read") and each store ("added")."""
    from cpuver.api.libvirt_domains import probe_libvirt

    for pool in pools:
        check_name("pool", pool)

    def from_file(argument: str) -> HostCapabilities:
        return read_host(argument, db=store.url)

    readers: list[Callable[[str], HostCapabilities]] = [from_file, probe_libvirt]
    sources = [(readers[0], f) for f in files] + [(readers[1], c) for c in connections]
    read = []
    for done, (reader, argument) in enumerate(sources, 1):
        read.append(_storable(reader(argument)))
        if progress is not None:
            progress("read", done, len(sources), read[-1].name)
    report = (lambda done, total, host: progress("added", done, total, host)) if progress else None
    return store.add_many([(_snapshot_json(host), host.name) for host in read], pools, report)


def _storable(host: HostCapabilities) -> HostCapabilities:
    """``host`` if its name may be stored (a QMP expansion reply is named after its file)."""
    if not is_name(host.name):
        raise HostError(
            f"{host.source}: a host needs a name to be stored ({shown(host.name)} is not one): "
            "store a snapshot written by cpuver host probe"
        )
    return host


def _snapshot_json(host: HostCapabilities) -> str:
    return json.dumps(host.to_json(), sort_keys=True)


def host_snapshots(store: HostStore, name: str) -> list[tuple[datetime, HostCapabilities]]:
    """Every snapshot host ``name`` was added with and when, oldest first (the last one is its
    current snapshot); HostNotFound when no such host is stored."""
    return [
        (entry.at, from_json(json.loads(entry.snapshot_json), f"host {name} at {entry.at:%F %T}"))
        for entry in store.history(name)
    ]


@dataclass(frozen=True, slots=True)
class FamilyRuns:
    """Which versions of one model family a host runs."""

    family: str
    versions: tuple[tuple[str, tuple[str, ...]], ...]
    """Each versioned name, oldest first, with the features the host lacks for it (none: it
    runs there)."""


def host_versions(
    host: HostCapabilities, catalog: Catalog, accel: str = "kvm", machine: str | None = None
) -> list[FamilyRuns]:
    """Every model family of the catalog with what ``host`` lacks for each of its versions under
    ``accel`` (the answer of a pool of this one host, as a pool's heatmap row shows it)."""
    from cpuver.fleet import Fleet, offers_of

    fleet = Fleet(catalog, accel, machine)
    offers = offers_of(host, fleet.accel, catalog.release, catalog)
    if offers is None:
        raise HostError(
            f"host {host.name!r} has no {fleet.accel} capabilities "
            f"(probe it under {fleet.accel}, or choose another accelerator)"
        )
    fleet.set_host(host.name, offers)
    return [
        FamilyRuns(
            family,
            tuple((v, fleet.missing(host.name, v)) for v in fleet.model_versions(family)),
        )
        for family in fleet.models()
    ]


def add_host(store: HostStore, host: HostCapabilities, pools: Sequence[str]) -> HostRecord:
    """Store a host's snapshot (normalised) in ``pools``; a known host is refreshed."""
    return store.add(_snapshot_json(_storable(host)), host.name, pools)


def update_hosts(
    store: HostStore,
    catalog: Catalog,
    accel: str,
    host: HostCapabilities | None = None,
    pool: str | None = None,
) -> list[HostCapabilities]:
    """The hosts a CPU update must run on: the given host, the pool (as one host), or with
    neither every stored host probed under ``accel``."""
    from cpuver.fleet import offers_of

    if host is not None:
        return [host]
    if pool is not None:
        return [pool_host(store, pool, catalog, accel)]
    stored = [stored_host(record) for record in store.list(None)]
    return [h for h in stored if offers_of(h, accel, catalog.release, catalog) is not None]


POOL_CACHE_BYTES = 64 << 20
"""Memory the kept pool matrices and answers may take, per process (estimated)."""
_HOST_ROW_BYTES = 4096
"""Estimated memory of one host's row in a kept fleet (its feature words and name)."""


class _PoolCache:
    """Pools' fleets and answers kept in memory, each with the pool's change counter when it
    was built (:meth:`cpuver.store.HostStore.generation`): a lookup reads the counter (one
    small query) and rebuilds when any process changed the pool since. Bounded in bytes."""

    def __init__(self, limit: int = POOL_CACHE_BYTES) -> None:
        from cachetools import LRUCache

        self._lock = threading.Lock()
        self._entries: LRUCache[tuple[object, ...], tuple[int, object, int]] = LRUCache(
            maxsize=limit, getsizeof=lambda entry: entry[2]
        )

    def get(self, key: tuple[object, ...], generation: int) -> object | None:
        with self._lock:
            found = self._entries.get(key)
        return found[1] if found is not None and found[0] == generation else None

    def put(self, key: tuple[object, ...], generation: int, value: object, size: int) -> None:
        with self._lock:
            if size <= self._entries.maxsize:
                self._entries[key] = (generation, value, size)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_pools = _PoolCache()


def kept_pool_fleet(
    store: HostStore, pool: str, catalog: Catalog, accel: str = "kvm", machine: str | None = None
) -> tuple[int, Fleet]:
    """:func:`pool_fleet` kept in memory until the pool changes (in any process sharing the
    database); with the pool's change counter, for keeping answers derived from it."""
    generation = store.generation(pool)
    key = ("fleet", store.url, pool, catalog.build, catalog.release, accel, machine)
    found = _pools.get(key, generation)
    if found is not None:
        return generation, found  # type: ignore[return-value]
    fleet = pool_fleet(store, pool, catalog, accel, machine)
    _pools.put(key, generation, fleet, 65536 + _HOST_ROW_BYTES * len(fleet.hosts))
    return generation, fleet


def kept_answer(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str,
    machine: str | None,
    question: tuple[object, ...],
    answer: Callable[[Fleet], bytes],
) -> bytes:
    """``answer(fleet)`` for the pool (ready JSON), kept until the pool changes."""
    generation, fleet = kept_pool_fleet(store, pool, catalog, accel, machine)
    key = _answer_key(store, pool, catalog, accel, machine, question)
    found = _pools.get(key, generation)
    if isinstance(found, bytes):
        return found
    made = answer(fleet)
    _pools.put(key, generation, made, len(made) + 256)
    return made


def _answer_key(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str,
    machine: str | None,
    question: tuple[object, ...],
) -> tuple[object, ...]:
    """Where :func:`kept_answer` keeps an answer and :func:`fresh_answer` looks for it."""
    return ("answer", store.url, pool, catalog.build, catalog.release, accel, machine, *question)


def fresh_answer(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str,
    machine: str | None,
    question: tuple[object, ...],
) -> bytes | None:
    """The kept answer of :func:`kept_answer` if the pool has not changed since, else None
    (one read of the pool's change counter; nothing is built)."""
    generation = store.generation(pool)
    key = _answer_key(store, pool, catalog, accel, machine, question)
    found = _pools.get(key, generation)
    return found if isinstance(found, bytes) else None


def pool_fleet(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str = "kvm",
    machine: str | None = None,
) -> Fleet:
    """A :class:`~cpuver.fleet.Fleet` of the hosts of ``pool``, each with what it offers under
    ``accel`` for the catalog's QEMU release."""
    from cpuver.fleet import Fleet

    fleet = Fleet(catalog, accel, machine)
    offers = _pool_offers(store, pool, catalog, fleet.accel)
    fleet.set_hosts((host.name, found) for host, found in offers)
    return fleet


def _pool_offers(
    store: HostStore,
    pool: str,
    catalog: Catalog,
    accel: str,
) -> list[tuple[HostCapabilities, FeatureSet]]:
    """Each stored host of ``pool`` with what it offers under ``accel`` for the catalog's QEMU
    release; a host not probed under ``accel`` is an error."""
    from cpuver.fleet import offers_of

    out = []
    for record in store.list(pool):
        host = stored_host(record)
        found = offers_of(host, accel, catalog.release, catalog)
        if found is None:
            raise HostError(
                f"host {record.name!r} of pool {pool!r} has no {accel} capabilities "
                f"(probe it under {accel}, or choose another accelerator)"
            )
        out.append((host, found))
    return out


def pool_host(
    store: HostStore, pool: str, catalog: Catalog, accel: str = "kvm"
) -> HostCapabilities:
    """The pool as one host: what *every* host of ``pool`` offers under ``accel`` (the
    intersection), so the resolver's ``version=best`` against it is the migration-safe best and
    its blockers are the features some host of the pool lacks."""
    offers = _pool_offers(store, pool, catalog, accel)
    if not offers:
        raise HostError(f"pool {pool!r} has no hosts (add some to it first)")
    common = frozenset.intersection(*(found for _host, found in offers))
    vendors = {host.facts.vendor if host.facts else host.vendor for host, _found in offers}
    if accel == "kvm" and len(vendors) > 1:
        raise HostError(
            f"pool {pool!r} mixes CPU vendors ({', '.join(sorted(str(v) for v in vendors))}): "
            "KVM gives guests the host's vendor, so no CPU migrates across the pool"
        )
    vendor = next(iter(vendors)) if len(vendors) == 1 else None
    return HostCapabilities(
        f"pool {pool}", {accel: common}, vendor, f"pool {pool} ({len(offers)} hosts)"
    )


@dataclass(frozen=True, slots=True)
class PoolBest:
    answer: PoolAnswer
    held_back: Sequence[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]]
    """Versions older than the answer that some hosts cannot run (newest first), with each such
    host and what it lacks; only for a plain model name (a spec with feature changes: empty)."""


def pool_best(fleet: Fleet, spec: str) -> PoolBest:
    """The newest version of the spec's model every host of the fleet runs, what holds newer
    versions back (which host, which features) and which older versions some hosts cannot run."""
    from cpuver.spec import parse

    answer = fleet.best(spec)
    if parse(spec).changes or answer.best is None:
        return PoolBest(answer, ())
    return PoolBest(answer, fleet.held_back(answer.model))


def feature_names(text: str | None) -> frozenset[str]:
    """``hle,rtm`` as canonical feature names (UnknownFeature with hints for a typo)."""
    return canonical_features((text or "").split(","))


def canonical_features(names: Iterable[str]) -> frozenset[str]:
    """Feature names in any accepted spelling as canonical ones (blank ones left out;
    UnknownFeature with hints for a typo)."""
    from cpuver.features import FeatureTable

    table = FeatureTable.bundled()
    return frozenset(table.canonical(name.strip()) for name in names if name.strip())


@dataclass(frozen=True, slots=True)
class GuestImpact:
    """A stored guest that runs on ``host`` now and would not after the change."""

    guest: str
    pin: str
    host: str
    missing: tuple[str, ...]
    current: bool
    """The guest is on that host now (it could not start there again, nor migrate back)."""


@dataclass(frozen=True, slots=True)
class WhatIf:
    changes: list[WhatIfChange]
    guests: list[GuestImpact]
    stranded: list[str]
    """Guests that run on some host of the pool now and on none after the change."""


def fleet_what_if(
    host_store: HostStore,
    guest_store: GuestStore,
    pool: str,
    catalog: Catalog,
    drop: frozenset[str],
    add: frozenset[str] = frozenset(),
    hosts: Sequence[str] | None = None,
    accel: str = "kvm",
    machine: str | None = None,
) -> WhatIf:
    """What changes when the pool's hosts (only ``hosts`` of it, when given: the others stay as
    they are) lose ``drop`` and gain ``add`` (a microcode update taking TSX away, a BIOS
    setting): which pool answers change, which stored guests could no longer start on or migrate
    to which host, and which are stranded (had a host of the pool before, have none after)."""
    from cpuver.fleet import offers_of

    fleet = pool_fleet(host_store, pool, catalog, accel, machine)
    unknown = [h for h in hosts or () if h not in fleet]
    if unknown:
        raise HostError(f"not in pool {pool!r}: {', '.join(unknown)}")
    changes = fleet.what_if(drop, add, hosts)
    changed = set(fleet.hosts if hosts is None else hosts)
    snapshots = {r.name: stored_host(r) for r in host_store.list(pool)}
    impacts: list[GuestImpact] = []
    stranded: list[str] = []
    for guest in list_guests(guest_store):
        pin_ = guest.pin
        ran, runs = False, False
        for name, snapshot in snapshots.items():
            offered = offers_of(snapshot, pin_.accel, pin_.release, catalog)
            if offered is None:
                continue
            before = pin_.on - offered
            after = pin_.on - ((offered - drop) | add) if name in changed else before
            ran, runs = ran or not before, runs or not after
            if not before and after:
                impacts.append(
                    GuestImpact(
                        guest.name, pin_.name, name, tuple(sorted(after)), guest.host == name
                    )
                )
        if ran and not runs:
            stranded.append(guest.name)
    return WhatIf(changes, impacts, stranded)


Targets = list[tuple[str, tuple[str, ...]]]
"""Every host with the pinned features it lacks: an empty tuple means the guest can start on it
or migrate to it. A pending CPU update counts too (it is what the next cold boot runs): a host
must run both the pin and the pending one."""


def guest_targets(
    host_store: HostStore, guest_store: GuestStore, name: str, pool: str | None = None
) -> tuple[Guest, Targets]:
    """Guest ``name`` and every host (of ``pool``, when given) with the pinned features (of the
    pin, and of a pending update) it lacks."""
    guest = get_guest(guest_store, name)
    return guest, _targets(guest, stored_hosts(host_store, pool))


def every_guest_targets(
    host_store: HostStore,
    guest_store: GuestStore,
    pool: str | None = None,
    limit: int | None = None,
    after: str | None = None,
) -> list[tuple[Guest, Targets]]:
    """:func:`guest_targets` of every stored guest (a page of them with ``limit`` and
    ``after``), reading each host snapshot once."""
    hosts = stored_hosts(host_store, pool)
    return [(guest, _targets(guest, hosts)) for guest in list_guests(guest_store, limit, after)]


def stored_hosts(host_store: HostStore, pool: str | None = None) -> list[HostCapabilities]:
    """Every stored host (of ``pool``, when given), its current snapshot read back."""
    return [stored_host(record) for record in host_store.list(pool)]


def _targets(guest: Guest, hosts: Sequence[HostCapabilities]) -> Targets:
    from cpuver.domain import DomainError
    from cpuver.domain.pinning import missing_on

    pins = [guest.pin] if guest.pending is None else [guest.pin, guest.pending]
    out: Targets = []
    for host in hosts:
        try:
            missing = tuple(sorted({f for pin in pins for f in missing_on(pin, host)}))
        except DomainError:
            missing = (f"(no {guest.pin.accel} capabilities)",)
        out.append((host.name, missing))
    return out


@dataclass(frozen=True, slots=True)
class GuestUnderUpgrade:
    """A stored guest whose pin some host ran before the upgrade and cannot run after it."""

    guest: str
    pin: str
    problems: tuple[str, ...]
    """What the newer catalog says of the pin (version gone, feature unknown to that QEMU)."""
    lost: tuple[tuple[str, tuple[str, ...]], ...]
    """Hosts that ran the pin and would not, with what they would lack."""
    stranded: bool
    """No host of the pool would run it any more."""


@dataclass(frozen=True, slots=True)
class UpgradeWhatIf:
    before: str
    after: str
    changes: list[tuple[str, str | None, str | None]]
    """Model families whose pool answer differs: (model, best before, best after)."""
    new_versions: list[tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]]
    """Versions only the newer QEMU has: (version, hosts that run it, hosts that cannot + why)."""
    guests: list[GuestUnderUpgrade]
    unknown: dict[str, dict[str, str]]
    """Per host: features blocking a new version there that its record cannot tell (they count
    as missing)."""


def fleet_upgrade_what_if(
    host_store: HostStore,
    guest_store: GuestStore,
    pool: str,
    before: Catalog,
    after: Catalog,
    accel: str = "kvm",
    machine: str | None = None,
) -> UpgradeWhatIf:
    """The pool's hosts as they are, under ``after``'s QEMU instead of ``before``'s: which pool
    answers change, which versions only the newer QEMU has become usable where, and which stored
    guests' pins would no longer run (the newer QEMU lacks the pinned version or a pinned feature,
    or hosts that ran the pin would not)."""
    from cpuver.api.hosts import offers_under
    from cpuver.domain.pinning import check
    from cpuver.fleet import Fleet

    records = host_store.list(pool)
    if not records:
        raise HostError(f"pool {pool!r} has no hosts (add some with cpuver fleet add --pool)")
    hosts = [stored_host(record) for record in records]
    fleets = []
    unknown: dict[str, dict[str, str]] = {}
    offered_after: dict[str, frozenset[str]] = {}
    for catalog in (before, after):
        fleet = Fleet(catalog, accel, machine if machine in catalog.machines else None)
        offers = []
        for host in hosts:
            found = offers_under(host, fleet.accel, catalog)
            if found is None:
                raise HostError(
                    f"host {host.name!r} of pool {pool!r} has no {accel} capabilities "
                    f"(probe it under {accel}, or choose another --accel)"
                )
            offers.append((host.name, found.features))
            if catalog is after:
                offered_after[host.name] = found.features
                unknown[host.name] = found.unknown
        fleet.set_hosts(offers)
        fleets.append(fleet)
    old, new = fleets
    was, now = old.baseline(), new.baseline()
    changes = [(m, was.get(m), now[m]) for m in now if was.get(m) != now[m]]
    known_before = set(old.versions)
    machine_type = after.machine(new.machine)
    new_versions = []
    for version in new.versions:
        if version in known_before:
            continue
        needs = after.effective(after.lookup(version), machine_type, new.accel).features
        lacking = [(h, tuple(sorted(needs - offered_after[h]))) for h in new.hosts]
        ran = tuple(h for h, missing in lacking if not missing)
        new_versions.append((version, ran, tuple((h, m) for h, m in lacking if m)))
    lacked = {
        h: {f for _v, _r, blocked in new_versions for host, m in blocked if host == h for f in m}
        for h in unknown
    }
    unknown = {
        h: {f: why for f, why in features.items() if f in lacked[h]}
        for h, features in unknown.items()
        if lacked[h] & set(features)
    }
    guests = []
    for guest in list_guests(guest_store):
        pin_ = guest.pin
        problems = tuple(check(pin_, after))
        lost = []
        hosts_before = hosts_after = 0
        for host in hosts:
            then = host.offered(pin_.accel, pin_.release)
            later = offers_under(host, pin_.accel, after)
            if then is None or later is None or pin_.on - then:
                continue
            hosts_before += 1
            missing = tuple(sorted(pin_.on - later.features))
            if missing:
                lost.append((host.name, missing))
            else:
                hosts_after += 1
        if hosts_before and (problems or lost):
            stranded = bool(problems) or not hosts_after
            guests.append(GuestUnderUpgrade(guest.name, pin_.name, problems, tuple(lost), stranded))
    return UpgradeWhatIf(before.release, after.release, changes, new_versions, guests, unknown)
