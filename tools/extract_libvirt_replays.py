"""Keep the QMP replies libvirt recorded on real hosts that the replay tests need, and no more.

libvirt's source package records, for many QEMU releases, what QEMU answered on a real Intel or
AMD machine: ``tests/qemucapabilitiesdata/caps_<release>_x86_64.replies`` (every QMP exchange of
libvirt's probe: a KVM process, then a TCG one) with the capabilities cache libvirt built from it
(``caps_*.xml``), and ``tests/cputestdata/x86_64-cpuid-<CPU>.json`` (a host's expansion and
``query-cpu-definitions`` under KVM). This script keeps of each ``.replies`` only the CPU
exchanges (``qmp_capabilities``, ``query-version``, ``query-kvm``, ``query-cpu-definitions``,
``query-cpu-model-expansion``), one message a line; the ``.xml`` and ``.json`` files are kept as
they are; everything gzip-compressed (deterministically, no timestamp). It writes
``tests/data/libvirt/replays.json``: for each fixture its origin (package, path, sha256 of the
original), the QEMU release, the host CPU and the machine type its ``query-cpu-definitions`` was
asked under.

Usage: python tools/extract_libvirt_replays.py OUTPUT_DIR SPEC...
       SPEC = PACKAGE_DIR:RELATIVE_PATH[:RELEASE:MACHINE]  (RELEASE/MACHINE for cputestdata)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

KEEP = frozenset(
    {
        "qmp_capabilities",
        "query-version",
        "query-kvm",
        "query-cpu-definitions",
        "query-cpu-model-expansion",
    }
)


def stream(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return found
        value, position = decoder.raw_decode(text, position)
        found.append(value)


def cpu_exchanges(text: str) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    pending = False
    for message in stream(text):
        if "execute" in message:
            pending = message["execute"] in KEEP
            if pending:
                kept.append(message)
        elif pending:
            kept.append(message)
            pending = False
    return kept


def slug(model_id: str) -> str:
    words = re.sub(r"\((R|TM|tm)\)|@.*|\bCPU\b|\bProcessor\b|[0-9]+-Core|\bwith\b.*", " ", model_id)
    return "-".join(w.lower() for w in re.findall(r"[A-Za-z0-9]+", words))


def host_model_id(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        result = message.get("return")
        if isinstance(result, dict) and "model" in result:
            model_id = result["model"]["props"].get("model-id")
            if isinstance(model_id, str):
                return model_id.strip()
    return ""


def write_gzip(path: Path, data: bytes) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(data)


def main(argv: list[str]) -> int:
    output = Path(argv[0])
    output.mkdir(parents=True, exist_ok=True)
    manifest = []
    for spec in argv[1:]:
        package_dir, relative, *extra = spec.split(":")
        origin = Path(package_dir) / relative
        package = Path(package_dir).name
        raw = origin.read_bytes()
        entry: dict[str, Any] = {
            "origin": f"{package} {relative}",
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        if relative.endswith(".replies"):
            kept = cpu_exchanges(raw.decode())
            version = next(m["return"] for m in kept if "qemu" in m.get("return", {}))
            release = "{major}.{minor}.{micro}".format(**version["qemu"])
            name = f"qemu-{release}-{slug(host_model_id(kept))}"
            text = "\n".join(json.dumps(m, separators=(",", ":")) for m in kept) + "\n"
            write_gzip(output / f"{name}.replies.gz", text.encode())
            entry.update(replies=f"{name}.replies.gz", release=release, machine="none")
            caps = origin.with_suffix(".xml")
            if caps.is_file():
                write_gzip(output / f"{name}.xml.gz", caps.read_bytes())
                entry["caps"] = f"{name}.xml.gz"
                entry["caps_sha256"] = hashlib.sha256(caps.read_bytes()).hexdigest()
        else:
            release, machine = extra
            kept = stream(raw.decode())
            name = f"qemu-{release}-{slug(host_model_id(kept)) or Path(relative).stem}"
            if "cpuid" in relative:
                name = f"qemu-{release}-{Path(relative).stem.removeprefix('x86_64-cpuid-').lower()}"
            write_gzip(output / f"{name}.json.gz", raw)
            entry.update(replies=f"{name}.json.gz", release=release, machine=machine)
        entry["host"] = host_model_id(kept)
        manifest.append(entry)
        print(f"{entry['replies']}: {entry['host']}", file=sys.stderr)
    manifest.sort(key=lambda e: ([int(p) for p in e["release"].split(".")], e["replies"]))
    (output / "replays.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
