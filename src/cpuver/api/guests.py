"""Stored-guest use cases: define (resolve once and pin), read, lifecycle steps checked against
hosts, the explicit CPU update, and checks of every pin against a catalog.

The store (SQLAlchemy) is imported inside these functions: commands that never touch guests must
not pay for it at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cpuver.api.hosts import stored_host
from cpuver.catalog import Catalog
from cpuver.documents import text_of
from cpuver.errors import CpuverError, HostError, HostNeeded
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

if TYPE_CHECKING:
    from cpuver.domain.lifecycle import CpuDiff, Guest
    from cpuver.store import GuestRecord, GuestStore, HostStore


def open_store(url: str | None = None) -> GuestStore:
    from cpuver.store import GuestStore

    return GuestStore(url)


def _guest(record: GuestRecord) -> Guest:
    from cpuver.domain.lifecycle import Guest
    from cpuver.domain.pinning import Pin

    pending = record.pending_json
    return Guest(
        name=record.name,
        pin=Pin.from_json(json.loads(record.pin_json), f"guest {record.name}"),
        state=record.state,  # type: ignore[arg-type]
        host=record.host,
        pending=Pin.from_json(json.loads(pending), f"guest {record.name}") if pending else None,
        snapshots=tuple(json.loads(record.snapshots_json)),
        generation=record.generation,
    )


def get_guest(store: GuestStore, name: str) -> Guest:
    return _guest(store.get(name))


def list_guests(
    store: GuestStore, limit: int | None = None, after: str | None = None
) -> list[Guest]:
    """Every stored guest (a page of them, by name, with ``limit`` and ``after``), read in one
    query."""
    return [_guest(record) for record in store.list(limit, after)]


def guest_rows(
    store: GuestStore, limit: int | None = None, after: str | None = None
) -> list[dict[str, object]]:
    """Every stored guest (a page with ``limit`` and ``after``) in a line: name, state, host,
    pinned CPU, machine, accelerator, pending CPU, fingerprint, generation. Read from the
    stored documents without rebuilding each pin (a page of a big store stays fast); the
    store holds only pins cpuver wrote and checked."""
    import orjson

    rows: list[dict[str, object]] = []
    for record in store.list(limit, after):
        pin = orjson.loads(record.pin_json)
        pending = orjson.loads(record.pending_json) if record.pending_json else None
        rows.append(
            {
                "name": record.name,
                "state": record.state,
                "host": record.host,
                "cpu": pin["name"],
                "machine": pin["machine"],
                "accel": pin["accel"],
                "pending": pending["name"] if pending else None,
                "fingerprint": record.fingerprint,
                "generation": record.generation,
            }
        )
    return rows


def _store_change(store: GuestStore, old: Guest, new: Guest, reason: str) -> Guest:
    """Write ``new`` if nobody changed the guest since ``old`` was read (else ConcurrentUpdate)."""
    pending = json.dumps(new.pending.to_json(), sort_keys=True) if new.pending else None
    record = store.update(
        old.name,
        old.generation,
        reason=reason,
        state=new.state,
        host=new.host,
        pin_json=json.dumps(new.pin.to_json(), sort_keys=True),
        fingerprint=new.pin.fingerprint,
        pending_json=pending,
        snapshots_json=json.dumps(list(new.snapshots)),
    )
    return _guest(record)


def define_guest(
    store: GuestStore,
    path: Path,
    catalog: Catalog,
    accel: str,
    host: HostCapabilities | None = None,
    machine: str | None = None,
) -> Guest:
    """Read a domain XML or guest file, resolve its CPU fully and store the pinned guest."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HostError(f"cannot read guest definition {path}: {err.strerror}") from err
    text = text_of(raw, str(path))
    return define_guest_text(store, text, str(path), catalog, accel, host, machine)


