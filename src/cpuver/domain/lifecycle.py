"""The guest lifecycle: a pure state machine on an immutable :class:`Guest`.

States: ``shutoff``, ``running``, ``paused``, ``saved``. Every transition returns a new guest with
``generation + 1`` (for optimistic concurrency: see :func:`expect_generation`) and keeps the pin.
The pin moves only through :func:`update_cpu`: at once for a shut-off guest, otherwise as
``pending``, applied at the guest's next cold boot (:func:`start`). Whenever a guest is about to
run on a host (start, migrate, restore) the host is checked against the pinned CPU and refused
with :class:`~cpuver.domain.HostLacksFeatures` naming the blockers. Illegal transitions raise
:class:`~cpuver.domain.IllegalTransition`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from cpuver.catalog import Catalog
from cpuver.domain import (
    DomainError,
    HostLacksFeatures,
    IdentityChangeRefused,
    IllegalTransition,
    UpdateConflict,
    UpdateNotRunnable,
)
from cpuver.domain.pinning import Pin, missing_on
from cpuver.errors import InvalidSpec
from cpuver.host.capabilities import HostCapabilities
from cpuver.models import IDENTITY_FIELDS, SIGNATURE_FIELDS, SignatureValue
from cpuver.names import check_name
from cpuver.spec import parse

State = Literal["shutoff", "running", "paused", "saved"]
STATES: tuple[State, ...] = get_args(State)
GUEST_SCHEMA = "cpuver-guest/1"


@dataclass(frozen=True, slots=True)
class Guest:
    name: str
    pin: Pin
    state: State = "shutoff"
    host: str | None = None
    """The host the guest runs (or is paused) on; None when shut off or saved."""
    pending: Pin | None = None
    """A CPU update waiting for the next cold boot."""
    snapshots: tuple[str, ...] = ()
    generation: int = 1

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise DomainError(f"guest {self.name!r}: unknown state {self.state!r}")
        if (self.host is not None) != (self.state in ("running", "paused")):
            raise DomainError(
                f"guest {self.name!r}: a {self.state} guest "
                + ("has no host" if self.host is None else f"cannot be on host {self.host!r}")
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": GUEST_SCHEMA,
            "name": self.name,
            "state": self.state,
            "host": self.host,
            "pin": self.pin.to_json(),
            "pending": self.pending.to_json() if self.pending else None,
            "snapshots": list(self.snapshots),
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "guest") -> Guest:
        if not isinstance(data, dict):
            raise DomainError(f"{source}: expected a JSON object")
        if data.get("schema") != GUEST_SCHEMA:
            raise DomainError(f"{source}: schema: expected {GUEST_SCHEMA!r}")
        state, host = data.get("state"), data.get("host")
        name = check_name("guest", data.get("name"), f"{source}: name")
        if state not in STATES:
            raise DomainError(f"{source}: state: expected one of {', '.join(STATES)}")
        if host is not None:
            check_name("host", host, f"{source}: host")
        snapshots = data.get("snapshots", [])
        if not isinstance(snapshots, list) or not all(isinstance(s, str) for s in snapshots):
            raise DomainError(f"{source}: snapshots: expected a list of names")
        generation = data.get("generation")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise DomainError(f"{source}: generation: expected a non-negative integer")
        pending = data.get("pending")
        return cls(
            name=name,
            pin=Pin.from_json(data.get("pin"), f"{source}: pin"),
            state=state,
            host=host,
            pending=Pin.from_json(pending, f"{source}: pending") if pending is not None else None,
            snapshots=tuple(snapshots),
            generation=generation,
        )


def define(name: str, pin: Pin) -> Guest:
    """A new, shut-off guest with its CPU pinned (generation 1)."""
    return Guest(check_name("guest", name), pin)


def expect_generation(guest: Guest, generation: int) -> None:
    """Refuse to act on a guest read at another generation (:class:`UpdateConflict`)."""
    if guest.generation != generation:
        raise UpdateConflict(guest.name, generation, guest.generation)


def _next(guest: Guest, **changes: Any) -> Guest:
    return replace(guest, generation=guest.generation + 1, **changes)


def _require(guest: Guest, action: str, *states: State) -> None:
    if guest.state not in states:
        allowed = " or ".join(states)
        raise IllegalTransition(
            f"cannot {action} guest {guest.name!r}: it is {guest.state}"
            + (f" on {guest.host!r}" if guest.host else "")
            + f" (only a {allowed} guest can be {_past(action)})"
        )


def _past(action: str) -> str:
    return {
        "start": "started",
        "shut down": "shut down",
        "migrate": "migrated",
        "save": "saved",
        "restore": "restored",
        "pause": "paused",
        "resume": "resumed",
        "snapshot": "snapshotted",
        "revert": "reverted",
        "undefine": "undefined",
    }.get(action, action)


def _check_host(
    guest: Guest, cpu: Pin, host_name: str, caps: HostCapabilities, action: str
) -> None:
    if not host_name:
        raise DomainError(f"cannot {action} guest {guest.name!r}: no host name given")
    missing = missing_on(cpu, caps)
    if missing:
        raise HostLacksFeatures(guest.name, host_name, action, missing)


def start(guest: Guest, host_name: str, caps: HostCapabilities) -> Guest:
    """Cold boot a shut-off guest on a host: applies a pending CPU update first."""
    _require(guest, "start", "shutoff")
    cpu = guest.pending or guest.pin
    _check_host(guest, cpu, host_name, caps, "start")
    return _next(guest, state="running", host=host_name, pin=cpu, pending=None)


def shutdown(guest: Guest) -> Guest:
    _require(guest, "shut down", "running", "paused")
    return _next(guest, state="shutoff", host=None)


def pause(guest: Guest) -> Guest:
    _require(guest, "pause", "running")
    return _next(guest, state="paused")


def resume(guest: Guest) -> Guest:
    _require(guest, "resume", "paused")
    return _next(guest, state="running")


def migrate(guest: Guest, to_name: str, to_caps: HostCapabilities) -> Guest:
    """Live-migrate a running guest; refused when the target lacks a pinned feature."""
    _require(guest, "migrate", "running")
    if to_name == guest.host:
        raise IllegalTransition(
            f"cannot migrate guest {guest.name!r}: it already runs on {to_name!r}"
        )
    _check_host(guest, guest.pin, to_name, to_caps, "migrate")
    return _next(guest, host=to_name)


def save(guest: Guest) -> Guest:
    """Save a running guest's state and stop it."""
    _require(guest, "save", "running")
    return _next(guest, state="saved", host=None)


