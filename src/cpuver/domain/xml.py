"""Guest definitions in: libvirt domain XML (with libvirt's meaning) and cpuver's guest files;
pinned domain XML out, changing only the ``<cpu>`` and cpuver's element of the document.

Reading XML is safe by refusal: any document type declaration (``<!DOCTYPE``, hence internal and
external entities, "billion laughs") is rejected before parsing, and parse errors name the line and
column. A domain is read as libvirt reads it:

* ``<domain type='qemu'>`` is TCG, ``type='kvm'`` is KVM;
* ``<cpu><model>`` is a model name (a cpuver spec there is refused: the version policy belongs in
  cpuver's metadata, ``<cpuver:cpu version='best'/>``, or on the command line);
* feature policies keep libvirt's meaning: ``force``/``require`` on, ``disable``/``forbid`` off,
  ``optional`` on when the host has it (decided when the domain is pinned: :attr:`optional`);
* ``<vendor>`` must be the model's vendor (checked once the model is resolved);
* the paravirtual features libvirt sets through elements of its own are read from them
  (``<clock><timer name='kvmclock' present=...>``, ``<features><pvspinlock>``,
  ``<features><apic eoi=...>``, ``<features><kvm><hint-dedicated|poll-control|pv-ipi>``);
* ``host-model`` is expanded when pinned, no ``<cpu>`` means QEMU's default CPU, and
  ``host-passthrough``/``maximum`` cannot be pinned (no portable definition).

Writing (:func:`pinned_document`) replaces byte ranges of the original text: the ``<cpu>``
element (keeping every child that is not about features: ``<topology>``, ``<cache>``, ``<numa>``
...), cpuver's element in ``<metadata>`` (:mod:`.pinmeta`), and only where the pin needs them the
paravirtual settings above; every other byte of the document stays as it was.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from html import escape
from typing import Any

from cpuver.catalog import Catalog, NameKind
from cpuver.documents import UnreadableXml, xml_root
from cpuver.domain import DomainError, pinmeta
from cpuver.domain.pinmeta import NAMESPACE, PinMetadata
from cpuver.errors import InvalidSpec, UnknownFeature, UnknownName
from cpuver.features import FeatureTable
from cpuver.models import split_versioned_name
from cpuver.names import check_name
from cpuver.spec import parse

__all__ = [
    "LIBVIRT_VENDORS",
    "NAMESPACE",
    "SETTINGS",
    "GuestDefinition",
    "PinnedCpu",
    "XmlError",
    "cpu_element",
    "libvirt_names",
    "parse_xml",
    "pin_mismatch",
    "pinned_document",
    "read_domain_xml",
    "read_guest",
    "read_guest_json",
    "read_guest_toml",
    "renamed",
    "skeleton",
]

_POLICY = re.compile(r"best|latest|v[1-9][0-9]*|[0-9]+\.[0-9]+\.[0-9]+")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ON_POLICIES = ("require", "force")
_OFF_POLICIES = ("disable", "forbid")
_HOST_MODES = ("host-passthrough", "maximum")
_COMMENT = "not expressible in libvirt"
_FEATURE_CHILDREN = ("model", "vendor", "feature")
ACCELS = {"qemu": "tcg", "kvm": "kvm"}
"""libvirt's ``<domain type>`` -> QEMU's accelerator."""

LIBVIRT_VENDORS = {"Intel": "GenuineIntel", "AMD": "AuthenticAMD", "Hygon": "HygonGenuine"}
"""libvirt's ``<vendor>`` names (its cpu_map/x86_vendors.xml) -> the CPUID vendor string."""

