"""libvirt ``<cpu>`` XML for a pinned CPU that libvirt accepts and starts with ``check='full'``.

With ``check='full'`` libvirt compares the vCPU QEMU created with its own idea of the ``<cpu>``
(its CPU map's model plus the listed features), and its CPU map's models are not QEMU's: a bare
``<model>Westmere-v1</model>`` fails to start ("extra features: pclmuldq,hypervisor,arat"). So
every feature libvirt can name is listed, ``require`` or ``disable``, in libvirt's spelling
(``pclmuldq``, ``lahf_lm``); the model then only decides what no ``<feature>`` says: the
signature and the features libvirt has no name for. The ``<model>`` written is the first name
whose QEMU definition gives exactly those: the versioned name, an alias of it, or the bare name,
which on legacy machine types (<= 4.0) carries the stepping and compat changes that ``-vN``
lacks. The CPUID vendor is set with ``<model vendor_id=...>`` when the model's differs, and always
under KVM (KVM would report the host's). The paravirtual features libvirt sets with elements of
its own (``<clock><timer name='kvmclock'>``, ``<features><pvspinlock>`` ...) are written there
when the pin differs from QEMU's default. What libvirt cannot say at all (another stepping on a
machine type whose bare name does not give it, a feature without a libvirt name that differs
from the model's) is listed in :attr:`PinnedCpu.inexpressible` and kept visible as a comment.

Versioned model names (``Haswell-v4``) need libvirt >= 10.10; for an older daemon the bare or
alias name is used where it gives the pinned definition, else the loss is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from cpuver.catalog import Catalog, NameKind, NameRef
from cpuver.domain.pinmeta import PinMetadata
from cpuver.domain.pinning import Pin
from cpuver.domain.pinning import pin as pin_of_resolution
from cpuver.domain.xml import SETTINGS, PinnedCpu, cpu_element
from cpuver.features import FeatureTable
from cpuver.models import Definition, SignatureValue
from cpuver.resolve import Resolution

VERSIONED_NAMES_SINCE = (10, 10, 0)
"""libvirt NEWS 10.10: "qemu: Add support for versioned CPU models"."""


@dataclass(frozen=True, slots=True)
class LibvirtTarget:
    """The libvirt the XML is for: its version and, when asked, the CPU model names it knows."""

    version: tuple[int, int, int] = (11, 3, 0)
    models: frozenset[str] | None = None
    """``virConnectGetCPUModelNames``: None when not asked (the version decides)."""

    def knows(self, ref: NameRef) -> bool:
        if self.models is not None:
            return ref.name in self.models
        return ref.kind is not NameKind.VERSIONED or self.version >= VERSIONED_NAMES_SINCE

    def __str__(self) -> str:
        return "libvirt " + ".".join(map(str, self.version))


DEFAULT_TARGET = LibvirtTarget()
"""The libvirt of bookworm-backports (11.3), whose CPU map cpuver's libvirt names come from."""


def pinned_cpu(
    pin: Pin,
    catalog: Catalog,
    target: LibvirtTarget = DEFAULT_TARGET,
    policy: str | None = None,
    features: FeatureTable | None = None,
) -> PinnedCpu:
    """``pin`` as libvirt XML says it, for ``target``; ``catalog`` must know the pinned version."""
    table = features or FeatureTable.bundled()
    spelled = _spellings(table)
    machine = catalog.machine(pin.machine)
    on = pin.on
    unnamed = frozenset(f for f in on | pin.off if spelled.get(f) is None)
    candidates = _names(pin, catalog)
    allowed = [ref for ref in candidates if target.knows(ref)]
    lost: list[str] = []
    if not allowed:
        lost.append(
            f"model: {target} knows no name for {pin.version}"
            + (" (versioned names need libvirt >= 10.10)" if target.models is None else "")
        )
        allowed = candidates[:1]
    scored = []
    for ref in allowed:
        definition = catalog.effective(ref, machine, pin.accel)
        scored.append((_losses(pin, on, definition, unnamed), ref, definition))
    losses, ref, definition = min(scored, key=lambda item: len(item[0]))
    lost += losses
    vendor = pin.signature.vendor
    vendor_id = vendor if pin.accel == "kvm" or vendor != definition.signature.vendor else None
    named = sorted(
        (("require" if f in on else "disable", name)
         for f in on | pin.off if (name := spelled.get(f))),
        key=lambda item: item[1],
    )  # fmt: skip
    settings = tuple(
        (feature, feature in on)
        for feature in SETTINGS
        if pin.accel == "kvm"
        and feature in unnamed
        and (feature in on) != (feature in definition.features)
    )
    metadata = PinMetadata(
        policy=policy,
        fingerprint=pin.fingerprint,
        spec=pin.spec,
        pinned=pin.name,
        base=pin.version,
        model=ref.name,
        machine=pin.machine,
        accel=pin.accel,
        catalog=pin.catalog_release,
        build=pin.catalog_build,
        signature=pin.signature.as_dict(),
        on=unnamed & on,
        off=unnamed - on,
    )
    return PinnedCpu(
        model=ref.name,
        vendor_id=vendor_id,
        features=tuple(named),
        metadata=metadata,
        settings=settings,
        inexpressible=tuple(lost),
    )


