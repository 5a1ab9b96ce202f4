"""cpuver's element in a libvirt domain's ``<metadata>``, and the fingerprint of a pinned CPU.

A pinned domain carries everything a host needs to check its pin, with no shared database::

    <cpuver:cpu xmlns:cpuver="https://cpuver.dev/xmlns/1" version="best"
                spec="Westmere,version=best" pinned="Westmere-v1" base="Westmere-v1"
                model="Westmere-v1" machine="pc-q35-10.0" accel="tcg" catalog="10.0.2"
                build="QEMU emulator version 10.0.2 (...)" fingerprint="02c7...">
      <cpuver:signature vendor="GenuineIntel" family="6" model="44" stepping="1"
                        model-id="Westmere E56xx/L56xx/X56xx (Nehalem-C)" min-level="11"
                        min-xlevel="2147483658"/>
      <cpuver:features on="" off="ace2 kvmclock ..."/>
    </cpuver:cpu>

``version`` is the user's version policy (``best``, ``latest``, ``vN``, ``X.Y.Z``: the only
attribute a user writes by hand), ``spec`` what was asked for, ``pinned`` the resolution's name,
``base`` the version QEMU starts from, ``model`` the name written in ``<model>``,
``catalog``/``build`` the catalog the pin was made with. ``<cpuver:features>`` holds the state of
every feature the ``<cpu>`` cannot name (libvirt's CPU map has no name for it); together with
the ``<cpu>``'s own features they are the whole pinned CPU, so the fingerprint of what a domain's
XML says can be computed from the XML alone, and an edited ``<cpu>`` no longer matches it.

Only the interpreter's own modules are used, not dataclasses, typing, html, json, hashlib or
ElementTree (they import ``re``, OpenSSL and more: together two thirds of the start-up time of
the libvirt hook, :mod:`cpuver.hook`, which reads this on every domain start). So the canonical
JSON is written with json's own C string encoder, SHA-256 is CPython's built-in one, and XML is
read with expat into a small :class:`Element` tree; the rest of cpuver passes ElementTree
elements, which answer the same questions.
"""

from __future__ import annotations

from xml.parsers import expat

try:  # CPython's own SHA-256: hashlib would load OpenSSL first (~3 ms of the hook)
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.12+ names it _sha2, others have hashlib
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]
try:  # the json module's own string encoder, without the json module (it imports re)
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    from json.encoder import encode_basestring_ascii as _json_string

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook ~3 ms
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Protocol

    class Node(Protocol):
        """What is read of an XML element: ElementTree's elements and :class:`Element`."""

        text: str | None

        def find(self, path: str) -> Node | None: ...
        def findtext(self, path: str) -> str | None: ...
        def get(self, key: str) -> str | None: ...
        def iterfind(self, path: str) -> Iterable[Node]: ...


NAMESPACE = "https://cpuver.dev/xmlns/1"
TAG = f"{{{NAMESPACE}}}cpu"
_SIGNATURE = f"{{{NAMESPACE}}}signature"
_FEATURES = f"{{{NAMESPACE}}}features"
SIGNATURE_ATTRIBUTES = (
    "vendor",
    "family",
    "model",
    "stepping",
    "model-id",
    "min-level",
    "min-xlevel",
)
"""QEMU's signature properties (as :data:`cpuver.models.SIGNATURE_FIELDS`)."""
_TEXT_FIELDS = ("vendor", "model-id")


def fingerprint(
    version: str,
    machine: str,
    on: Iterable[str],
    off: Iterable[str],
    signature: Mapping[str, str | int],
) -> str:
    """SHA-256 (hex) of the canonical JSON of a guest-visible CPU: a pure function of it."""
    digest: str = sha256(canonical_json(version, machine, on, off, signature).encode()).hexdigest()
    return digest


def canonical_json(
    version: str,
    machine: str,
    on: Iterable[str],
    off: Iterable[str],
    signature: Mapping[str, str | int],
) -> str:
    """``json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` of
    ``{"version", "machine", "features": {"on", "off"}, "signature"}``, written without the json
    module (see the module's note; tests/unit/test_pinmeta.py checks it is json.dumps's text)."""

    def names(items: Iterable[str]) -> str:
        return "[" + ",".join(_json_string(name) for name in sorted(set(items))) + "]"

    def value(item: str | int) -> str:
        return _json_string(item) if isinstance(item, str) else str(int(item))

    fields = ",".join(
        f"{_json_string(name)}:{value(signature[name])}" for name in sorted(SIGNATURE_ATTRIBUTES)
    )
    return (
        f'{{"features":{{"off":{names(off)},"on":{names(on)}}},'
        f'"machine":{_json_string(machine)},"signature":{{{fields}}},'
        f'"version":{_json_string(version)}}}'
    )