SETTINGS: Mapping[str, tuple[str, str]] = {
    "kvmclock": ("clock", "timer[@name='kvmclock']/present"),
    "kvm-pv-unhalt": ("features", "pvspinlock/state"),
    "kvm-pv-eoi": ("features", "apic/eoi"),
    "kvm-hint-dedicated": ("features", "kvm/hint-dedicated/state"),
    "kvm-poll-control": ("features", "kvm/poll-control/state"),
    "kvm-pv-ipi": ("features", "kvm/pv-ipi/state"),
}
"""QEMU features libvirt sets with elements of its own (its CPU map has no name for them):
feature -> (top-level element, path of the element below it / its on-off attribute)."""
_YES = {"kvmclock": ("yes", "no")}
"""Attribute values for on/off where they are not ``on``/``off``."""


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
    """The cpuver spec for the CPU (``Haswell,version=best``, ``Haswell-v4,+pcid,-hle``); None
    when the CPU is not given as a model (host-model, no ``<cpu>``: see :attr:`cpu`)."""
    policy: str | None = None
    """cpuver's version policy from the metadata (``best``, ``v4`` ...)."""
    fingerprint: str | None = None
    """The pin's fingerprint, when the domain was written from a pin."""
    mode: str | None = None
    """libvirt's ``<cpu mode>`` (``custom`` when a model is given without a mode)."""
    vendor: str | None = None
    """The CPUID vendor string ``<vendor>`` asks for (``GenuineIntel`` for ``Intel``)."""
    notes: tuple[str, ...] = ()
    """What was read but cannot be part of the spec."""
    accel: str | None = None
    """``tcg`` for ``<domain type='qemu'>``, ``kvm`` for ``type='kvm'``; None for guest files."""
    optional: tuple[str, ...] = ()
    """Features with ``policy='optional'`` (QEMU names): on when the host has them."""
    cpu: str = "model"
    """How the CPU is given: ``model``, ``host-model``, ``default`` (no ``<cpu>``: what QEMU
    gives the machine type), or a mode that cannot be pinned (``host-passthrough``)."""
    threads_per_package: int = 1
    """dies x clusters x cores x threads of ``<cpu><topology>`` (1 without one)."""
    metadata: PinMetadata | None = None
    """cpuver's metadata element, when the domain has one."""


# ------------------------------------------------------------------------------ reading XML


def parse_xml(text: str, source: str = "domain.xml") -> ET.Element:
    """Parse XML text that has no document type declaration; errors name line and column."""
    try:
        return xml_root(text, source)
    except UnreadableXml as err:
        raise XmlError(err.source, err.problem, err.line, err.column) from err


