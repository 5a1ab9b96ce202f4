"""Hosts from what management layers keep about them: QEMU's QMP replies and libvirt's QEMU
capabilities cache. Each file becomes a host snapshot: per QEMU release and accelerator what QEMU's
filter offers, read with that release's rules (:mod:`cpuver.host.evidence`), settled by QEMU's own
``query-cpu-definitions`` when the file has it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cpuver.api.catalogs import open_catalog
from cpuver.catalog import Catalog, NameKind
from cpuver.catalog.releases import supported_releases
from cpuver.errors import HostError, UnknownRelease
from cpuver.features import FeatureSet
from cpuver.host import libvirt_caps, qmp_replies
from cpuver.host.capabilities import AccelOffer, HostCapabilities, HostFacts, from_json
from cpuver.host.capabilities import build as build_host
from cpuver.host.evidence import AccelEvidence, Offer, QemuEvidence, offer, settle
from cpuver.names import NAME_MAX, is_name

_METHOD = {qmp_replies.FORM: "qmp", libvirt_caps.FORM: "libvirt-cache"}


def read_evidence(text: str, source: str) -> QemuEvidence | None:
    """The evidence in ``text`` if it is QMP replies or a libvirt capabilities cache, else None
    (a cpuver snapshot, or something else for the caller to judge)."""
    if libvirt_caps.looks_like_caps(text):
        return libvirt_caps.read(text, source)
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        found = qmp_replies.messages(text, source)
    except HostError:
        return None  # not JSON at all: the caller's own reader names the problem
    if len(found) == 1 and not qmp_replies.looks_like_replies(found[0]):
        return None
    return qmp_replies.from_messages(found, source)


def host_from_data(data: Any, source: str) -> HostCapabilities:
    """A host from parsed JSON (a request body): QMP replies read with QEMU's rules, like a
    host file; anything else as a cpuver snapshot."""
    if qmp_replies.looks_like_replies(data):
        found = data if isinstance(data, list) else [data]
        if all(isinstance(message, dict) for message in found):
            return host_from_evidence(qmp_replies.from_messages(found, source))
    return from_json(data, source)


def host_from_evidence(evidence: QemuEvidence, use_definitions: bool = True) -> HostCapabilities:
    """The host ``evidence`` describes. ``use_definitions``: let QEMU's own
    ``query-cpu-definitions`` (when the file has it) settle what the expansion cannot tell."""
    catalog = _catalog_near(evidence.release)
    offers: dict[str, AccelOffer] = {}
    unknown: dict[str, dict[str, str]] = {}
    for accel, accel_evidence in sorted(evidence.accels.items()):
        found = offers_of(accel_evidence, evidence.release, catalog, use_definitions)
        offers[accel] = AccelOffer(
            found.features,
            _METHOD[evidence.form],
            evidence.build,
            None,
            _note(evidence, accel_evidence, found),
            found.unknown,
        )
        unknown[accel] = dict(found.unknown)
    name = _host_name(evidence.source)
    facts = evidence.facts
    vendor = facts.get("vendor") if isinstance(facts.get("vendor"), str) else None
    if evidence.release is None:
        return HostCapabilities(
            name,
            {accel: found.features for accel, found in offers.items()},
            vendor,
            evidence.source,
            {"method": _METHOD[evidence.form]},
            unknown=unknown,
        )
    host_facts = HostFacts(
        vendor=vendor or "unknown",
        brand=str(facts.get("model-id", "")),
        family=_int(facts.get("family")),
        model=_int(facts.get("model")),
        stepping=_int(facts.get("stepping")),
    )
    return build_host(
        name, {evidence.release: offers}, host_facts, evidence.source, None, _METHOD[evidence.form]
    )


def offers_of(
    evidence: AccelEvidence, release: str | None, catalog: Catalog, use_definitions: bool = True
) -> Offer:
    """What ``evidence`` says ``release``'s QEMU offers under its accelerator."""
    found = offer(evidence, release, catalog.known_features)
    if use_definitions and evidence.definitions:
        found = settle(found, evidence.definitions, requested(catalog, evidence.accel))
    return found


def requested(catalog: Catalog, accel: str) -> dict[str, FeatureSet]:
    """What every ``-vN`` name asks for under ``-machine none`` (as libvirt asks QEMU), so QEMU's
    answers can be read feature by feature. ``-vN`` names only, which per-model compat
    properties of old machine types never touch (those hit bare and pre-4.1 alias names), so a
    reply asked under another machine type still reads right."""
    machine = catalog.machine("none" if "none" in catalog.machines else None)
    return {
        ref.name: catalog.effective(ref, machine, accel).features
        for ref in catalog.names()
        if ref.kind is NameKind.VERSIONED
    }


def _catalog_near(release: str | None) -> Catalog:
    """The catalog whose feature names that QEMU knows: its release's, else the nearest older
    one cpuver describes (a release cpuver does not describe is still read)."""
    if release is None:
        return open_catalog()
    supported = supported_releases()
    key = tuple(int(part) for part in release.split("."))
    older = [r for r in supported if tuple(int(p) for p in r.split(".")) <= key]
    try:
        return open_catalog(release if release in supported else (older or supported)[-1])
    except UnknownRelease as err:  # pragma: no cover - supported releases always open
        raise HostError(str(err)) from err


def _note(evidence: QemuEvidence, accel: AccelEvidence, found: Offer) -> str:
    asked = ", ".join(
        f"{e.model} {e.kind}"
        + ("" if e.migratable is None else f" migratable={'on' if e.migratable else 'off'}")
        for e in accel.expansions
    )
    parts = [f"{evidence.form}: {asked}"]
    if accel.definitions is not None:
        parts.append(f"query-cpu-definitions of {len(accel.definitions)} names")
    if found.rules:
        parts.append("QEMU's rules: " + "; ".join(found.rules))
    if evidence.release is None:
        parts.append("QEMU release not recorded")
    return ". ".join(parts)


def _host_name(source: str) -> str:
    """QMP replies and libvirt's cache do not name their host: the file does (``hv3.xml`` ->
    ``hv3``), made to follow the name rule (cpuver.names)."""
    if source in ("-", ""):
        return "stdin"
    name = Path(source).name
    for suffix in (".replies", ".xml", ".json"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("._-")[:NAME_MAX]
    return name if is_name(name) else "host"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
