"""Read libvirt's QEMU capabilities cache (``/var/cache/libvirt/qemu/capabilities/*.xml``).

libvirt asks each QEMU binary once and keeps the answers in this file (the format of libvirt's
``tests/qemucapabilitiesdata/caps_*.xml``)::

    <qemuCaps>
      <version>8002000</version>  <package>v8.2.0</package>  <microcodeVersion>...</...>
      <hostCPU type='kvm' model='base' migratability='yes'>
        <property name='avx2' type='boolean' value='true' migratable='yes'/>
        <property name='invtsc' type='boolean' value='true' migratable='no'/>
        <property name='vendor' type='string' value='AuthenticAMD'/> ...
      </hostCPU>
      <cpu type='kvm' name='EPYC-Rome-v1' typename='...' usable='no'>
        <blocker name='xsaves'/>
      </cpu> ...

``hostCPU`` is QEMU's static expansion of ``host`` (KVM) or ``max`` (TCG) merged by libvirt with
the ``migratable=off`` one: ``migratable='no'`` marks what only the latter shows. ``cpu`` is
``query-cpu-definitions``: each name's ``unavailable-features`` (``blocker``). Errors say where
(``caps.xml: hostCPU[2].property[7]: ...``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from cpuver.documents import UnreadableDocument, xml_root
from cpuver.errors import HostError
from cpuver.host.evidence import AccelEvidence, Expansion, QemuEvidence, signature_facts

FORM = "libvirt capabilities cache"
_MODEL = {"kvm": "host", "tcg": "max"}


def looks_like_caps(text: str) -> bool:
    return text.lstrip().startswith("<") and "<qemuCaps" in text[:4096]


def read(text: str, source: str) -> QemuEvidence:
    try:
        root = xml_root(text, source)
    except UnreadableDocument as err:
        raise HostError(str(err)) from None
    if root.tag != "qemuCaps":
        raise HostError(f"{source}: expected libvirt's <qemuCaps>, got <{root.tag}>")
    release, build = _version(root, source)
    accels: dict[str, AccelEvidence] = {}
    expansions: dict[str, tuple[Expansion, ...]] = {}
    facts: dict[str, Any] = {}
    for index, host in enumerate(root.findall("hostCPU")):
        where = f"{source}: hostCPU[{index + 1}]"
        accel = host.get("type")
        if accel not in _MODEL:
            continue  # hvf, ...: no accelerator cpuver models
        migratable, everything = _properties(host, where)
        asked = _MODEL[accel]
        found = [Expansion(asked, "static", True, migratable)]
        if host.get("migratability") == "yes":
            found.append(Expansion(asked, "static", False, everything))
        expansions[accel] = tuple(found)
        if accel == "kvm" or not facts:
            facts = signature_facts(everything)
    definitions: dict[str, dict[str, tuple[str, ...]]] = {}
    for index, cpu in enumerate(root.findall("cpu")):
        accel, name = cpu.get("type"), cpu.get("name")
        if not accel or not name:
            raise HostError(f"{source}: cpu[{index + 1}]: expected type and name attributes")
        blockers = tuple(b.get("name", "") for b in cpu.findall("blocker"))
        definitions.setdefault(accel, {})[name] = blockers
    for accel in expansions.keys() | (definitions.keys() & _MODEL.keys()):
        if accel not in expansions:
            raise HostError(
                f"{source}: {accel}: the cpu list alone does not say what the host offers: "
                "no hostCPU for it"
            )
        accels[accel] = AccelEvidence(accel, expansions[accel], definitions.get(accel))
    if not accels:
        raise HostError(f"{source}: no <hostCPU> of KVM or TCG: nothing says what the host offers")
    return QemuEvidence(source, release, build, accels, FORM, facts)


def _version(root: ET.Element, source: str) -> tuple[str | None, str | None]:
    text = (root.findtext("version") or "").strip()
    if not text:
        return None, None
    if not text.isdigit():
        raise HostError(f"{source}: version: expected libvirt's number (8002000), got {text!r}")
    number = int(text)
    major, minor, micro = number // 1_000_000, number // 1000 % 1000, number % 1000
    package = (root.findtext("package") or "").strip()
    build = f"QEMU {major}.{minor}.{micro}" + (f" ({package})" if package else "")
    return f"{major}.{minor}", build


def _properties(host: ET.Element, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The migratable expansion's props, and the migratable=off one's."""
    migratable: dict[str, Any] = {}
    everything: dict[str, Any] = {}
    for index, prop in enumerate(host.findall("property")):
        place = f"{where}.property[{index + 1}]"
        name, kind, value = prop.get("name"), prop.get("type"), prop.get("value")
        if not name or kind is None or value is None:
            raise HostError(f"{place}: expected name, type and value attributes")
        parsed: Any
        if kind == "boolean":
            if value not in ("true", "false"):
                raise HostError(f"{place}: value: expected true or false, got {value!r}")
            parsed = value == "true"
        elif kind == "number":
            try:
                parsed = int(value, 0)
            except ValueError:
                raise HostError(f"{place}: value: expected a number, got {value!r}") from None
        else:
            parsed = value
        everything[name] = parsed
        if not (parsed is True and prop.get("migratable") == "no"):
            migratable[name] = parsed
        else:
            migratable[name] = False
    return migratable, everything