def read_domain_xml(
    text: str,
    source: str = "domain.xml",
    features: FeatureTable | None = None,
    catalog: Catalog | None = None,
) -> GuestDefinition:
    """A libvirt domain's name, machine type, accelerator, CPU (as a cpuver spec) and policy.

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
    kind = root.get("type")
    accel = ACCELS.get(kind) if kind is not None else None
    if kind is not None and accel is None:
        raise XmlError(source, f"domain/@type: {kind!r} is not a QEMU domain (qemu or kvm)")
    os_type = root.find("os/type")
    machine = os_type.get("machine") if os_type is not None else None
    meta = _metadata(root, source)
    policy = meta.policy if meta else None
    notes: list[str] = []
    cpu = root.find("cpu")
    spec = mode = vendor = None
    optional: tuple[str, ...] = ()
    how = "default"
    threads = 1
    if cpu is not None:
        threads = _threads_per_package(cpu, source)
        mode = cpu.get("mode")
        model = (cpu.findtext("model") or "").strip()
        vendor = _vendor(cpu, source)
        if mode in _HOST_MODES:
            how = mode
            notes.append(
                f"cpu mode {mode} gives the guest whatever the host it starts on has: it has no "
                "portable definition to pin (name a model, or use host-model to pin what this "
                "host runs)"
            )
        elif mode == "host-model":
            how = "host-model"
        elif model:
            mode, how = "custom", "model"
            changes, optional = _feature_changes(cpu, table, source)
            spec = _cpu_spec(model, policy, changes, catalog, source, notes)
        elif mode not in (None, "custom"):
            raise XmlError(source, f"cpu/@mode: unknown mode {mode!r}")
        else:
            notes.append("<cpu> names no model: QEMU gives the machine type's default CPU")
    settings = _settings(root, source)
    if settings and spec is not None:
        spec = ",".join([spec, *settings])
    if spec is None and policy is not None and how == "default":
        notes.append(f"cpuver policy version={policy} needs a <cpu><model>")
    return GuestDefinition(
        name=name,
        machine=machine,
        spec=spec,
        policy=policy,
        fingerprint=meta.fingerprint if meta else None,
        mode=mode,
        vendor=vendor,
        notes=tuple(notes),
        accel=accel,
        optional=optional,
        cpu=how,
        threads_per_package=threads,
        metadata=meta,
    )


def _metadata(root: ET.Element, source: str) -> PinMetadata | None:
    element = pinmeta.find(root)
    if element is None:
        return None
    try:
        meta = pinmeta.read(element)
    except pinmeta.MetadataError as err:
        raise XmlError(source, f"metadata/{err}") from err
    if meta.policy is not None and not _POLICY.fullmatch(meta.policy):
        raise XmlError(
            source,
            f"metadata/cpuver:cpu/@version: {meta.policy!r} is not best, latest, vN or X.Y.Z",
        )
    return meta


def _threads_per_package(cpu: ET.Element, source: str) -> int:
    topology = cpu.find("topology")
    if topology is None:
        return 1  # libvirt gives each vCPU a socket of its own
    threads = 1
    for level in ("dies", "clusters", "cores", "threads"):
        value = topology.get(level, "1")
        if not value.isdigit() or int(value) < 1:
            raise XmlError(source, f"cpu/topology/@{level}: {value!r} is not a positive number")
        threads *= int(value)
    return threads


def _vendor(cpu: ET.Element, source: str) -> str | None:
    spelled = (cpu.findtext("vendor") or "").strip()
    if not spelled:
        return None
    if spelled not in LIBVIRT_VENDORS:
        known = ", ".join(LIBVIRT_VENDORS)
        raise XmlError(source, f"cpu/vendor: {spelled!r} is not a libvirt vendor ({known})")
    return LIBVIRT_VENDORS[spelled]


def _feature_changes(
    cpu: ET.Element, table: FeatureTable, source: str
) -> tuple[list[str], tuple[str, ...]]:
    """``+feat``/``-feat`` of the ``<feature>`` elements, and the optional ones."""
    by_libvirt = libvirt_names(table)
    changes: list[str] = []
    optional: list[str] = []
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
            changes.append(f"+{feature}")
        elif how in _OFF_POLICIES:
            changes.append(f"-{feature}")
        elif how == "optional":
            optional.append(feature)
        else:
            raise XmlError(source, f"cpu/feature[@name={spelled!r}]: unknown policy {how!r}")
    return changes, tuple(optional)


def _cpu_spec(
    model: str,
    policy: str | None,
    changes: Sequence[str],
    catalog: Catalog | None,
    source: str,
    notes: list[str],
) -> str:
    if not _MODEL_NAME.fullmatch(model):
        raise XmlError(
            source,
            f"cpu/model: {model!r} is not a model name: libvirt's <model> names a model only; "
            "a version policy goes into cpuver's metadata (<cpuver:cpu version='best'/>) or "
            "--spec, feature changes into <feature> elements",
        )
    parts = [model]
    if policy is not None:
        if _names_a_version(model, catalog):
            notes.append(f"policy version={policy} ignored: {model} already names a version")
        else:
            parts.append(f"version={policy}")
    spec = ",".join([*parts, *changes])
    try:
        parse(spec)
    except InvalidSpec as err:
        raise XmlError(source, f"cpu: not a valid cpuver spec: {err}") from err
    return spec


def _settings(root: ET.Element, source: str) -> list[str]:
    """``+feat``/``-feat`` of the paravirtual settings libvirt has elements for."""
    found = []
    for feature, (top, path) in SETTINGS.items():
        where, _, attribute = path.rpartition("/")
        element = root.find(f"{top}/{where}")
        value = element.get(attribute) if element is not None else None
        if value is None:
            continue
        on, off = _YES.get(feature, ("on", "off"))
        if value not in (on, off):
            raise XmlError(source, f"{top}/{where}/@{attribute}: expected {on} or {off}")
        found.append(f"{'+' if value == on else '-'}{feature}")
    return found


def _names_a_version(model: str, catalog: Catalog | None) -> bool:
    """``Haswell-v4`` names a version; so do alias names (``Haswell-noTSX``) a catalog knows."""
    if catalog is not None:
        try:
            return catalog.lookup(model).kind is not NameKind.BARE
        except UnknownName:
            pass
    return split_versioned_name(model) is not None


@cache
def libvirt_names(table: FeatureTable) -> Mapping[str, str]:
    """libvirt's spelling -> QEMU's name (libvirt's meaning wins when reading libvirt XML);
    built once per feature table."""
    found: dict[str, str] = {}
    for name in table:
        spelled = table.libvirt_name(name)
        if spelled is not None:
            found[spelled] = name
    return found


@cache
def renamed(table: FeatureTable) -> Mapping[str, str]:
    """The libvirt spellings that are not QEMU's name (``pclmuldq`` -> ``pclmulqdq``): what the
    hook needs to read a pinned ``<cpu>`` (:mod:`.pinmeta` takes every other name as QEMU's)."""
    return {k: v for k, v in libvirt_names(table).items() if k != v}


def pin_mismatch(root: ET.Element, table: FeatureTable | None = None) -> str | None:
    """Why the domain's ``<cpu>`` is not the pin its metadata records; None when it is."""
    return pinmeta.mismatch(root, renamed(table or FeatureTable.bundled()))


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
    import tomllib  # here: only guest files in TOML need it (start-up time)

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


@dataclass(frozen=True, slots=True)
class PinnedCpu:
    """A pinned CPU as libvirt XML says it (made by :mod:`cpuver.emit.libvirt`)."""

    model: str
    """The name written in ``<model>``."""
    vendor_id: str | None
    """The CPUID vendor string for ``<model vendor_id=...>`` (None: the model's own)."""
    features: tuple[tuple[str, str], ...]
    """(policy, libvirt name) of every feature libvirt can name: ``require`` or ``disable``."""
    metadata: PinMetadata
    settings: tuple[tuple[str, bool], ...] = ()
    """Paravirtual features (:data:`SETTINGS`) the pin sets otherwise than QEMU's default."""
    inexpressible: tuple[str, ...] = ()
    """What libvirt cannot say (``stepping=1``, ``xstore=on``): empty when exact."""
    kept: tuple[str, ...] = field(default=())
    """Children of the original ``<cpu>`` that are not about features, as XML text."""


def cpu_element(cpu: PinnedCpu, indent: str = "") -> str:
    """The ``<cpu>`` element: custom mode, exact match, full check, every nameable feature."""
    inner = indent + "  "
    vendor = f" vendor_id='{escape(cpu.vendor_id)}'" if cpu.vendor_id else ""
    lines = [
        "<cpu mode='custom' match='exact' check='full'>",
        f"{inner}<model fallback='forbid'{vendor}>{escape(cpu.model)}</model>",
    ]
    lines += [f"{inner}{_comment(item)}" for item in cpu.inexpressible]
    # libvirt's feature names are plain identifiers (the bundled table): nothing to escape
    lines += [f"{inner}<feature policy='{p}' name='{n}'/>" for p, n in cpu.features]
    lines += [f"{inner}{child}" for child in cpu.kept]
    lines.append(f"{indent}</cpu>")
    return "\n".join(lines)


def _comment(text: str) -> str:
    while "--" in text:  # "--" may not occur inside an XML comment
        text = text.replace("--", "- -")
    return f"<!-- {_COMMENT}: {text} -->"


def skeleton(name: str, machine: str, accel: str) -> str:
    """The smallest domain for a guest that was not defined from a domain XML (guest files)."""
    kind = "kvm" if accel == "kvm" else "qemu"
    return (
        f"<domain type='{kind}'>\n  <name>{escape(name)}</name>\n"
        "  <memory unit='MiB'>1024</memory>\n"
        f"  <os>\n    <type arch='x86_64' machine='{escape(machine)}'>hvm</type>\n  </os>\n"
        "</domain>\n"
    )


@dataclass(slots=True)
class _Element:
    name: str
    start: int
    """Byte offset of its ``<``."""
    head_end: int
    """Byte offset just after its start tag."""
    end: int = -1
    """Byte offset just after its end tag (= head_end when self-closing)."""
    close: int = -1
    """Byte offset of its end tag's ``</`` (= head_end when self-closing)."""
    children: list[_Element] = field(default_factory=list)


def _outline(data: bytes, source: str) -> _Element:
    """Byte ranges of the root, its children and its grandchildren (expat, namespace-aware)."""
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    stack: list[_Element] = []
    done: list[_Element] = []

    def start(name: str, _attrs: Any) -> None:
        at = parser.CurrentByteIndex
        element = _Element(_tag(name), at, _head_end(data, at))
        if stack and len(stack) < 3:
            stack[-1].children.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        element = stack.pop()
        at = parser.CurrentByteIndex
        if data.startswith(b"</", at):
            element.close, element.end = at, data.index(b">", at) + 1
        else:
            element.close = element.end = element.head_end
        if not stack:
            done.append(element)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as err:
        raise XmlError(source, f"malformed XML: {err}") from err
    return done[0]


def _tag(expat_name: str) -> str:
    """expat's ``uri}local`` as ElementTree's ``{uri}local``."""
    uri, _, local = expat_name.rpartition("}")
    return f"{{{uri}}}{local}" if uri else local


def _head_end(data: bytes, at: int) -> int:
    """Just after the start tag beginning at ``at`` (a ``>`` inside quotes does not end it)."""
    quote = 0
    for index in range(at, len(data)):
        byte = data[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in (0x22, 0x27):
            quote = byte
        elif byte == 0x3E:
            return index + 1
    return len(data)


def _indent(data: bytes, at: int) -> str:
    line_start = data.rfind(b"\n", 0, at) + 1
    prefix = data[line_start:at]
    return prefix.decode() if not prefix.strip() else ""


def pinned_document(
    text: str, cpu: PinnedCpu, source: str = "domain.xml", machine: str | None = None
) -> str:
    """``text`` with ``cpu`` pinned: its ``<cpu>``, cpuver's metadata element and the settings
    the pin needs replaced or inserted, every other byte unchanged. ``machine`` also writes the
    concrete machine type into ``<os><type machine>`` when the document names another one (an
    alias such as ``q35`` means another CPU under another QEMU)."""
    root_element = parse_xml(text, source)
    data = text.encode()
    root = _outline(data, source)
    child_indent = _indent(data, root.children[0].start) if root.children else "  "
    edits: list[tuple[int, int, str]] = []
    by_name: dict[str, _Element] = {}
    for child in root.children:
        by_name.setdefault(child.name, child)

    old_cpu = root_element.find("cpu")
    kept = (
        tuple(_serialized(child) for child in old_cpu or () if child.tag not in _FEATURE_CHILDREN)
        if old_cpu is not None
        else ()
    )
    new_cpu = cpu_element(_with_kept(cpu, kept), child_indent)
    if "cpu" in by_name:
        span = by_name["cpu"]
        edits.append((span.start, span.end, new_cpu))
    else:
        at = _insertion_point(
            root, ("clock", "on_poweroff", "on_reboot", "on_crash", "pm", "devices")
        )
        edits.append(_insert_before(data, root, at, new_cpu, child_indent))

    metadata = by_name.get("metadata")
    if metadata is None:
        after = [
            c for c in root.children if c.name in ("name", "uuid", "genid", "title", "description")
        ]
        inner = child_indent * 2 if child_indent else "    "
        block = (
            f"\n{child_indent}<metadata>\n{inner}{pinmeta.write(cpu.metadata, inner)}\n"
            f"{child_indent}</metadata>"
        )
        edits.append((after[-1].end, after[-1].end, block))
    else:
        edits.append(_metadata_edit(data, metadata, cpu.metadata))

    edits += _settings_edits(root_element, by_name, data, cpu.settings, child_indent, root)
    if machine is not None:
        edits += _machine_edit(root_element, by_name, data, machine)
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        data = data[:start] + new.encode() + data[end:]
    return data.decode()


def _with_kept(cpu: PinnedCpu, kept: tuple[str, ...]) -> PinnedCpu:
    return replace(cpu, kept=kept)


def _serialized(element: ET.Element) -> str:
    copy = ET.fromstring(ET.tostring(element))
    copy.tail = None
    return ET.tostring(copy, encoding="unicode").strip()


def _insertion_point(root: _Element, before: Sequence[str]) -> _Element | None:
    for child in root.children:
        if child.name in before:
            return child
    return None


def _insert_before(
    data: bytes, root: _Element, at: _Element | None, new: str, indent: str
) -> tuple[int, int, str]:
    if at is not None:
        return (at.start, at.start, f"{new}\n{indent}")
    line_start = data.rfind(b"\n", 0, root.close) + 1
    return (line_start, line_start, f"{indent}{new}\n")


def _metadata_edit(data: bytes, metadata: _Element, meta: PinMetadata) -> tuple[int, int, str]:
    indent = _indent(data, metadata.start)
    inner = indent * 2 if indent else "    "
    for child in metadata.children:
        if child.name == pinmeta.TAG:
            return (child.start, child.end, pinmeta.write(meta, _indent(data, child.start)))
    element = pinmeta.write(meta, inner)
    if metadata.close == metadata.head_end:  # <metadata/>
        return (metadata.start, metadata.end, f"<metadata>\n{inner}{element}\n{indent}</metadata>")
    line_start = data.rfind(b"\n", 0, metadata.close) + 1
    if data[line_start : metadata.close].strip():
        return (metadata.close, metadata.close, f"\n{inner}{element}\n{indent}")
    return (line_start, line_start, f"{inner}{element}\n")


def _settings_edits(
    root_element: ET.Element,
    by_name: Mapping[str, _Element],
    data: bytes,
    settings: Sequence[tuple[str, bool]],
    indent: str,
    root: _Element,
) -> list[tuple[int, int, str]]:
    """Rewrite ``<clock>``/``<features>`` where the pin's paravirtual settings differ."""
    edits = []
    for top in ("clock", "features"):
        wanted = [(f, on) for f, on in settings if SETTINGS[f][0] == top]
        if not wanted:
            continue
        element = root_element.find(top)
        element = ET.fromstring(ET.tostring(element)) if element is not None else ET.Element(top)
        if top == "clock" and element.get("offset") is None:
            element.set("offset", "utc")
        for feature, on in wanted:
            _set(element, SETTINGS[feature][1], _YES.get(feature, ("on", "off"))[0 if on else 1])
        element.tail = None
        ET.indent(element, space="  ", level=len(indent) // 2 if indent else 1)
        text = ET.tostring(element, encoding="unicode")
        span = by_name.get(top)
        if span is not None:
            edits.append((span.start, span.end, text))
        else:
            before = ("cpu",) if top == "features" else ("on_poweroff", "on_reboot", "devices")
            edits.append(_insert_before(data, root, _insertion_point(root, before), text, indent))
    return edits


def _set(element: ET.Element, path: str, value: str) -> None:
    """Set ``a/b[@name='x']/attr`` below ``element``, creating what is missing."""
    *steps, attribute = path.split("/")
    for step in steps:
        found = element.find(step)
        if found is None:
            tag, _, predicate = step.partition("[")
            found = ET.SubElement(element, tag)
            if predicate:
                key, _, val = predicate.strip("[]@").partition("=")
                found.set(key, val.strip("'"))
        element = found
    element.set(attribute, value)


def _machine_edit(
    root_element: ET.Element, by_name: Mapping[str, _Element], data: bytes, machine: str
) -> list[tuple[int, int, str]]:
    os_type = root_element.find("os/type")
    span = by_name.get("os")
    if os_type is None or span is None or os_type.get("machine") == machine:
        return []
    element = ET.fromstring(data[span.start : span.end])
    found = element.find("type")
    assert found is not None
    found.set("machine", machine)
    element.tail = None
    return [(span.start, span.end, ET.tostring(element, encoding="unicode"))]