class Element:
    """An XML element as :func:`parse` reads it: enough of ElementTree's for this module."""

    __slots__ = ("attrib", "children", "tag", "text")

    def __init__(self, tag: str, attrib: dict[str, str]) -> None:
        self.tag = tag
        self.attrib = attrib
        self.children: list[Element] = []
        self.text: str | None = None

    def get(self, key: str) -> str | None:
        return self.attrib.get(key)

    def iterfind(self, path: str) -> list[Element]:
        found = [self]
        for step in _steps(path):
            found = [child for element in found for child in element.children if child.tag == step]
        return found

    def find(self, path: str) -> Element | None:
        found = self.iterfind(path)
        return found[0] if found else None

    def findtext(self, path: str) -> str | None:
        found = self.find(path)
        return None if found is None else found.text or ""


def _steps(path: str) -> Sequence[str]:
    """``metadata/{uri}cpu`` -> ``["metadata", "{uri}cpu"]`` (a ``/`` inside ``{}`` stays)."""
    steps, depth, start = [], 0, 0
    for index, char in enumerate(path):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            steps.append(path[start:index])
            start = index + 1
    steps.append(path[start:])
    return steps


def parse(text: str) -> Element:
    """The document's tree, read with expat alone (ElementTree imports re); raises
    ``xml.parsers.expat.ExpatError`` when it is not XML. No entity is expanded."""
    parser = expat.ParserCreate(namespace_separator="}")
    stack: list[Element] = []
    roots: list[Element] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        uri, _, local = name.rpartition("}")
        element = Element(f"{{{uri}}}{local}" if uri else local, attributes)
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def data(chunk: str) -> None:
        if stack:
            element = stack[-1]
            element.text = (element.text or "") + chunk

    def refuse(*_args: object) -> None:
        raise expat.ExpatError("document type declarations are not accepted")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.StartDoctypeDeclHandler = refuse
    parser.Parse(text, True)
    return roots[0]


