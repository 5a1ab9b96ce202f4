"""Guest definitions in: libvirt domain XML and cpuver's small guest file; pinned domain XML out.

Reading XML is safe by refusal: any document type declaration (``<!DOCTYPE``, hence internal and
external entities, "billion laughs") is rejected before parsing, and parse errors name the line and
column. From a domain we take its name, the machine type (``<os><type machine=...>``), the
``<cpu>`` (model and features, turned into a cpuver spec with QEMU's feature names) and cpuver's
policy from the metadata::

    <metadata>
      <cpuver:cpu xmlns:cpuver="https://cpuver.dev/xmlns/1" version="best"/>
    </metadata>

(``version``: ``best``, ``latest``, ``vN`` or a release ``X.Y.Z``; it applies to a bare model name).
:func:`domain_xml` writes a minimal domain whose ``<cpu>`` is the pinned CPU, every feature libvirt
can name explicitly required or disabled, and which reads back to the same CPU.
"""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from html import escape
from typing import Any

from cpuver.catalog import Catalog, NameKind
from cpuver.domain import DomainError
from cpuver.domain.pinning import Pin, pin_delta
from cpuver.errors import InvalidSpec, UnknownFeature, UnknownName
from cpuver.features import FeatureTable
from cpuver.models import split_versioned_name
from cpuver.names import check_name
from cpuver.spec import VersionSelector, parse

NAMESPACE = "https://cpuver.dev/xmlns/1"
_CPUVER = f"{{{NAMESPACE}}}"
_FORBIDDEN = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
_POLICY = re.compile(r"best|latest|v[1-9][0-9]*|[0-9]+\.[0-9]+\.[0-9]+")
_ON_POLICIES = ("require", "force")
_OFF_POLICIES = ("disable", "forbid")
_COMMENT = "not expressible in libvirt"


