"""Pools of hosts: which versions every host of a pool can run, and who holds the others back.

A :class:`Fleet` holds, for one catalog, accelerator and machine type, a bit matrix of what
every versioned name of every model requires (one row per version, 64 features per uint64 word)
and one bit row per host of what it offers. A host can run a version when
``required & ~offered == 0`` in every word: QEMU's rule, as :class:`cpuver.resolve.Resolver`
applies it to one host (design.md §2), so a pool of one host gets the resolver's
``version=best`` answer. The usable bits of every host are kept (hosts x versions), and for the
whole fleet a count of hosts that cannot run each version, so changing one host costs
O(versions) and the whole fleet's answers stay current.

``best`` is the highest version usable on *every* host of a pool; runnability is not monotone
(Haswell-v2 and v4 run without TSX, v1 and v3 do not), so every version is tested. An empty pool
can run everything (its best is the latest version).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from cpuver.catalog import Catalog, NameKind
from cpuver.errors import HostError, InvalidSpec
from cpuver.features import FeatureSet, FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.spec import parse

Words = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]
Holders = tuple[tuple[str, tuple[str, ...]], ...]
"""Hosts that cannot run one version, each with the features it lacks (sorted)."""

_MIN_CAPACITY = 64


class Blockers(Sequence[tuple[str, Holders]]):
    """Versions some hosts cannot run, each with those hosts and what they lack, kept as arrays.

    A pool of 10,000 mixed hosts has tens of thousands of (host, version) pairs; they are found
    and grouped by what they lack with numpy, and only become Python tuples when read, one
    version at a time (``blockers[i]``, iteration). Compares equal to the same tuple of
    ``(version, ((host, missing), ...))`` pairs.
    """

    __slots__ = (
        "_bounds", "_cache", "_hosts", "_patterns", "_spell", "_spelled", "_which", "versions"
    )  # fmt: skip

    def __init__(
        self,
        versions: tuple[str, ...],
        bounds: Sequence[int],
        hosts: npt.NDArray[np.object_],
        which: npt.NDArray[np.intp],
        patterns: Words,
        spell: Callable[[Words], list[tuple[str, ...]]],
    ) -> None:
        self.versions = versions
        """The versions, in the answer's order (newest first)."""
        self._bounds = bounds
        self._hosts, self._which, self._patterns = hosts, which, patterns
        self._spell = spell
        self._spelled: list[tuple[str, ...]] | None = None
        self._cache: dict[int, tuple[str, Holders]] = {}

    @classmethod
    def empty(cls) -> Blockers:
        none = np.zeros(0, dtype=np.intp)
        return cls((), [0], np.zeros(0, dtype=object), none, np.zeros((0, 1), np.uint64), list)

    @property
    def pairs(self) -> int:
        """How many (host, version) pairs are blocked in all."""
        return int(self._bounds[-1])

    def hosts(self, index: int) -> tuple[str, ...]:
        """The hosts that cannot run the ``index``-th version (without spelling features)."""
        a, b = self._bounds[index], self._bounds[index + 1]
        return tuple(self._hosts[a:b].tolist())

    def __len__(self) -> int:
        return len(self.versions)

    @overload
    def __getitem__(self, index: int) -> tuple[str, Holders]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, Holders]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        position = range(len(self.versions))[index]
        found = self._cache.get(position)
        if found is None:
            if self._spelled is None:
                self._spelled = self._spell(self._patterns)
            spelled = self._spelled
            a, b = self._bounds[position], self._bounds[position + 1]
            holders = tuple(
                zip(
                    self._hosts[a:b].tolist(),
                    [spelled[w] for w in self._which[a:b].tolist()],
                    strict=True,
                )
            )
            found = self._cache[position] = (self.versions[position], holders)
        return found

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Blockers | tuple):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Blockers({len(self)} versions, {self.pairs} (host, version) pairs)"


@dataclass(frozen=True, slots=True)
class PoolAnswer:
    """The newest version of ``model`` every host of a pool can run, and what blocks newer ones."""

    model: str
    best: str | None
    """Versioned name (``Cascadelake-Server-v4``); None when some host can run no version."""
    hosts: tuple[str, ...]
    """The pool the answer is for."""
    blocked: Sequence[tuple[str, Holders]] = ()
    """Every version newer than ``best``, highest first, with each host that cannot run it and
    the features that host lacks (sorted): a :class:`Blockers` from :meth:`Fleet.best`."""


@dataclass(frozen=True, slots=True)
class WhatIfChange:
    """A model whose pool answer changes when features are dropped from or added to hosts."""

    model: str
    before: str | None
    after: str | None
    hosts: tuple[str, ...]
    """Hosts of the pool for which the usability of some version of ``model`` changes."""