class PinMetadata:
    """What cpuver's metadata element says (attributes as written; None when absent).

    A plain immutable class rather than a dataclass: see the module's note on start-up time.
    """

    __slots__ = (
        "accel",
        "base",
        "build",
        "catalog",
        "fingerprint",
        "machine",
        "model",
        "off",
        "on",
        "pinned",
        "policy",
        "signature",
        "spec",
    )

    def __init__(
        self,
        policy: str | None,
        fingerprint: str | None,
        spec: str | None = None,
        pinned: str | None = None,
        base: str | None = None,
        model: str | None = None,
        machine: str | None = None,
        accel: str | None = None,
        catalog: str | None = None,
        build: str | None = None,
        signature: Mapping[str, str | int] | None = None,
        on: frozenset[str] = frozenset(),
        off: frozenset[str] = frozenset(),
    ) -> None:
        values = {
            "policy": policy,
            "fingerprint": fingerprint,
            "spec": spec,
            "pinned": pinned,
            "base": base,
            "model": model,
            "machine": machine,
            "accel": accel,
            "catalog": catalog,
            "build": build,
            "signature": dict(signature) if signature is not None else None,
            "on": frozenset(on),
            "off": frozenset(off),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    policy: str | None
    fingerprint: str | None
    spec: str | None
    pinned: str | None
    base: str | None
    """The version QEMU starts from (the fingerprint's ``version``)."""
    model: str | None
    """The name written in ``<model>``."""
    machine: str | None
    accel: str | None
    catalog: str | None
    build: str | None
    signature: Mapping[str, str | int] | None
    on: frozenset[str]
    """Features the ``<cpu>`` cannot name that the pin has on."""
    off: frozenset[str]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"PinMetadata is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PinMetadata) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"PinMetadata(pinned={self.pinned!r}, fingerprint={self.fingerprint!r})"

    @property
    def complete(self) -> bool:
        """Written by ``cpuver domain pin``: enough to check the pin on any host."""
        return None not in (self.fingerprint, self.base, self.model, self.signature)


class MetadataError(ValueError):
    """cpuver's metadata element is malformed (``where``: the attribute or child)."""


def find(domain: Node) -> Node | None:
    return domain.find(f"metadata/{TAG}")


def read(element: Node) -> PinMetadata:
    """The metadata element's content; :class:`MetadataError` names a malformed part."""
    signature: dict[str, str | int] | None = None
    found = element.find(_SIGNATURE)
    if found is not None:
        signature = {}
        for name in SIGNATURE_ATTRIBUTES:
            value = found.get(name)
            if value is None:
                raise MetadataError(f"cpuver:signature/@{name}: missing")
            if name in _TEXT_FIELDS:
                signature[name] = value
            elif value.isdigit():
                signature[name] = int(value)
            else:
                raise MetadataError(f"cpuver:signature/@{name}: {value!r} is not a number")
    features = element.find(_FEATURES)
    on = off = frozenset[str]()
    if features is not None:
        on = frozenset((features.get("on") or "").split())
        off = frozenset((features.get("off") or "").split())
        if on & off:
            raise MetadataError(f"cpuver:features: {sorted(on & off)} both on and off")
    get = element.get
    return PinMetadata(
        policy=get("version"),
        fingerprint=get("fingerprint"),
        spec=get("spec"),
        pinned=get("pinned"),
        base=get("base"),
        model=get("model"),
        machine=get("machine"),
        accel=get("accel"),
        catalog=get("catalog"),
        build=get("build"),
        signature=signature,
        on=on,
        off=off,
    )


def write(meta: PinMetadata, indent: str = "") -> str:
    """The element as text (with its namespace declaration), children indented under ``indent``."""
    from html import escape  # only when writing (html.entities is large)

    attributes = [
        ("version", meta.policy),
        ("spec", meta.spec),
        ("pinned", meta.pinned),
        ("base", meta.base),
        ("model", meta.model),
        ("machine", meta.machine),
        ("accel", meta.accel),
        ("catalog", meta.catalog),
        ("build", meta.build),
        ("fingerprint", meta.fingerprint),
    ]
    head = f"<cpuver:cpu xmlns:cpuver='{NAMESPACE}'" + "".join(
        f" {name}='{escape(value)}'" for name, value in attributes if value is not None
    )
    children = []
    if meta.signature is not None:
        children.append(
            "<cpuver:signature"
            + "".join(
                f" {name}='{escape(str(meta.signature[name]))}'" for name in SIGNATURE_ATTRIBUTES
            )
            + "/>"
        )
    if meta.on or meta.off:
        on, off = " ".join(sorted(meta.on)), " ".join(sorted(meta.off))
        children.append(f"<cpuver:features on='{on}' off='{off}'/>")
    if not children:
        return head + "/>"
    inner = "".join(f"\n{indent}  {child}" for child in children)
    return f"{head}>{inner}\n{indent}</cpuver:cpu>"


_ON = ("require", "force")
_OFF = ("disable", "forbid")


def read_pin(domain: Node, names: Mapping[str, str]) -> tuple[PinMetadata, frozenset[str]]:
    """The pin a domain's XML states (its metadata and its ``<cpu>``) and the features it has on.

    ``names`` maps libvirt's spelling of a feature to QEMU's where they differ. Raises
    :class:`MetadataError` saying why the ``<cpu>`` is not the pin the metadata records (edited
    after it was pinned), or why the metadata is not a pin.
    """
    element = find(domain)
    if element is None:
        raise MetadataError("the domain has no cpuver metadata")
    meta = read(element)
    if not meta.complete or meta.signature is None or meta.base is None:
        raise MetadataError("cpuver's metadata records no pin (no fingerprint, base or signature)")
    cpu = domain.find("cpu")
    if cpu is None:
        raise MetadataError("the domain has no <cpu>")
    mode = cpu.get("mode") or "custom"
    model_element = cpu.find("model")
    if mode != "custom" or model_element is None:
        raise MetadataError(f"its <cpu> is mode {mode} without the pinned model {meta.model}")
    model = (model_element.text or "").strip()
    if model != meta.model:
        raise MetadataError(f"its <cpu> names model {model}, the pin {meta.model}")
    vendor = model_element.get("vendor_id")
    if vendor is not None and vendor != meta.signature["vendor"]:
        raise MetadataError(f"its <cpu> sets vendor {vendor}, the pin {meta.signature['vendor']}")
    on, off = set(meta.on), set(meta.off)
    for feature in cpu.iterfind("feature"):
        spelled = feature.get("name") or ""
        name = names.get(spelled, spelled)
        policy = feature.get("policy") or "require"
        if policy in _ON:
            on.add(name)
        elif policy in _OFF:
            off.add(name)
        else:
            raise MetadataError(f"its <cpu> has feature {spelled} as {policy}, not on or off")
    os_type = domain.find("os/type")
    machine = os_type.get("machine") if os_type is not None else None
    if on & off or machine is None:
        raise MetadataError("its <cpu> no longer matches the pin's fingerprint")
    if fingerprint(meta.base, machine, on, off, meta.signature) != meta.fingerprint:
        raise MetadataError(
            f"its <cpu> no longer matches the fingerprint of its pin {meta.pinned or meta.base}"
            " (changed behind cpuver's back?)"
        )
    return meta, frozenset(on)


def mismatch(domain: Node, names: Mapping[str, str]) -> str | None:
    """Why :func:`read_pin` refuses the domain; None when its ``<cpu>`` is its pin."""
    try:
        read_pin(domain, names)
    except MetadataError as err:
        return str(err)
    return None
