"""libvirt ``<cpu>`` XML for a resolved definition (custom mode, exact match, full check).

The model is the versioned name and every feature that differs from it is explicit, so libvirt
passes QEMU exactly the pinned CPU and refuses to start rather than silently drop a feature.

Features are written with libvirt's own names (``pclmuldq``, ``lahf_lm``: libvirt translates them
to QEMU's). What libvirt's ``<cpu>`` cannot say is kept visible as a comment inside ``<cpu>``
(``<!-- not expressible in libvirt: NAME=on -->``), so the rest stays valid XML libvirt accepts:
a feature libvirt's CPU map has no name for (libvirt would reject the whole element), and a
signature change other than the vendor (family, model, stepping, model-id, level: a legacy
revision's stepping, for example). A domain started from such XML does not get the exact pinned
CPU; ``inexpressible`` lists what is lost.
"""

from __future__ import annotations

from html import escape

from cpuver.features import FeatureTable
from cpuver.models import SignatureValue
from cpuver.resolve import Resolution

_COMMENT = "not expressible in libvirt"


def cpu_xml(resolution: Resolution) -> str:
    table = FeatureTable.bundled()
    changes = resolution.changes
    lines = [
        "<cpu mode='custom' match='exact' check='full'>",
        f"  <model fallback='forbid'>{escape(resolution.version.name)}</model>",
    ]
    vendor = dict(changes.signature).get("vendor")
    if isinstance(vendor, str):
        lines.append(f"  <vendor>{escape(vendor)}</vendor>")
    lines += [_comment(item) for item in inexpressible(resolution)]
    for policy, names in (("require", changes.on), ("disable", changes.off)):
        spellings = sorted(filter(None, map(table.libvirt_name, names)))
        lines += [f"  <feature policy='{policy}' name='{escape(name)}'/>" for name in spellings]
    lines.append("</cpu>")
    return "\n".join(lines)


def inexpressible(resolution: Resolution) -> tuple[str, ...]:
    """What ``cpu_xml`` can only comment on, as ``NAME=VALUE`` (QEMU names): empty when exact."""
    table = FeatureTable.bundled()
    changes = resolution.changes
    signature = [
        f"{field}={_value(value)}" for field, value in changes.signature if field != "vendor"
    ]
    features = [
        f"{name}={state}"
        for names, state in ((changes.on, "on"), (changes.off, "off"))
        for name in sorted(names)
        if table.libvirt_name(name) is None
    ]
    return (*signature, *features)


def _value(value: SignatureValue) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _comment(text: str) -> str:
    # "--" may not occur inside an XML comment.
    while "--" in text:
        text = text.replace("--", "- -")
    return f"  <!-- {_COMMENT}: {text} -->"