def define_guest_text(
    store: GuestStore,
    text: str,
    source: str,
    catalog: Catalog,
    accel: str,
    host: HostCapabilities | None = None,
    machine: str | None = None,
) -> Guest:
    """Like :func:`define_guest` for a definition already read (libvirt XML, JSON or TOML, told
    apart by ``source``'s suffix or else by the text). ``host`` may be a :func:`pool_host`."""
    from cpuver.api.libvirt_domains import domain_pin, resolve_definition
    from cpuver.domain.lifecycle import define
    from cpuver.domain.pinning import pin
    from cpuver.domain.xml import parse_xml, pin_mismatch, read_domain_xml, read_guest

    suffix = source.lower().rsplit(".", 1)[-1] if "." in source else ""
    is_xml = suffix == "xml" or (suffix not in ("json", "toml") and text.lstrip().startswith("<"))
    wanted = read_domain_xml(text, source, catalog=catalog) if is_xml else read_guest(text, source)
    if wanted.spec is None and not (is_xml and wanted.cpu in ("default", "host-model")):
        raise CpuverError(
            f"{source}: no CPU model to pin ({'; '.join(wanted.notes) or 'no <cpu>'})"
        )
    meta = wanted.metadata
    if meta is not None and meta.complete and pin_mismatch(parse_xml(text, source)) is None:
        pinned, how = domain_pin(text, source), "its pin"  # pinned already: keep it exactly
    elif is_xml:
        if machine is not None:
            wanted = replace(wanted, machine=machine)
        pinned, _notes = resolve_definition(wanted, catalog, host, None, source, accel)
        how = wanted.spec or wanted.cpu
    else:
        resolution = Resolver(catalog, machine or wanted.machine, accel, host).resolve(
            wanted.spec or ""
        )
        pinned, how = pin(resolution, catalog), wanted.spec or ""
    guest = define(wanted.name, pinned)
    against = f" for {host.source}" if host is not None and host.source.startswith("pool ") else ""
    store.define(
        guest.name,
        guest.state,
        guest.pin.machine,
        json.dumps(guest.pin.to_json(), sort_keys=True),
        guest.pin.fingerprint,
        reason=f"define from {Path(source).name}: {how} -> {pinned.name}{against}",
        definition=text if is_xml else None,
    )
    return get_guest(store, guest.name)


def guest_xml(store: GuestStore, name: str, catalog: Catalog) -> str:
    """The guest's whole domain XML with its pinned CPU: the document it was defined from (every
    element of it kept), or for a guest file the smallest domain that runs it."""
    from cpuver.domain.xml import pinned_document, skeleton
    from cpuver.emit.libvirt import pinned_cpu

    record = store.get(name)
    guest = _guest(record)
    policy = _policy(guest.pin.spec)
    text = record.definition or skeleton(guest.name, guest.pin.machine, guest.pin.accel)
    cpu = pinned_cpu(guest.pin, catalog, policy=policy)
    return pinned_document(text, cpu, f"guest {name}", machine=guest.pin.machine)


def _policy(spec: str) -> str | None:
    from cpuver.spec import parse

    try:
        selector = parse(spec).version
    except CpuverError:
        return None
    return str(selector) if selector is not None else None


def guest_transition(
    store: GuestStore,
    name: str,
    action: str,
    *,
    host: HostCapabilities | None = None,
    snapshot: str | None = None,
    dry_run: bool = False,
) -> Guest:
    """One lifecycle step, checked (hosts must run the pinned CPU) and stored atomically;
    ``dry_run`` only checks that it is allowed."""
    from cpuver.domain import lifecycle

    guest = get_guest(store, name)
    if action in ("start", "migrate", "restore"):
        if host is None:
            raise HostNeeded(f"{action} needs the target host's capabilities")
        step = {
            "start": lifecycle.start,
            "migrate": lifecycle.migrate,
            "restore": lifecycle.restore,
        }[action]
        new = step(guest, host.name, host)
        reason = f"{action} on {host.name}"
    elif action in ("snapshot-create", "snapshot-revert"):
        assert snapshot is not None
        step_snap = (
            lifecycle.snapshot_create
            if action == "snapshot-create"
            else (lifecycle.snapshot_revert)
        )
        new = step_snap(guest, snapshot)
        reason = f"{action} {snapshot}"
    else:
        new = {"shutdown": lifecycle.shutdown, "save": lifecycle.save}[action](guest)
        reason = action
    return new if dry_run else _store_change(store, guest, new, reason)


STEPS_CHECKED = ("start", "migrate", "restore")
"""The steps :func:`check_step` answers: those that put a guest on a host."""


@dataclass(frozen=True, slots=True)
class StepCheck:
    """Whether a guest could take a step onto a host now, and if not why (a read only)."""

    guest: str
    action: str
    host: str
    allowed: bool
    reason: str | None = None
    missing: tuple[str, ...] = ()
    """The pinned features (of the CPU the step would run) the host lacks."""