def restore(guest: Guest, host_name: str, caps: HostCapabilities) -> Guest:
    """Resume a saved guest on a host (not a cold boot: a pending update stays pending)."""
    _require(guest, "restore", "saved")
    _check_host(guest, guest.pin, host_name, caps, "restore")
    return _next(guest, state="running", host=host_name)


def snapshot_create(guest: Guest, name: str) -> Guest:
    _require(guest, "snapshot", "shutoff", "running", "paused")
    if not name:
        raise DomainError(f"guest {guest.name!r}: a snapshot needs a name")
    if name in guest.snapshots:
        raise IllegalTransition(f"guest {guest.name!r} already has a snapshot {name!r}")
    return _next(guest, snapshots=(*guest.snapshots, name))


def snapshot_revert(guest: Guest, name: str) -> Guest:
    """Revert to a snapshot. The CPU is the guest's, not the snapshot's: the pin is kept."""
    _require(guest, "revert", "shutoff", "running", "paused")
    if name not in guest.snapshots:
        known = ", ".join(guest.snapshots) or "none"
        raise IllegalTransition(
            f"guest {guest.name!r} has no snapshot {name!r} (snapshots: {known})"
        )
    return _next(guest)


def undefine(guest: Guest) -> None:
    """Check that the guest may be undefined: not while it runs or is paused on a host."""
    _require(guest, "undefine", "shutoff", "saved")


# ------------------------------------------------------------------------------ CPU updates


@dataclass(frozen=True, slots=True)
class CpuDiff:
    """What an update would change about a guest's CPU."""

    old: str
    """Name of the current pin (``Haswell-v1``)."""
    new: str
    gained: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    signature: tuple[tuple[str, SignatureValue, SignatureValue], ...] = ()
    """Changed signature fields: (QEMU name, old value, new value), in QEMU's order."""
    machine: tuple[str, str] | None = None
    """(old, new) machine type when it changes."""
    applied: bool = False
    """True when the pin changed now; False for a dry run, a no-op or a pending update."""
    pending: bool = False
    """True when the update waits for the guest's next cold boot."""
    kept: tuple[str, ...] = ()
    """The guest's own feature changes (``-avx2``, ``+vmx``) the new version keeps."""

    @property
    def identity(self) -> tuple[str, ...]:
        """Identity fields (vendor, family, model, stepping, model-id) that change."""
        return tuple(name for name, _old, _new in self.signature if name in IDENTITY_FIELDS)

    @property
    def identity_changed(self) -> bool:
        return bool(self.identity)

    @property
    def empty(self) -> bool:
        return not (self.gained or self.lost or self.signature or self.machine) and (
            self.old == self.new
        )

    def lines(self) -> list[str]:
        """The diff in words, one change per line."""
        out = [f"{self.old} -> {self.new}"] if self.old != self.new else []
        if self.machine:
            out.append(f"machine type {self.machine[0]} -> {self.machine[1]}")
        out += [f"+{name}" for name in self.gained]
        out += [f"-{name}" for name in self.lost]
        out += [f"{name}: {old!r} -> {new!r}" for name, old, new in self.signature]
        if self.kept:
            out.append(f"kept the guest's own changes: {', '.join(self.kept)}")
        if self.identity_changed:
            out.append(
                "the CPU identity changes (" + ", ".join(self.identity) + "): guests like "
                "Windows may re-activate"
            )
        return out