def offers_of(
    host: HostCapabilities, accel: str, release: str, catalog: Catalog | None = None
) -> FeatureSet | None:
    """What ``host`` offers under ``accel`` for a catalog of ``release`` ("X.Y" or "X.Y.Z").

    None when the host was not probed for ``accel``; under TCG, given a ``catalog``, its
    ``tcg_offers`` instead (TCG offers the same everywhere), as the resolver does.
    """
    major_minor = ".".join(release.split(".")[:2])
    found = host.offered(accel, major_minor)
    if found is None and accel == "tcg" and catalog is not None:
        return catalog.tcg_offers
    return found


class Fleet:
    """Usability of every versioned name of one catalog on many hosts (see module doc)."""

    def __init__(self, catalog: Catalog, accel: str = "kvm", machine: str | None = None) -> None:
        self.catalog = catalog
        self.accel = catalog.accelerator(accel).name
        self.machine = catalog.machine(machine).name
        machine_type = catalog.machine(machine)
        refs = [ref for ref in catalog.names() if ref.kind is NameKind.VERSIONED]
        self.versions: tuple[str, ...] = tuple(ref.name for ref in refs)
        self._required: list[FeatureSet] = [
            catalog.effective(ref, machine_type, self.accel).features for ref in refs
        ]
        # Columns of each model, oldest version first (catalog order).
        self._models: dict[str, tuple[int, int]] = {}
        for column, ref in enumerate(refs):
            start, _ = self._models.get(ref.model.name, (column, column))
            self._models[ref.model.name] = (start, column + 1)
        # Features some version requires come first: only their words decide usability.
        needed = sorted(set().union(*self._required))
        extra = sorted((catalog.known_features | catalog.tcg_offers) - set(needed))
        self._features: list[str] = needed + extra
        self._needed = len(needed)
        """Features ``0 .. _needed - 1`` are what versions need, in name order."""
        self._feature_names = np.array(self._features, dtype=object)
        self._bit: dict[str, int] = {name: i for i, name in enumerate(self._features)}
        self._words = _word_count(len(self._features))
        self._used_words = _word_count(len(needed))
        self._need: Words = self._encode_many(self._required)[:, : self._used_words]
        self._table: FeatureTable | None = None
        # Hosts: dense slots 0..n-1 (removal moves the last host into the hole).
        self._slot: dict[str, int] = {}
        self._names: list[str] = []
        self._offers: list[FeatureSet] = []
        self._host_bits: Words = np.zeros((_MIN_CAPACITY, self._words), dtype=np.uint64)
        self._usable: Bools = np.zeros((_MIN_CAPACITY, len(self.versions)), dtype=np.bool_)
        self._blocking: npt.NDArray[np.int64] = np.zeros(len(self.versions), dtype=np.int64)
        """Per version: how many hosts of the fleet cannot run it."""
        self._order: npt.NDArray[np.intp] | None = None
        self._name_array: npt.NDArray[np.object_] | None = None

    # -- hosts -----------------------------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names in the order they were first added."""
        return tuple(self._slot)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._slot

    def offers(self, name: str) -> FeatureSet:
        """What host ``name`` offers, as it was given."""
        return self._offers[self._slot_of(name)]

    def set_host(self, name: str, offers: FeatureSet) -> None:
        """Add host ``name`` or replace what it offers: O(versions)."""
        row = self._encode(offers)
        usable = _usable(self._need, row[None, : self._used_words])[0]
        slot = self._slot.get(name)
        if slot is None:
            slot = len(self._names)
            self._grow(slot + 1)
            self._slot[name] = slot
            self._names.append(name)
            self._offers.append(offers)
            self._order = self._name_array = None
        else:
            self._blocking -= ~self._usable[slot]
            self._offers[slot] = offers
        self._host_bits[slot] = row
        self._usable[slot] = usable
        self._blocking += ~usable

    def set_hosts(self, hosts: Mapping[str, FeatureSet] | Iterable[tuple[str, FeatureSet]]) -> None:
        """Add or replace many hosts at once (vectorised: for loading a large fleet)."""
        items = list(hosts.items() if isinstance(hosts, Mapping) else hosts)
        latest: dict[str, FeatureSet] = dict(items)
        for name in latest:
            if name in self._slot:
                self._blocking -= ~self._usable[self._slot[name]]
        new = [name for name in latest if name not in self._slot]
        self._grow(len(self._names) + len(new))
        for name in new:
            self._slot[name] = len(self._names)
            self._names.append(name)
            self._offers.append(frozenset())
        if new:
            self._order = self._name_array = None
        slots = np.fromiter((self._slot[name] for name in latest), dtype=np.intp, count=len(latest))
        for name, offers in latest.items():
            self._offers[self._slot[name]] = offers
        rows = self._encode_many(list(latest.values()))
        usable = self.usability(rows)
        self._host_bits[slots] = rows
        self._usable[slots] = usable
        self._blocking += (~usable).sum(axis=0)

    def remove_host(self, name: str) -> None:
        slot = self._slot_of(name)
        self._blocking -= ~self._usable[slot]
        last = len(self._names) - 1
        if slot != last:
            moved = self._names[last]
            self._names[slot] = moved
            self._offers[slot] = self._offers[last]
            self._host_bits[slot] = self._host_bits[last]
            self._usable[slot] = self._usable[last]
            self._slot[moved] = slot
        self._names.pop()
        self._offers.pop()
        self._host_bits[last] = 0
        self._usable[last] = False
        del self._slot[name]
        self._order = self._name_array = None

    # -- answers ---------------------------------------------------------------------------

    def usability(self, host_bits: Words) -> Bools:
        """hosts x versions: can each host (encoded offers, one row each) run each version."""
        return _usable(self._need, host_bits[:, : self._used_words])

    def bits(self, hosts: Sequence[str] | None = None) -> Words:
        """hosts x words: each host's offers as bits (a copy; input for :meth:`usability`)."""
        return self._host_bits[self._slots(hosts)]

    def matrix(self, hosts: Sequence[str] | None = None) -> Bools:
        """hosts x versions (rows in the order of ``hosts``, default :attr:`hosts`)."""
        return self._usable[self._slots(hosts)]

    def models(self) -> tuple[str, ...]:
        return tuple(self._models)

    def model_versions(self, model: str) -> tuple[str, ...]:
        """The versioned names of ``model``, oldest first (its columns in :meth:`matrix`)."""
        start, stop = self._models[self.catalog.lookup(model).model.name]
        return self.versions[start:stop]

    def missing(self, host: str, version: str) -> tuple[str, ...]:
        """The features version ``version`` needs that host ``host`` lacks (sorted; empty when
        it runs there)."""
        try:
            column = self.versions.index(version)
        except ValueError:
            raise InvalidSpec(f"{version!r} is not a versioned model name", version, 0) from None
        return tuple(sorted(self._required[column] - self.offers(host)))

    def best(
        self, model_or_spec: str, hosts: Sequence[str] | None = None, explain: bool = True
    ) -> PoolAnswer:
        """The highest version of a model every host of the pool (default: all) can run.

        Takes a model, alias or versioned name (its model is meant), or a spec
        ``Model,version=best`` whose feature changes (``-hle``) apply to every version.
        ``blocked`` is found with numpy and spelled lazily (:class:`Blockers`); ``explain=False``
        leaves it empty.
        """
        model, changes = self._model_of(model_or_spec)
        start, stop = self._models[model]
        slots = self._slots(hosts)
        pool = tuple(hosts) if hosts is not None else self.hosts
        if changes is None:
            usable = self._usable[slots, start:stop]
            need = self._need[start:stop]
            if hosts is None:
                runs_everywhere = self._blocking[start:stop] == 0
            else:
                runs_everywhere = usable.all(axis=0)
        else:
            # Added features may lie beyond the words versions need: compare every word.
            need = self._encode_many(
                [(f - changes[1]) | changes[0] for f in self._required[start:stop]]
            )
            usable = _usable(need, self._host_bits[slots])
            runs_everywhere = usable.all(axis=0)
        found = np.flatnonzero(runs_everywhere)
        best = int(found[-1]) if found.size else -1
        newer = np.arange(stop - start - 1, best, -1)
        return PoolAnswer(
            model,
            self.versions[start + best] if best >= 0 else None,
            pool,
            self._blockers(start, newer, need, usable, slots) if explain else (),
        )

    def held_back(self, model: str, hosts: Sequence[str] | None = None) -> Blockers:
        """Versions of ``model`` older than the pool's best that some hosts of the pool
        (default: all) cannot run, newest first, with those hosts and what they lack: the
        hosts that keep an older guest from migrating everywhere."""
        answer = self.best(model, hosts, explain=False)
        if answer.best is None:
            return Blockers.empty()
        start, _stop = self._models[answer.model]
        best = self.versions.index(answer.best) - start
        slots = self._slots(hosts)
        usable = self._usable[slots, start : start + best]
        older = np.flatnonzero(~usable.all(axis=0))[::-1]
        return self._blockers(start, older, self._need[start : start + best], usable, slots)

    def baseline(self, hosts: Sequence[str] | None = None) -> dict[str, str | None]:
        """Every model's best version for the pool (default: all hosts); None: none runs."""
        if hosts is None:
            return self._best_of(self._blocking == 0)
        return self._best_of(self._usable[self._slots(hosts)].all(axis=0))

    def what_if(
        self,
        drop: FeatureSet = frozenset(),
        add: FeatureSet = frozenset(),
        hosts: Sequence[str] | None = None,
    ) -> list[WhatIfChange]:
        """Models whose pool answer changes when ``drop`` is taken from and ``add`` given to
        ``hosts`` of the pool (default: all), e.g. dropping hle,rtm (a TSX microcode update).
        The answer stays the whole pool's: the other hosts are counted as they are."""
        slots = self._slots(hosts)
        every = self._usable[: len(self._names)]
        drop_bits, add_bits = self._encode(drop), self._encode(add)
        changed_bits = (self._host_bits[slots] & ~drop_bits) | add_bits
        changed_usable = self.usability(changed_bits)
        after_every = every.copy()
        after_every[slots] = changed_usable
        before = self._best_of(every.all(axis=0))
        after = self._best_of(after_every.all(axis=0))
        differs = every[slots] != changed_usable
        changes = []
        for model, (start, stop) in self._models.items():
            if before[model] == after[model]:
                continue
            touched = np.flatnonzero(differs[:, start:stop].any(axis=1))
            names = tuple(self._names[s] for s in slots[touched])
            changes.append(WhatIfChange(model, before[model], after[model], names))
        return changes

    def targets(self, required: FeatureSet) -> tuple[str, ...]:
        """Hosts (in :attr:`hosts` order) offering every feature of ``required``: where a guest
        pinned to those features can run or migrate to."""
        order = self._slots(None)
        known = frozenset(f for f in required if f in self._bit)
        want = self._encode(known)
        found = np.flatnonzero(~((want & ~self._host_bits[order]) != 0).any(axis=1))
        unknown = required - known
        names = [self._names[s] for s in order[found]]
        if unknown:
            names = [n for n in names if unknown <= self._offers[self._slot[n]]]
        return tuple(names)

    # -- internals -------------------------------------------------------------------------

    def _slot_of(self, name: str) -> int:
        try:
            return self._slot[name]
        except KeyError:
            raise HostError(f"unknown host {name!r}: not in this pool") from None

    def _slots(self, hosts: Sequence[str] | None) -> npt.NDArray[np.intp]:
        if hosts is None:
            if self._order is None:
                self._order = np.fromiter(self._slot.values(), dtype=np.intp, count=len(self._slot))
            return self._order
        slot = self._slot
        try:
            return np.fromiter((slot[h] for h in hosts), dtype=np.intp, count=len(hosts))
        except KeyError as err:
            raise HostError(f"unknown host {err.args[0]!r}: not in this pool") from None

    def _grow(self, needed: int) -> None:
        capacity = self._host_bits.shape[0]
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        bits = np.zeros((capacity, self._words), dtype=np.uint64)
        bits[: len(self._names)] = self._host_bits[: len(self._names)]
        usable = np.zeros((capacity, len(self.versions)), dtype=np.bool_)
        usable[: len(self._names)] = self._usable[: len(self._names)]
        self._host_bits, self._usable = bits, usable

    def _encode(self, features: Iterable[str]) -> Words:
        """One feature set as a row of words (features unknown to the fleet are left out)."""
        flags = np.zeros(self._words * 64, dtype=np.bool_)
        bit = self._bit
        flags[[bit[f] for f in features if f in bit]] = True
        return np.packbits(flags, bitorder="little").view(np.uint64)

    def _encode_many(self, sets: Sequence[Iterable[str]]) -> Words:
        bit = self._bit
        rows: list[int] = []
        columns: list[int] = []
        for row, features in enumerate(sets):
            found = [bit[f] for f in features if f in bit]
            columns.extend(found)
            rows.extend([row] * len(found))
        flags = np.zeros((len(sets), self._words * 64), dtype=np.bool_)
        flags[rows, columns] = True
        packed = np.packbits(flags, axis=1, bitorder="little")
        return np.ascontiguousarray(packed).view(np.uint64)

    def _blockers(
        self,
        start: int,
        columns: npt.NDArray[np.intp],
        need: Words,
        usable: Bools,
        slots: npt.NDArray[np.intp],
    ) -> Blockers:
        """For each of a model's ``columns`` (offsets from ``start`` into ``need`` and the
        pool's ``usable`` rows), the hosts of ``slots`` that cannot run it and what they lack;
        the lacking rows are grouped into distinct patterns, spelled only when read."""
        per_version, host_index = np.nonzero(~usable[:, columns].T)
        bounds = np.searchsorted(per_version, np.arange(columns.size + 1)).tolist()
        held = slots[host_index]
        lacking = need[columns[per_version]] & ~self._host_bits[held, : need.shape[1]]
        patterns, which = _distinct_rows(lacking)
        return Blockers(
            tuple(self.versions[start + int(c)] for c in columns),
            bounds,
            self._host_names()[held],
            which,
            patterns,
            self._spell,
        )

    def _host_names(self) -> npt.NDArray[np.object_]:
        """Host names by slot, as an array (rebuilt after hosts come or go)."""
        if self._name_array is None:
            self._name_array = np.array(self._names, dtype=object)
        return self._name_array

    def _spell(self, patterns: Words) -> list[tuple[str, ...]]:
        """Each row of words as its feature names, sorted."""
        flags = np.unpackbits(patterns.view(np.uint8), axis=1, bitorder="little")
        rows, columns = np.nonzero(flags)
        spelled = self._feature_names[columns].tolist()
        bounds = np.searchsorted(rows, np.arange(patterns.shape[0] + 1)).tolist()
        out = [tuple(spelled[a:b]) for a, b in itertools.pairwise(bounds)]
        if columns.size and int(columns.max()) >= self._needed:
            # Features beyond those versions need (from +feature changes) are not in order.
            out = [tuple(sorted(names)) for names in out]
        return out

    def _best_of(self, everywhere: Bools | np.bool_) -> dict[str, str | None]:
        runs_everywhere = np.asarray(everywhere, dtype=np.bool_)
        out: dict[str, str | None] = {}
        for model, (start, stop) in self._models.items():
            found = np.flatnonzero(runs_everywhere[start:stop])
            out[model] = self.versions[start + int(found[-1])] if found.size else None
        return out

    def _model_of(self, text: str) -> tuple[str, tuple[FeatureSet, FeatureSet] | None]:
        """The model a name or ``version=best`` spec means, and its feature changes (on, off)."""
        spec = parse(text)
        if spec.version is not None and spec.version.kind != "best":
            raise InvalidSpec(
                f"{text!r}: a pool answer is always the best version; give the model name "
                "or Model,version=best",
                text,
                0,
            )
        model = self.catalog.lookup(spec.name).model.name
        if not spec.changes:
            return model, None
        table = self._table = self._table or FeatureTable.bundled()
        on = frozenset(table.canonical(c.name) for c in spec.changes if c.enabled)
        off = frozenset(table.canonical(c.name) for c in spec.changes if not c.enabled)
        return model, (on, off)


