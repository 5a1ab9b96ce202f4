"""Catalog use cases: which catalog (bundled, derived, a directory, overlays), importing one from
QEMU, and what a catalog says about a model (history, revisions, differences, the family report).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuver.catalog import Catalog, NameKind
from cpuver.catalog.files import BUNDLED, bundled_dir, load
from cpuver.catalog.overlay import apply_overlay
from cpuver.catalog.releases import catalog_for_release
from cpuver.errors import NotRunnable, QemuError, UnknownRelease
from cpuver.models import IDENTITY_FIELDS, LEVEL_FIELDS, SIGNATURE_FIELDS, version_number
from cpuver.resolve import Resolution, Resolver

if TYPE_CHECKING:
    pass


_RELEASE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?")


@cache
def _bundled(release: str) -> Catalog:
    return load(bundled_dir(release), source=f"bundled qemu-{release}")


def open_catalog(
    release: str | None = None, directory: Path | None = None, overlays: Sequence[Path] = ()
) -> Catalog:
    """The catalog to work with: a directory, a bundled release (default: the newest), overlays."""
    catalog = load(directory) if directory is not None else _catalog_for(release or BUNDLED[-1])
    for overlay in overlays:
        catalog = apply_overlay(catalog, overlay)
    return catalog


def _catalog_for(release: str) -> Catalog:
    if not _RELEASE.fullmatch(release):  # ASCII digits only, short: int() takes all of them
        raise UnknownRelease(release, BUNDLED)
    parts = release.split(".")
    major_minor = ".".join(parts[:2])
    if major_minor in BUNDLED:
        return _bundled(major_minor)
    return catalog_for_release(release)


@dataclass(frozen=True, slots=True)
class Difference:
    gained: tuple[str, ...]
    lost: tuple[str, ...]
    signature: tuple[tuple[str, Any, Any], ...]

    @property
    def identity_changed(self) -> bool:
        """True when a guest OS may see a different CPU (vendor/family/model/stepping/model-id)."""
        return any(name in IDENTITY_FIELDS for name, _old, _new in self.signature)


def difference(a: Resolution, b: Resolution) -> Difference:
    sig_a, sig_b = a.definition.signature.as_dict(), b.definition.signature.as_dict()
    return Difference(
        gained=tuple(sorted(b.definition.features - a.definition.features)),
        lost=tuple(sorted(a.definition.features - b.definition.features)),
        signature=tuple((k, sig_a[k], sig_b[k]) for k in SIGNATURE_FIELDS if sig_a[k] != sig_b[k]),
    )


@dataclass(frozen=True, slots=True)
class FamilyReport:
    model: str
    bare: str
    best: str | None
    blockers: tuple[tuple[str, tuple[str, ...]], ...]


def report(resolver: Resolver) -> list[FamilyReport]:
    """Per model family: what the bare name means, the best runnable version, what blocks newer."""
    out = []
    for model in resolver.catalog.models.values():
        bare = resolver.resolve(model.name).name
        try:
            best: Resolution | None = resolver.resolve(f"{model.name},version=best")
        except NotRunnable as err:
            out.append(FamilyReport(model.name, bare, None, tuple(err.blockers.items())))
            continue
        assert best is not None
        newer = tuple((n, m) for n, m in best.blockers if version_number(n) > best.version.number)
        out.append(FamilyReport(model.name, bare, best.name, newer))
    return out


def history(catalog: Catalog, model_name: str) -> list[dict[str, Any]]:
    """A model's versions as the seed writes its history: what each added/removed, when, why."""
    model = catalog.model(model_name)
    rows = []
    previous = None
    for version in model.versions:
        row: dict[str, Any] = {
            "version": version.name,
            "since": version.since,
            "aliases": list(version.aliases),
            "note": version.note,
        }
        if previous is None:
            row["features"] = sorted(version.definition.features)
        else:
            row["added"] = sorted(version.definition.features - previous.features)
            row["removed"] = sorted(previous.features - version.definition.features)
            old, new = previous.signature.as_dict(), version.definition.signature.as_dict()
            row["signature"] = {k: new[k] for k in SIGNATURE_FIELDS if old[k] != new[k]}
        rows.append(row)
        previous = version.definition
    return rows


def revisions(catalog: Catalog, model_name: str) -> list[tuple[str, str]]:
    """How the bare name was defined under older machine types (one line per change)."""
    model = catalog.model(model_name)
    ref = catalog.lookup(model.name)
    assert ref.kind is NameKind.BARE
    rows: list[tuple[str, str]] = []
    previous = None
    machines = sorted(
        (m for m in catalog.machines.values() if m.release and m.name.startswith("pc-i440fx-")),
        key=lambda m: m.release or (0, 0),
    )
    for machine in machines:
        definition = catalog.effective(ref, machine, "tcg")
        if previous is not None and definition != previous[1]:
            rows.append((previous[0], _describe(previous[1], definition)))
        previous = (machine.name, definition)
    return rows


def signature_text(field: str, value: Any) -> str:
    """A signature value as people read it: CPUID levels in hex (``0x8000000a``)."""
    return hex(value) if field in LEVEL_FIELDS and isinstance(value, int) else str(value)


def _describe(old: Any, new: Any) -> str:
    gained = sorted(new.features - old.features)
    lost = sorted(old.features - new.features)
    sig_old, sig_new = old.signature.as_dict(), new.signature.as_dict()
    parts = [f"+{f}" for f in gained] + [f"-{f}" for f in lost]
    parts += [
        f"{k}={signature_text(k, sig_new[k])}" for k in SIGNATURE_FIELDS if sig_old[k] != sig_new[k]
    ]
    return " ".join(parts)


def import_catalog(binary: Path, output: Path, progress: Any = None) -> Catalog:
    from cpuver.catalog.files import dump
    from cpuver.host.qemu import QemuInstall
    from cpuver.importer import import_catalog as run_import

    if not binary.exists():
        raise QemuError(f"no QEMU binary at {binary}")
    catalog = run_import(QemuInstall(binary), progress)
    dump(catalog, output)
    return catalog