def _names(pin: Pin, catalog: Catalog) -> list[NameRef]:
    """Names that may give the pinned definition: the versioned one, its aliases, the bare one."""
    version = catalog.lookup(pin.version)
    assert version.version is not None
    aliases = [catalog.lookup(alias) for alias in version.version.aliases]
    return [version, *aliases, catalog.lookup(pin.model)]


def _losses(
    pin: Pin, on: frozenset[str], definition: Definition, unnamed: frozenset[str]
) -> list[str]:
    """What ``<model>`` = this definition loses of the pin (QEMU names), given every nameable
    feature is listed and the vendor is set: other signature fields, ``unnamed`` features."""
    mine = pin.signature.as_dict()
    theirs = definition.signature.as_dict()
    lost = [
        f"{field}={_value(value)}"
        for field, value in mine.items()
        if field != "vendor" and value != theirs[field]
    ]
    settable = SETTINGS if pin.accel == "kvm" else {}
    for feature in sorted(unnamed):
        state = feature in on
        if state != (feature in definition.features) and feature not in settable:
            lost.append(f"{feature}={'on' if state else 'off'}")
    return lost


@cache
def _spellings(table: FeatureTable) -> Mapping[str, str | None]:
    """QEMU name -> libvirt name (None: libvirt has none) of every feature of ``table``."""
    return {name: table.libvirt_name(name) for name in table}


def _value(value: SignatureValue) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


_XML_CACHE: dict[tuple[object, ...], str] = {}
_XML_CACHE_SIZE = 4096


def cpu_xml(
    resolution: Resolution, catalog: Catalog, target: LibvirtTarget = DEFAULT_TARGET
) -> str:
    """The ``<cpu>`` element for a resolution (``cpuver resolve``), by the same rules as a pin;
    paravirtual settings outside ``<cpu>`` are named in a comment before it.

    Remembered per catalog, resolved CPU and target: the service answers every resolve request
    with it, and writing some 350 features costs ~20 times the resolution itself.
    """
    key = (
        id(catalog), catalog.build, resolution.definition, resolution.version.name,
        resolution.name, resolution.machine, resolution.accel, target,
    )  # fmt: skip
    found = _XML_CACHE.get(key)
    if found is None:
        if len(_XML_CACHE) >= _XML_CACHE_SIZE:
            _XML_CACHE.clear()
        pinned = pin_of_resolution(resolution, catalog)
        found = _XML_CACHE[key] = _cpu_text(pinned_cpu(pinned, catalog, target))
    return found


def _cpu_text(cpu: PinnedCpu) -> str:
    if not cpu.settings:
        return cpu_element(cpu)
    outside = ", ".join(f"{f}={'on' if on else 'off'}" for f, on in cpu.settings)
    return f"<!-- set with elements outside <cpu>: {outside} -->\n{cpu_element(cpu)}"


def inexpressible(
    resolution: Resolution, catalog: Catalog, target: LibvirtTarget = DEFAULT_TARGET
) -> tuple[str, ...]:
    """What :func:`cpu_xml` can only comment on (``NAME=VALUE``, QEMU names): empty when exact."""
    return pinned_cpu(pin_of_resolution(resolution, catalog), catalog, target).inexpressible