def check_step(
    store: GuestStore, host_store: HostStore, name: str, action: str, host_name: str
) -> StepCheck:
    """Could guest ``name`` ``action`` (start on, migrate to, be restored on) the stored host
    ``host_name``? Exactly the checks of the step itself (a start runs a pending update), and
    nothing is changed."""
    from cpuver.domain import HostLacksFeatures, IllegalTransition

    if action not in STEPS_CHECKED:
        raise CpuverError(f"action: expected one of {', '.join(STEPS_CHECKED)}, got {action!r}")
    host = stored_host(host_store.get(host_name))
    try:
        guest_transition(store, name, action, host=host, dry_run=True)
    except HostLacksFeatures as refused:
        return StepCheck(name, action, host_name, False, str(refused), refused.missing)
    except IllegalTransition as refused:
        return StepCheck(name, action, host_name, False, str(refused))
    return StepCheck(name, action, host_name, True)


def update_guest_cpu(
    store: GuestStore,
    name: str,
    catalog: Catalog,
    to: str,
    host: HostCapabilities | None,
    accept_signature_change: bool,
    dry_run: bool,
    run_on: Sequence[HostCapabilities] | None = None,
    force: bool = False,
) -> tuple[Guest, CpuDiff]:
    """Move a guest's pin explicitly to version ``to`` (best, latest, vN): its model at that
    version with the guest's own feature changes kept. ``host`` is what ``best`` runs on;
    ``run_on`` the hosts the new pin must run on (default: ``host``), refused unless ``force``."""
    from cpuver.domain.lifecycle import check_update, update_cpu, updated_spec
    from cpuver.domain.pinning import pin

    guest = get_guest(store, name)
    old = guest.pin
    spec, kept = updated_spec(old, to, catalog)
    resolver = Resolver(catalog, old.machine, old.accel, host)
    new_pin = pin(resolver.resolve(spec), catalog)
    check_update(name, new_pin, run_on if run_on is not None else [h for h in [host] if h], force)
    updated, diff = update_cpu(guest, new_pin, accept_signature_change, dry_run)
    if updated is not guest and updated != guest:
        updated = _store_change(store, guest, updated, f"update-cpu to {new_pin.name}")
    return updated, replace(diff, kept=kept)


def undefine_guest(store: GuestStore, name: str, keep_history: bool = True) -> Guest:
    """Remove a shut-off or saved guest so its name is free; its CPU history stays for audit
    unless ``keep_history`` is False. Returns the guest as it was."""
    from cpuver.domain.lifecycle import undefine

    guest = get_guest(store, name)
    undefine(guest)
    store.delete(name, guest.generation, keep_history=keep_history, reason="undefine")
    return guest


def cancel_cpu_update(store: GuestStore, name: str) -> Guest:
    """Drop a guest's pending CPU update (one no host can run, say): it keeps its CPU."""
    from cpuver.domain.lifecycle import cancel_update

    guest = get_guest(store, name)
    cancelled = cancel_update(guest)
    assert guest.pending is not None
    return _store_change(store, guest, cancelled, f"update-cpu to {guest.pending.name} cancelled")


def check_guests(store: GuestStore, catalog: Catalog) -> list[tuple[str, list[str]]]:
    """Guests whose pinned version no longer exists or is deprecated in ``catalog``."""
    from cpuver.domain.pinning import check

    out = []
    for guest in list_guests(store):
        problems = check(guest.pin, catalog)
        if problems:
            out.append((guest.name, problems))
    return out


@dataclass(frozen=True, slots=True)
class PinChange:
    """One change of a guest's pin (its definition first): when, who, why, from what to what."""

    at: datetime
    actor: str
    reason: str
    old: str | None
    """The pinned CPU's name before (None: the guest was defined)."""
    new: str
    old_fingerprint: str | None
    new_fingerprint: str


def guest_history(store: GuestStore, name: str) -> list[PinChange]:
    """Every pin guest ``name`` had, oldest first (also of an undefined guest whose history was
    kept); GuestNotFound when no guest of that name was ever kept."""
    out = []
    for entry in store.history(name):
        old = json.loads(entry.old_pin_json)["name"] if entry.old_pin_json else None
        out.append(
            PinChange(
                entry.at,
                entry.actor,
                entry.reason,
                old,
                json.loads(entry.new_pin_json)["name"],
                entry.old_fingerprint,
                entry.new_fingerprint,
            )
        )
    return out