class XmlError(DomainError):
    """Domain XML that cannot be read; ``line`` and ``column`` (1-based) when known."""

    def __init__(
        self, source: str, problem: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.source = source
        self.problem = problem
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{source}: {where}{problem}")


@dataclass(frozen=True, slots=True)
class GuestDefinition:
    """What a guest definition (domain XML or guest file) asks for."""

    name: str
    machine: str | None
    spec: str | None
    """The cpuver spec for the CPU (``Haswell,version=best``, ``Haswell-v4,+pcid,-hle``);
    None when the CPU is not a named model (``host-passthrough``, no ``<cpu>``)."""
    policy: str | None = None
    """cpuver's version policy from the metadata (``best``, ``v4`` ...)."""
    fingerprint: str | None = None
    """The pin's fingerprint, when the domain was written from a pin."""
    mode: str | None = None
    """libvirt's ``<cpu mode>`` (``custom`` when a model is given without a mode)."""
    vendor: str | None = None
    notes: tuple[str, ...] = ()
    """What was read but cannot be part of the spec (optional features, host modes)."""


# ------------------------------------------------------------------------------ reading XML


def parse_xml(text: str, source: str = "domain.xml") -> ET.Element:
    """Parse XML text that has no document type declaration; errors name line and column."""
    found = _FORBIDDEN.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        raise XmlError(
            source,
            f"<!{found[1].upper()} is refused: document type declarations and entities are "
            "not accepted (they can expand without limit or read local files)",
            line,
            column,
        )
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        line, column = err.position
        problem = str(err).split(":")[0]
        raise XmlError(source, f"malformed XML: {problem}", line, column + 1) from err


def read_domain_xml(
    text: str,
    source: str = "domain.xml",
    features: FeatureTable | None = None,
    catalog: Catalog | None = None,
) -> GuestDefinition:
    """A libvirt domain's name, machine type, CPU (as a cpuver spec) and cpuver policy.

    The policy applies to a bare model name only; ``catalog`` (optional) tells alias names
    (``Haswell-noTSX``) from bare ones, else only ``-vN`` names count as naming a version.
    """
    table = features or FeatureTable.bundled()
    root = parse_xml(text, source)
    if root.tag != "domain":
        raise XmlError(source, f"expected a <domain> root element, found <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise XmlError(source, "domain/name: missing or empty")
    check_name("guest", name, f"{source}: domain/name")
    os_type = root.find("os/type")
    machine = os_type.get("machine") if os_type is not None else None
    policy, fingerprint = _metadata(root, source)
    notes: list[str] = []
    cpu = root.find("cpu")
    spec = mode = vendor = None
    if cpu is not None:
        mode = cpu.get("mode")
        model = (cpu.findtext("model") or "").strip()
        vendor = (cpu.findtext("vendor") or "").strip() or None
        if model and mode in (None, "custom"):
            mode = "custom"
            spec = _cpu_spec(cpu, model, policy, table, catalog, source, notes)
        elif mode in ("host-passthrough", "host-model", "maximum"):
            notes.append(f"cpu mode {mode} names no model: cpuver pins custom mode only")
        elif not model:
            notes.append("<cpu> names no model")
    if spec is None and policy is not None:
        notes.append(f"cpuver policy version={policy} needs a <cpu><model>")
    return GuestDefinition(name, machine, spec, policy, fingerprint, mode, vendor, tuple(notes))


def _metadata(root: ET.Element, source: str) -> tuple[str | None, str | None]:
    element = root.find(f"metadata/{_CPUVER}cpu")
    if element is None:
        return None, None
    policy = element.get("version")
    if policy is not None and not _POLICY.fullmatch(policy):
        raise XmlError(
            source,
            f"metadata/cpuver:cpu/@version: {policy!r} is not best, latest, vN or X.Y.Z",
        )
    return policy, element.get("fingerprint")


def _cpu_spec(
    cpu: ET.Element,
    model: str,
    policy: str | None,
    table: FeatureTable,
    catalog: Catalog | None,
    source: str,
    notes: list[str],
) -> str:
    by_libvirt = _libvirt_names(table)
    parts = [model]
    if policy is not None:
        if _names_a_version(model, catalog):
            notes.append(f"policy version={policy} ignored: {model} already names a version")
        else:
            parts.append(f"version={policy}")
    for element in cpu.findall("feature"):
        spelled = element.get("name")
        how = element.get("policy", "require")
        if not spelled:
            raise XmlError(source, "cpu/feature: missing name")
        try:
            feature = by_libvirt.get(spelled) or table.canonical(spelled)
        except UnknownFeature as err:
            raise XmlError(source, f"cpu/feature[@name={spelled!r}]: {err}") from err
        if how in _ON_POLICIES:
            parts.append(f"+{feature}")
        elif how in _OFF_POLICIES:
            parts.append(f"-{feature}")
        elif how == "optional":
            notes.append(f"optional feature {spelled} left out (cpuver pins features exactly)")
        else:
            raise XmlError(source, f"cpu/feature[@name={spelled!r}]: unknown policy {how!r}")
    spec = ",".join(parts)
    try:
        parse(spec)
    except InvalidSpec as err:
        raise XmlError(source, f"cpu: not a valid cpuver spec: {err}") from err
    return spec


def _names_a_version(model: str, catalog: Catalog | None) -> bool:
    """``Haswell-v4`` names a version; so do alias names (``Haswell-noTSX``) a catalog knows."""
    if catalog is not None:
        try:
            return catalog.lookup(model).kind is not NameKind.BARE
        except UnknownName:
            pass
    return split_versioned_name(model) is not None


def _libvirt_names(table: FeatureTable) -> dict[str, str]:
    """libvirt's spelling -> QEMU's name (libvirt's meaning wins when reading libvirt XML)."""
    found: dict[str, str] = {}
    for name in table:
        spelled = table.libvirt_name(name)
        if spelled is not None:
            found[spelled] = name
    return found


# ------------------------------------------------------------------------------ guest files


def read_guest_json(text: str, source: str = "guest.json") -> GuestDefinition:
    """``{"name": "web1", "machine": "pc-q35-10.0", "cpu": "Haswell,version=best"}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DomainError(
            f"{source}: line {err.lineno}, column {err.colno}: malformed JSON: {err.msg}"
        ) from err
    except (RecursionError, ValueError) as err:  # too deep, or a number too long to convert
        raise DomainError(f"{source}: JSON too deeply nested or with a too long number") from err
    return guest_from_data(data, source)


def read_guest_toml(text: str, source: str = "guest.toml") -> GuestDefinition:
    """The same fields as TOML: ``name = "web1"``, ``cpu = "Haswell,version=best"``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DomainError(f"{source}: malformed TOML: {err}") from err
    except (RecursionError, ValueError) as err:  # too deep, or a number too long to convert
        raise DomainError(f"{source}: TOML too deeply nested or with a too long number") from err
    return guest_from_data(data, source)


def read_guest(text: str, source: str) -> GuestDefinition:
    """Any guest definition, by ``source``'s suffix (.xml, .json, .toml)."""
    suffix = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    readers = {"xml": read_domain_xml, "json": read_guest_json, "toml": read_guest_toml}
    reader = readers.get(suffix)
    if reader is None:
        stripped = text.lstrip()
        reader = read_domain_xml if stripped.startswith("<") else read_guest_json
        if not stripped.startswith(("<", "{")):
            reader = read_guest_toml
    return reader(text, source)


def guest_from_data(data: Any, source: str) -> GuestDefinition:
    if not isinstance(data, dict):
        raise DomainError(f"{source}: expected an object with name, machine and cpu")
    unknown = sorted(set(data) - {"name", "machine", "cpu"})
    if unknown:
        raise DomainError(f"{source}: unknown field(s) {', '.join(unknown)} (name, machine, cpu)")
    name = check_name("guest", data.get("name"), f"{source}: name")
    machine = data.get("machine")
    if machine is not None and (not isinstance(machine, str) or not machine):
        raise DomainError(f"{source}: machine: expected a machine type name")
    cpu = data.get("cpu")
    if not isinstance(cpu, str) or not cpu:
        raise DomainError(f"{source}: cpu: expected a cpuver spec like 'Haswell,version=best'")
    try:
        selector = parse(cpu).version
    except InvalidSpec as err:
        raise DomainError(f"{source}: cpu: {err}") from err
    policy = str(selector) if selector is not None else None
    return GuestDefinition(name, machine, cpu, policy)


# ------------------------------------------------------------------------------ writing XML


def domain_xml(
    guest_name: str,
    machine: str,
    pin: Pin,
    catalog: Catalog,
    memory_mib: int = 1024,
    features: FeatureTable | None = None,
) -> str:
    """A minimal libvirt domain running exactly the pinned CPU (custom, exact, full check).

    Every feature of the pin libvirt can name is required or disabled; the vendor is written
    when it differs from the version's; other signature changes and unnameable features are kept
    visible as comments (libvirt cannot say them).
    """
    table = features or FeatureTable.bundled()
    # also checks that the catalog knows the pinned version; under another machine type than
    # the pin's, signature fields may differ from the version's there (written as comments)
    delta = pin_delta(pin if machine == pin.machine else replace(pin, machine=machine), catalog)
    domain_type = "kvm" if pin.accel == "kvm" else "qemu"
    selector = _selector(pin.spec)
    policy = f" version='{escape(str(selector))}'" if selector is not None else ""
    lines = [
        f"<domain type='{domain_type}'>",
        f"  <name>{escape(guest_name)}</name>",
        f"  <memory unit='MiB'>{int(memory_mib)}</memory>",
        "  <metadata>",
        f"    <cpuver:cpu xmlns:cpuver='{NAMESPACE}'{policy} pinned='{escape(pin.name)}' "
        f"fingerprint='{pin.fingerprint}' catalog='{escape(pin.catalog_release)}'/>",
        "  </metadata>",
        "  <os>",
        f"    <type arch='x86_64' machine='{escape(machine)}'>hvm</type>",
        "  </os>",
        "  <cpu mode='custom' match='exact' check='full'>",
        f"    <model fallback='forbid'>{escape(pin.version)}</model>",
    ]
    vendor = dict(delta.signature).get("vendor")
    if isinstance(vendor, str):
        lines.append(f"    <vendor>{escape(vendor)}</vendor>")
    inexpressible = [f"{f}={v!r}" for f, v in delta.signature if f != "vendor"]
    elements = []
    for policy_name, names in (("require", pin.features_on), ("disable", pin.features_off)):
        for feature in names:
            spelled = table.libvirt_name(feature) if feature in table else None
            if spelled is None:
                inexpressible.append(f"{feature}={'on' if policy_name == 'require' else 'off'}")
            else:
                elements.append(f"    <feature policy='{policy_name}' name='{escape(spelled)}'/>")
    lines += [_comment(item) for item in inexpressible]
    lines += [*elements, "  </cpu>", "</domain>", ""]
    return "\n".join(lines)


def _selector(spec: str) -> VersionSelector | None:
    try:
        return parse(spec).version
    except InvalidSpec:
        return None


def _comment(text: str) -> str:
    while "--" in text:  # "--" may not occur inside an XML comment
        text = text.replace("--", "- -")
    return f"    <!-- {_COMMENT}: {text} -->"
