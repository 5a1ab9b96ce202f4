"""A host from libvirt's ``virsh domcapabilities`` XML (pure parsing: no libvirt, no I/O).

libvirt lists every CPU model of the hypervisor with ``usable='yes|no'`` and, for an unusable
one, its ``<blockers>``: the features QEMU's ``unavailable-features`` names, in libvirt's spelling.
What a host offers is read back from those answers, so that cpuver's blockers of every listed
model are libvirt's under the accelerator the capabilities are for (``<domain>qemu|kvm</domain>``)
and the machine type libvirt asked QEMU with (``none``, as libvirt probes; the ``<machine>`` of
the document is only the default for new domains): a feature a model enables is offered unless it
blocks some model; features no model enables are offered when libvirt's ``host-model`` requires
them.

The catalog is the one whose QEMU release is given (``--via libvirt`` asks the daemon), else the
first of ``catalogs`` that knows every listed model name (a model a catalog does not know cannot
be checked: the reader refuses rather than guess).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cpuver.catalog import Catalog
from cpuver.documents import UnreadableDocument, xml_root
from cpuver.errors import HostError, UnknownFeature, UnknownMachineType, UnknownName
from cpuver.features import FeatureSet, FeatureTable
from cpuver.host.capabilities import AccelOffer, HostCapabilities, HostFacts, build

METHOD = "libvirt"
_ACCELS = {"qemu": "tcg", "kvm": "kvm"}
_VENDORS = {"Intel": "GenuineIntel", "AMD": "AuthenticAMD", "Hygon": "HygonGenuine"}
_NOTE = (
    "libvirt's domcapabilities: what makes cpuver's blockers of every model libvirt's <blockers>"
)


@dataclass(frozen=True, slots=True)
class DomainCapabilities:
    """What one ``domcapabilities`` document says about CPUs."""

    accel: str
    machine: str
    emulator: str | None
    usable: Mapping[str, bool]
    """Model name -> ``usable='yes'``."""
    blockers: Mapping[str, FeatureSet]
    """Model name -> its blockers (QEMU names); empty for usable models."""
    host_model: FeatureSet
    """Features libvirt's host-model CPU requires (QEMU names)."""
    vendor: str | None
    """The CPUID vendor of libvirt's host-model CPU, when it names one."""


def parse_domain_capabilities(
    text: str, source: str, table: FeatureTable | None = None
) -> DomainCapabilities:
    """Read a ``domcapabilities`` document; errors name the source and the element."""
    features = table or FeatureTable.bundled()
    try:
        root = xml_root(text, source)
    except UnreadableDocument as err:
        raise HostError(str(err)) from err
    if root.tag != "domainCapabilities":
        raise HostError(f"{source}: expected <domainCapabilities>, found <{root.tag}>")
    kind = (root.findtext("domain") or "").strip()
    if kind not in _ACCELS:
        raise HostError(f"{source}: domain: expected qemu or kvm, got {kind!r}")
    machine = (root.findtext("machine") or "").strip()
    if not machine:
        raise HostError(f"{source}: machine: missing")
    custom = root.find("cpu/mode[@name='custom']")
    if custom is None:
        raise HostError(f"{source}: cpu/mode[@name='custom']: missing (no CPU models listed)")
    usable: dict[str, bool] = {}
    for model in custom.iterfind("model"):
        name = (model.text or "").strip()
        if not name or model.get("usable") not in ("yes", "no"):
            raise HostError(f"{source}: cpu/mode/model {name!r}: expected usable='yes' or 'no'")
        usable[name] = model.get("usable") == "yes"
    blockers: dict[str, FeatureSet] = {name: frozenset() for name in usable}
    for element in custom.iterfind("blockers"):
        name = element.get("model") or ""
        if name not in usable:
            raise HostError(f"{source}: blockers of {name!r}: no such model listed")
        where = f"{source}: blockers of {name}"
        blockers[name] = _features(element, where, features)
    host_model = root.find("cpu/mode[@name='host-model']")
    required: FeatureSet = frozenset()
    vendor = None
    if host_model is not None:
        required = _features(host_model, f"{source}: host-model", features, policy="require")
        vendor = _VENDORS.get((host_model.findtext("vendor") or "").strip())
    return DomainCapabilities(
        _ACCELS[kind],
        machine,
        (root.findtext("path") or "").strip() or None,
        usable,
        blockers,
        required,
        vendor,
    )