def _word_count(features: int) -> int:
    return max(1, (features + 63) // 64)


def _usable(need: Words, offered: Words) -> Bools:
    """hosts x versions: ``need & ~offered == 0`` in every word (chunked to bound memory)."""
    hosts, versions = offered.shape[0], need.shape[0]
    out = np.empty((hosts, versions), dtype=np.bool_)
    chunk = max(1, (1 << 22) // max(1, versions))
    for first in range(0, hosts, chunk):
        lacking = ~offered[first : first + chunk]
        blocked = np.zeros((lacking.shape[0], versions), dtype=np.bool_)
        for word in range(need.shape[1]):
            blocked |= (lacking[:, word, None] & need[None, :, word]) != 0
        np.logical_not(blocked, out=out[first : first + chunk])
    return out


def _mix(words: Words) -> Words:
    """splitmix64's finaliser: a well-spread 64-bit hash of each word."""
    z = words ^ (words >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    mixed: Words = z ^ (z >> np.uint64(31))
    return mixed


def _distinct_rows(rows: Words) -> tuple[Words, npt.NDArray[np.intp]]:
    """The distinct rows of ``rows`` and, for each row, the index of its distinct row.

    Rows are hashed into one uint64 each (much faster to sort than whole rows); a collision is
    detected and then the exact (slower) row-wise ``np.unique`` is used.
    """
    with np.errstate(over="ignore"):
        key = _mix(rows[:, 0] + np.uint64(1))
        for word in range(1, rows.shape[1]):
            key = _mix(key ^ _mix(rows[:, word] + np.uint64(word + 1)))
    _keys, first, which = np.unique(key, return_index=True, return_inverse=True)
    distinct = rows[first]
    if not np.array_equal(distinct[which.reshape(-1)], rows):
        distinct, which = np.unique(rows, axis=0, return_inverse=True)
    return distinct, which.reshape(-1)
