"""libvirt ``<cpu>`` XML for a resolved definition (custom mode, exact match, full check).

The model is the versioned name and every feature that differs from it is explicit, so libvirt
passes QEMU exactly the pinned CPU and refuses to start rather than silently drop a feature.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from cpuver.resolve import Resolution


def cpu_xml(resolution: Resolution) -> str:
    changes = resolution.changes
    lines = [
        "<cpu mode='custom' match='exact' check='full'>",
        f"  <model fallback='forbid'>{resolution.version.name}</model>",
    ]
    vendor = dict(changes.signature).get("vendor")
    if isinstance(vendor, str):
        lines.append(f"  <vendor>{vendor}</vendor>")
    lines += [
        f"  <feature policy='require' name={quoteattr(name)}/>" for name in sorted(changes.on)
    ]
    lines += [
        f"  <feature policy='disable' name={quoteattr(name)}/>" for name in sorted(changes.off)
    ]
    lines.append("</cpu>")
    return "\n".join(lines)