def _features(
    element: ET.Element, where: str, table: FeatureTable, policy: str | None = None
) -> FeatureSet:
    names = [
        f.get("name") or ""
        for f in element.iterfind("feature")
        if policy is None or f.get("policy") == policy
    ]
    try:
        return frozenset(table.canonical(name) for name in names)
    except UnknownFeature as err:
        raise HostError(f"{where}: unknown feature {err.name!r}") from err


def pick_catalog(caps: Sequence[DomainCapabilities], catalogs: Sequence[Catalog]) -> Catalog:
    """The first catalog that knows every model and machine type the capabilities list."""
    for catalog in catalogs:
        if all(_knows(catalog, one) for one in caps):
            return catalog
    names = sorted({n for one in caps for n in one.usable if not _knows_name(catalogs[-1], n)})
    raise HostError(
        "domcapabilities list CPU models no catalog knows "
        f"({', '.join(names[:5]) or 'machine ' + caps[0].machine}): give the QEMU release"
    )


def _knows(catalog: Catalog, caps: DomainCapabilities) -> bool:
    try:
        catalog.machine(caps.machine)
    except UnknownMachineType:
        return False
    return all(_knows_name(catalog, name) for name in caps.usable)


def _knows_name(catalog: Catalog, name: str) -> bool:
    try:
        catalog.lookup(name)
    except UnknownName:
        return False
    return True


PROBE_MACHINE = "none"
"""The machine type libvirt starts QEMU with to probe its capabilities."""


def offered(caps: DomainCapabilities, catalog: Catalog) -> FeatureSet:
    """The features that give, for every listed model, exactly libvirt's blockers."""
    machine = catalog.machine(PROBE_MACHINE)
    runs: set[str] = set()
    blocked: set[str] = set()
    for name, missing in caps.blockers.items():
        enabled = catalog.effective(catalog.lookup(name), machine, caps.accel).features
        unknown = missing - enabled
        if unknown:
            raise HostError(
                f"domcapabilities: {name} is blocked by {', '.join(sorted(unknown))}, which "
                f"catalog {catalog.release} says {name} does not enable"
            )
        runs |= enabled - missing
        blocked |= missing
    return frozenset((runs | caps.host_model) - blocked)


def host_from_domain_capabilities(
    texts: Mapping[str, str],
    name: str,
    catalogs: Sequence[Catalog],
    release: str | None = None,
    time: str | None = None,
    table: FeatureTable | None = None,
) -> HostCapabilities:
    """A ``cpuver-host/2`` snapshot from ``domcapabilities`` documents (source -> text, one per
    accelerator). ``release`` (``X.Y``, the daemon's QEMU) picks the catalog; else the first of
    ``catalogs`` that knows every model listed."""
    caps = [parse_domain_capabilities(text, source, table) for source, text in texts.items()]
    accels = [one.accel for one in caps]
    if len(set(accels)) != len(accels):
        raise HostError(f"{name}: two domcapabilities for one accelerator")
    candidates = [c for c in catalogs if _release(c) == release] if release else []
    catalog = pick_catalog(caps, candidates or catalogs)
    key = release or _release(catalog)
    offers = {
        one.accel: AccelOffer(offered(one, catalog), METHOD, one.emulator, time, _NOTE)
        for one in caps
    }
    vendor = next((one.vendor for one in caps if one.accel == "kvm" and one.vendor), None)
    facts = HostFacts(vendor=vendor or "")
    return build(name, {key: offers}, facts, ", ".join(texts), time, METHOD)


def _release(catalog: Catalog) -> str:
    return ".".join(catalog.release.split(".")[:2])