def diff(old: Pin, new: Pin) -> CpuDiff:
    before, after = old.signature.as_dict(), new.signature.as_dict()
    return CpuDiff(
        old=old.name,
        new=new.name,
        gained=tuple(sorted(new.on - old.on)),
        lost=tuple(sorted(old.on - new.on)),
        signature=tuple(
            (name, before[name], after[name])
            for name in SIGNATURE_FIELDS
            if before[name] != after[name]
        ),
        machine=(old.machine, new.machine) if old.machine != new.machine else None,
    )


def update_cpu(
    guest: Guest,
    new_pin: Pin,
    accept_signature_change: bool = False,
    dry_run: bool = False,
) -> tuple[Guest, CpuDiff]:
    """The only way a guest's pin moves.

    A shut-off guest gets ``new_pin`` at once; any other guest gets it as ``pending``, applied at
    its next cold boot. An identity change (vendor, family, model, stepping, model-id) is refused
    unless ``accept_signature_change``. A dry run returns the guest unchanged with the diff; so
    does an update to the CPU the guest already has.
    """
    if guest.pending is not None:
        raise IllegalTransition(
            f"guest {guest.name!r} already has a pending CPU update to {guest.pending.name}: "
            "cold boot it (shut down, start) or cancel it before updating again"
        )
    changes = diff(guest.pin, new_pin)
    if new_pin.fingerprint == guest.pin.fingerprint:
        return guest, changes
    if changes.identity_changed and not accept_signature_change:
        described = [
            f"{name} {old!r} -> {new!r}"
            for name, old, new in changes.signature
            if name in IDENTITY_FIELDS
        ]
        raise IdentityChangeRefused(guest.name, described)
    if dry_run:
        return guest, changes
    if guest.state == "shutoff":
        return _next(guest, pin=new_pin), replace(changes, applied=True)
    return _next(guest, pending=new_pin), replace(changes, pending=True)


def cancel_update(guest: Guest) -> Guest:
    """Drop the guest's pending CPU update: its next cold boot keeps the CPU it has."""
    if guest.pending is None:
        raise IllegalTransition(f"guest {guest.name!r} has no pending CPU update to cancel")
    return _next(guest, pending=None)


_TO = re.compile(r"best|latest|v?[1-9][0-9]*|[0-9]+\.[0-9]+\.[0-9]+")


def updated_spec(old: Pin, to: str, catalog: Catalog) -> tuple[str, tuple[str, ...]]:
    """The spec an update to version ``to`` resolves, and the user's own feature changes of
    the guest's spec it keeps: ``Haswell-v2,-avx2,+vmx`` to v4 is ``Haswell,version=v4,-avx2,
    +vmx``. ``to`` is a version (best, latest, vN, N, X.Y.Z), never a spec."""
    if not _TO.fullmatch(to):
        raise DomainError(
            f"--to: {to!r} is not a version (best, latest, vN or X.Y.Z); the guest's own "
            "feature changes are kept as its spec has them"
        )
    try:
        asked = parse(old.spec)
    except InvalidSpec:
        asked = None
    changes = asked.changes if asked is not None else ()
    kept = tuple(f"{'+' if change.enabled else '-'}{change.name}" for change in changes)
    model = catalog.lookup(old.version).model.name
    return ",".join([model, f"version={to}", *kept]), kept


def check_update(
    guest: str, new: Pin, hosts: Sequence[HostCapabilities], force: bool = False
) -> None:
    """Refuse an update to a pin some of ``hosts`` cannot run (unless ``force``)."""
    blocked = {}
    for host in hosts:
        try:
            missing = missing_on(new, host)
        except DomainError:
            missing = (f"(no {new.accel} capabilities)",)
        if missing:
            blocked[host.name] = missing
    if blocked and not force:
        raise UpdateNotRunnable(guest, new.name, dict(sorted(blocked.items())))


def hosts_blocking(
    guest: Guest, hosts: Mapping[str, HostCapabilities]
) -> dict[str, tuple[str, ...]]:
    """For each host that cannot run the guest's pinned CPU: the features it lacks."""
    found = {name: missing_on(guest.pin, caps) for name, caps in hosts.items()}
    return {name: missing for name, missing in found.items() if missing}
