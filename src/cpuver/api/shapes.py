"""One JSON shape per answer, shared by the CLI (``--json``) and the service, so both always say
the same thing the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cpuver.api.hosts import stored_host
from cpuver.catalog import Catalog
from cpuver.errors import CpuverError, InvalidSpec, NotRunnable
from cpuver.models import SIGNATURE_FIELDS
from cpuver.resolve import Resolution, Resolver

if TYPE_CHECKING:
    from cpuver.api.fleets import PoolBest, Targets, UpgradeWhatIf, WhatIf
    from cpuver.api.guests import StepCheck
    from cpuver.api.hosts import ReleaseChange
    from cpuver.domain.lifecycle import CpuDiff, Guest
    from cpuver.store import HostRecord


def resolution_json(
    resolution: Resolution, catalog: Catalog, libvirt: bool = True
) -> dict[str, Any]:
    """As ``cpuver resolve --json`` shows it. ``libvirt=False``: without ``libvirt_xml``, for the
    text output, which does not show it (libvirt's emitter is a fifth of the command's start-up)."""
    from cpuver.emit.qemu import cpu_arg

    signature = resolution.definition.signature.as_dict()
    return {
        "spec": resolution.spec,
        "name": resolution.name,
        "model": resolution.model,
        "version": resolution.version.name,
        "machine": resolution.machine,
        "accel": resolution.accel,
        "rule": resolution.rule.value,
        "reason": resolution.reason,
        "features": sorted(resolution.definition.features),
        "signature": {k: signature[k] for k in SIGNATURE_FIELDS},
        "blockers": {name: list(missing) for name, missing in resolution.blockers},
        "missing": list(resolution.missing),
        "unknown": dict(resolution.unknown),
        "qemu_cpu_arg": cpu_arg(resolution),
        "libvirt_xml": _libvirt_xml(resolution, catalog) if libvirt else None,
        "notes": list(resolution.notes),
    }


def _libvirt_xml(resolution: Resolution, catalog: Catalog) -> str:
    from cpuver.emit.libvirt import cpu_xml

    return cpu_xml(resolution, catalog)


def definitions_json(resolver: Resolver) -> list[dict[str, Any]]:
    """``query-cpu-definitions`` as QEMU would answer it for this catalog, machine and host."""
    catalog = resolver.catalog
    out = []
    for ref in catalog.names():
        entry: dict[str, Any] = {"name": ref.name}
        alias = catalog.alias_of(ref, resolver.machine)
        if alias:
            entry["alias-of"] = alias
        if resolver.offers is not None:
            entry["unavailable-features"] = list(resolver.unavailable(ref))
            unknown = [f for f in entry["unavailable-features"] if f in resolver.unknown]
            if unknown:
                entry["unknown"] = {f: resolver.unknown[f] for f in unknown}
        deprecated = ref.version.deprecated if ref.version else ref.model.deprecated
        entry["deprecated"] = deprecated
        entry["migration-safe"] = True
        entry["static"] = False
        out.append(entry)
    return out


def host_json(record: HostRecord) -> dict[str, Any]:
    """One stored host as ``cpuver fleet ls --json`` and ``GET /api/hosts`` show it."""
    host = stored_host(record)
    return {
        "host": record.name,
        "pools": list(record.pools),
        "vendor": host.facts.vendor if host.facts else host.vendor,
        "accelerators": sorted(host.offers),
        "releases": sorted(host.releases) if host.releases else [],
        "snapshots": record.snapshots,
        "updated": record.updated.isoformat(timespec="seconds"),
    }


def pool_best_json(pool: str, found: PoolBest) -> dict[str, Any]:
    """As ``cpuver pool best --json`` and ``GET /api/pools/{pool}/best`` show it."""
    answer = found.answer
    return {
        "pool": pool,
        "model": answer.model,
        "best": answer.best,
        "hosts": list(answer.hosts),
        "blocked": {v: {h: list(m) for h, m in hs} for v, hs in answer.blocked},
        "held-back": {v: {h: list(m) for h, m in hs} for v, hs in found.held_back},
    }


def what_if_json(
    pool: str,
    drop: frozenset[str],
    add: frozenset[str],
    hosts: Sequence[str] | None,
    outcome: WhatIf,
) -> dict[str, Any]:
    """As ``cpuver fleet what-if --json`` and ``POST /api/pools/{pool}/what-if`` show it."""
    return {
        "pool": pool,
        "drop": sorted(drop),
        "add": sorted(add),
        "hosts": list(hosts) if hosts is not None else None,
        "answers": [
            {"model": c.model, "before": c.before, "after": c.after, "hosts": list(c.hosts)}
            for c in outcome.changes
        ],
        "guests": [
            {
                "guest": g.guest,
                "pin": g.pin,
                "host": g.host,
                "missing": list(g.missing),
                "current": g.current,
            }
            for g in outcome.guests
        ],
        "stranded": outcome.stranded,
    }


def targets_json(name: str, found: Targets, pending: str | None = None) -> dict[str, Any]:
    """As ``cpuver domain targets --json`` and ``GET /api/guests/{name}/targets`` show it;
    ``pending``: the pending CPU update every target runs too."""
    return {
        "guest": name,
        "targets": [host for host, missing in found if not missing],
        "blocked": {host: list(missing) for host, missing in found if missing},
        "pending": pending,
    }


def upgrade_what_if_json(pool: str, outcome: UpgradeWhatIf) -> dict[str, Any]:
    """As ``cpuver fleet what-if --qemu X.Y --json`` shows it."""
    return {
        "pool": pool,
        "before": outcome.before,
        "after": outcome.after,
        "answers": [{"model": m, "before": b, "after": a} for m, b, a in outcome.changes],
        "new_versions": [
            {"version": v, "runs_on": list(ran), "blocked": {h: list(m) for h, m in blocked}}
            for v, ran, blocked in outcome.new_versions
        ],
        "guests": [
            {
                "guest": g.guest,
                "pin": g.pin,
                "problems": list(g.problems),
                "lost": {h: list(m) for h, m in g.lost},
                "stranded": g.stranded,
            }
            for g in outcome.guests
        ],
        "unknown": outcome.unknown,
    }


def release_change_json(host: str, changes: Sequence[ReleaseChange]) -> dict[str, Any]:
    """As ``cpuver host diff FILE --qemu X.Y --to-qemu Z.W --json`` shows it."""
    return {
        "host": host,
        "accels": [
            {
                "accel": c.accel,
                "before": c.before,
                "after": c.after,
                "lost": list(c.lost),
                "gained": list(c.gained),
                "unusable": {v: list(m) for v, m in c.unusable},
                "usable": list(c.usable),
                "new_usable": list(c.new_usable),
                "new_blocked": {v: list(m) for v, m in c.new_blocked},
                "gone": list(c.gone),
                "unknown": c.unknown,
            }
            for c in changes
        ],
    }


def guest_json(guest: Guest) -> dict[str, Any]:
    """One stored guest in brief, as ``cpuver domain list --json`` and ``GET /api/guests`` show
    it (``GET /api/guests/{name}`` and a saved guest file have the full pin)."""
    return {
        "name": guest.name,
        "state": guest.state,
        "host": guest.host,
        "cpu": guest.pin.name,
        "machine": guest.pin.machine,
        "accel": guest.pin.accel,
        "pending": guest.pending.name if guest.pending else None,
        "fingerprint": guest.pin.fingerprint,
        "generation": guest.generation,
    }


def cpu_diff_json(diff: CpuDiff) -> dict[str, Any]:
    """What an update changes (or would) about a guest's CPU; ``kept``: the guest's own feature
    changes the new version keeps."""
    return {
        "from": diff.old,
        "to": diff.new,
        "kept": list(diff.kept),
        "gained": list(diff.gained),
        "lost": list(diff.lost),
        "signature": {name: {"old": old, "new": new} for name, old, new in diff.signature},
        "machine": {"old": diff.machine[0], "new": diff.machine[1]} if diff.machine else None,
        "identity-changed": diff.identity_changed,
        "applied": diff.applied,
        "pending": diff.pending,
    }


def step_check_json(check: StepCheck) -> dict[str, Any]:
    """As ``GET /api/guests/{name}/check`` shows it."""
    return {
        "guest": check.guest,
        "action": check.action,
        "host": check.host,
        "allowed": check.allowed,
        "reason": check.reason,
        "missing": list(check.missing),
    }


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def error_json(err: CpuverError) -> dict[str, Any]:
    """An error in one line, with the bad span of a spec (given directly or inside a guest
    definition) or the blockers of every version when none runs."""
    bad_spec = err if isinstance(err, InvalidSpec) else err.__cause__
    if isinstance(bad_spec, InvalidSpec):
        where = f"{bad_spec.message} (at position {bad_spec.start} of {bad_spec.text!r})"
        return {
            "error": one_line(str(err).replace(str(bad_spec), where)),
            "spec": bad_spec.text,
            "position": bad_spec.start,
            "end": bad_spec.end,
        }
    if isinstance(err, NotRunnable):
        return {
            "error": f"no version of {err.spec!r} can run on {err.where}",
            "blockers": {name: list(missing) for name, missing in err.blockers.items()},
        }
    return {"error": one_line(str(err))}
