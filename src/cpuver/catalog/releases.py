"""Catalogs for every QEMU release from 4.1 to 10.2 and 11.1, imported or derived.

For 5.2.x, 7.2.x, 10.0.x and 11.1.x this is the catalog imported from a real build (Debian's 5.2,
7.2.22, 10.0.13 and 11.1.3). Every other release is derived from the nearest newer import (4.1 …
5.1 from 5.2, 6.0 … 7.1 from 7.2, 8.0 … 9.2 from 10.0, 10.1 and 10.2 from 11.1), cut back with
QEMU's history, with what that import no longer has taken from the nearest older import (models
QEMU removed, old machine types). A derived catalog's ``release`` is ``X.Y.0`` (stable releases
are taken to be X.Y.0) and its ``build`` says how it was made. 11.0 has neither an import nor
history facts (they end at 10.2.0) and is not described.

Facts used (``data/qemu-history.json``, extracted from the shared QEMU facts by
``tools/extract_history.py``):

- ``since``: the first release of every versioned name. A derived catalog keeps the base's
  versions first released at or before the release; a model with no version left is dropped.
- ``as-released``: what QEMU registered for the few versions edited after their release (alias,
  note and props at each release). Before an edit the version is put back as it was: a prop the
  edit added takes the value of the version before (Skylake-Client-v3 and Skylake-Server-v3 had no
  ``model-id`` of their own before 5.0.0), a changed one its old value; alias and note are the
  ones of that release.
- ``props`` of versions first released after the newest bundled catalog, applied cumulatively on
  the version before: ``on``/``off`` props are features (a name not in the feature table is a
  :class:`~cpuver.errors.CatalogError`), ``model-id``/``vendor``/``family``/``model``/``stepping``
  are the signature, internal switches (``x-…``, e.g. ``x-force-cpuid-0x1f``), other values and
  cache models (``cache-info``) are not part of a definition: they are ignored and counted in
  ``build``.
- the base definition of models first released after the newest bundled catalog (EPYC-Turin):
  signature, ``min-level``/``min-xlevel`` and base features; as QEMU does, ``hypervisor`` is added,
  and VMX/SVM sub-features count only when ``vmx``/``svm`` is on (what a static expansion shows).
- ``min-level``/``min-xlevel`` of a built version: the version before's (the model's base level
  for a new model), raised to the highest CPUID leaf of any enabled feature (``0x8000000a`` for
  ``svm``), which is how QEMU's automatic levels reproduce every version of both bundled builds.
- removed models (Icelake-Client, removed in 7.1.0): the facts give their versions' props but not
  their base definition, so releases before the removal leave them out, which ``build`` records.
- machine types: ``pc-*-X.Y`` newer than the release are dropped, and so are old ones QEMU had
  removed by then (pc-*-2.4 and 2.5 after 10.0.0; the facts' machine-type lifetimes), ``pc``/``q35``
  move to the newest remaining ones, others (``none``, ``isapc``, ``microvm``) stay; under ``none``
  a bare name meant the latest version before 5.0.0 (``default_cpu_version`` in 4.1 and 4.2).

Also applied: QEMU's per-release changes that no version records (``_BASE_EDITS``: 6.1.0's
Cooperlake had avx-vnni, qemu64 was 6/6/3 before 6.1; KVM kept SVM features with svm off before
5.1), the feature names each release had (the feature table's first release), and feature
dependencies on versions built from props (VMX/SVM features need vmx/svm).

Checked against real builds: 11.1.3 cut back to 10.0 gives every 10.0.13 definition, 10.0.13 cut
back to 7.2 every 7.2.22 one, 7.2.22 cut back to 5.2 every 5.2 one (tests/unit/test_releases.py);
and every derived release's answers against libvirt's recordings of it (tests/oracle/
test_replays.py).

Known limits of a derived catalog:

- Everything else comes from the base build: machine types' compat properties (no CPU-model
  compat was added after 4.1, only internal global switches, so definitions are not affected),
  machine types neither import has (``x-remote`` for 4.x/5.x), deprecation flags of machine
  types, accelerator defaults (except KVM's SVM handling before 5.1, see ``_accelerators``) and
  per-version KVM level adjustments.
- What TCG offers: QEMU's own answer for that release where libvirt recorded one
  (``data/tcg-offers.json``, 4.1 … 9.2); for 10.1 and 10.2 what both 10.0.13 and 11.1.3 offer
  plus QEMU's TCG rules (what 11.1 offers beyond that may have come in 10.1, 10.2 or 11.x).
- Versions kept from the base are the base build's definitions: distribution backports stay (for
  10.1 and later Debian's YongFeng-v2, which upstream first released in 10.1.0, is the base's).
- A version put back to before an edit keeps the base's ``min-level``/``min-xlevel``.
- Cache models, ``avx10-version`` and internal switches are not modelled at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from cpuver.catalog import Accelerator, Catalog
from cpuver.catalog.files import BUNDLED, bundled_dir, load
from cpuver.errors import CatalogError, UnknownFeature, UnknownRelease
from cpuver.features import CpuidBit, FeatureSet, FeatureTable
from cpuver.models import (
    BareRule,
    Definition,
    Delta,
    MachineType,
    Model,
    Signature,
    SignatureValue,
    Version,
    machine_release,
    split_versioned_name,
)

HISTORY = "qemu-history.json"

_RELEASE = re.compile(r"^(?P<major>[0-9]+)\.(?P<minor>[0-9]+)(?:\.(?P<micro>[0-9]+))?$")
_SIGNATURE_PROPS: Mapping[str, type] = {
    "vendor": str,
    "model-id": str,
    "family": int,
    "model": int,
    "stepping": int,
}
_UNNAMED_BIT = re.compile(r"^FEAT_\w+\[bit[0-9]+\]$")
_NONE_LATEST_BEFORE = (5, 0, 0)
"""``-machine none`` resolved bare names to the latest version in 4.1 and 4.2 (ad18392892)."""
_MACHINE_REMOVALS: tuple[tuple[tuple[int, int], Release], ...] = (
    ((1, 7), (8, 1, 0)),  # pc-i440fx-1.4 … 1.7: last in 8.1.0
    ((2, 3), (9, 0, 0)),  # pc-i440fx-2.0 … 2.3: last in 9.0.0
    ((2, 5), (10, 0, 0)),  # pc-i440fx/pc-q35-2.4, 2.5: last in 10.0.0
)
"""Old pc machine types (up to X.Y) and the last release that had them (qemu-machine-compat.md)."""
_SVM_LEVEL = 0x8000000A
_EXTENDED = 0x80000000
_HYPERVISOR_RANGE = 0x40000000

Release = tuple[int, int, int]


def supported_releases() -> tuple[str, ...]:
    """Every QEMU release cpuver can describe, as ``X.Y`` (oldest first): those of QEMU's
    history and every imported one (11.1 is newer than the history)."""
    known = {_key(release) for release in _history()["releases"]}
    known |= {_key(f"{short}.0") for short in BUNDLED}
    return tuple(f"{major}.{minor}" for major, minor, _micro in sorted(known))


def catalog_for_release(release: str) -> Catalog:
    """The catalog of QEMU ``release`` (``X.Y`` or ``X.Y.Z``, 4.1 … 10.2, 11.1)."""
    target = _parse(release)
    short = f"{target[0]}.{target[1]}"
    if short in BUNDLED:
        return _bundled(short)
    return _derived(target)


# ---------------------------------------------------------------------------------- lookups


@cache
def _bundled_data(name: str) -> dict[str, Any]:
    """One of the catalog package's JSON data files (the history, TCG's recorded offers)."""
    resource = resources.files("cpuver.catalog").joinpath("data", name)
    try:
        data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CatalogError(name, f"unreadable: {err}") from err
    return data


def _history() -> dict[str, Any]:
    return _bundled_data(HISTORY)


@cache
def _bundled(short: str) -> Catalog:
    return load(bundled_dir(short), source=f"bundled qemu-{short}")


def _key(release: str) -> Release:
    major, minor, micro = (int(part) for part in release.split("."))
    return major, minor, micro


def _parse(release: str) -> Release:
    known = [_key(f"{r}.0") for r in supported_releases()]
    match = _RELEASE.match(release.strip())
    if match is not None:
        target = (int(match["major"]), int(match["minor"]), 0)
        if target in known:
            return target
    supported = supported_releases()
    history_end = _history()["releases"][-1].removesuffix(".0")
    later = [r for r in supported if _key(f"{r}.0") > _key(f"{history_end}.0")]
    error = UnknownRelease(release, supported)
    error.args = (
        f"unknown QEMU release {release!r}: cpuver describes QEMU {supported[0]} to "
        f"{history_end}"
        + (f" and {', '.join(later)}" if later else "")
        + f" ({', '.join(supported)}); QEMU's history ends at {history_end}, so releases "
        "after it are known only as imported",
    )
    raise error


def _base_for(target: Release) -> str:
    """The nearest bundled catalog: the oldest newer one, else the newest."""
    newer = [short for short in BUNDLED if _key(f"{short}.0") >= target]
    return min(newer, key=lambda s: _key(f"{s}.0")) if newer else BUNDLED[-1]


def _older_for(target: Release, base: str) -> str | None:
    """The nearest bundled catalog older than ``target`` (other than ``base``), if any."""
    older = [s for s in BUNDLED if _key(f"{s}.0") < target and s != base]
    return max(older, key=lambda s: _key(f"{s}.0")) if older else None


@cache
def _derived(target: Release) -> Catalog:
    base = _base_for(target)
    older = _older_for(target, base)
    return derive(
        _bundled(base),
        target,
        _history(),
        FeatureTable.bundled(),
        _bundled(older) if older is not None else None,
    )


# ---------------------------------------------------------------------------------- deriving


@dataclass
class _Notes:
    """What a derivation did, for the catalog's ``build`` line."""

    dropped: int = 0
    restored: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    older_models: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    older_machines: list[str] = field(default_factory=list)

    def ignore(self, what: str) -> None:
        self.ignored[what] = self.ignored.get(what, 0) + 1


def derive(
    base: Catalog,
    target: Release,
    history: Mapping[str, Any],
    table: FeatureTable,
    older: Catalog | None = None,
) -> Catalog:
    """The catalog of upstream QEMU ``target`` (X.Y.0), derived from ``base`` and ``history``.

    ``older``, an imported catalog of a release before ``target``, gives what ``base`` no longer
    has: models QEMU removed between the two (Icelake-Client, removed in 7.1.0) and old machine
    types (pc-*-2.6 … 5.1 are gone in 11.1).
    """
    notes = _Notes()
    base_release = _base_release(base)
    models: dict[str, Model] = {}
    for model in base.models.values():
        versions = _kept_versions(model, target, base_release, history, table, notes)
        if versions:
            models[model.name] = Model(model.name, versions, model.deprecated)
    if older is not None:
        _add_removed_models(models, older, target, history, table, notes)
    _add_missing_versions(models, base, target, history, table, notes)
    _edit_base_definitions(models, target, notes)
    machines = _machines(base, target, older, notes)
    known = _known_features(base, target, table)
    accelerators = _accelerators(base, target, table, notes)
    tcg_offers = _tcg_offers(base, older, target, known, notes)
    release = ".".join(str(part) for part in target)
    build = _build_line(base, release, machines, target, notes, older)
    return Catalog(
        release=release,
        build=build,
        models=dict(sorted(models.items())),
        machines=machines,
        accelerators=accelerators,
        tcg_offers=tcg_offers,
        known_features=known,
        source=f"derived qemu-{target[0]}.{target[1]} from {base.source}",
    )


def _base_release(base: Catalog) -> Release:
    parts = (*base.release_tuple, 0, 0)[:3]
    return parts[0], parts[1], parts[2]


def _since(name: str, history: Mapping[str, Any], fallback: str | None) -> Release:
    entry = history["versions"].get(name)
    since = entry["since"] if entry is not None else fallback
    if since is None:
        # QEMU's history is complete up to its last release: a version it does not know (one of
        # the 11.1 import's newest) came later.
        last = max(_key(release) for release in history["releases"])
        return last[0], last[1], last[2] + 1
    return _key(since)


def _add_removed_models(
    models: dict[str, Model],
    older: Catalog,
    target: Release,
    history: Mapping[str, Any],
    table: FeatureTable,
    notes: _Notes,
) -> None:
    """Models QEMU removed after ``target`` (the base lacks them), as ``older`` imported them."""
    removed = {
        name: _key(entry["removed"]) for name, entry in history.get("removed-models", {}).items()
    }
    older_release = _base_release(older)
    for name, removal in sorted(removed.items()):
        if removal <= target or name in models or name not in older.models:
            continue
        versions = _kept_versions(older.models[name], target, older_release, history, table, notes)
        if versions:
            models[name] = Model(name, versions, older.models[name].deprecated)
            notes.older_models.append(f"{name} ({len(versions)} versions)")


def _kept_versions(
    model: Model,
    target: Release,
    base_release: Release,
    history: Mapping[str, Any],
    table: FeatureTable,
    notes: _Notes,
) -> tuple[Version, ...]:
    """The base's versions that existed at ``target``, as they were registered then."""
    kept: list[Version] = []
    previous_base: Definition | None = None
    for version in model.versions:
        if _since(version.name, history, version.since) > target:
            notes.dropped += 1
            previous_base = version.definition
            continue
        if len(kept) != version.number - 1:
            raise CatalogError(
                HISTORY, f"{version.name} existed in {_show(target)} but an earlier version not"
            )
        definition = version.definition
        if kept and previous_base is not None:
            # Chain on the derived version before, so a put-back edit carries forward.
            definition = kept[-1].definition.apply(Delta.between(previous_base, definition))
        previous_base = version.definition
        entry = history["versions"].get(version.name, {})
        registrations = entry.get("as-released")
        if registrations:
            version = _as_registered(
                version, definition, kept, registrations, target, base_release, table, notes
            )
        elif definition != version.definition:
            version = replace(version, definition=definition)
        kept.append(version)
    return tuple(kept)


def _registration_at(registrations: Sequence[Mapping[str, Any]], release: Release) -> Any:
    current = None
    for registration in registrations:
        if _key(registration["release"]) <= release:
            current = registration
    return current


def _as_registered(
    version: Version,
    definition: Definition,
    kept: Sequence[Version],
    registrations: Sequence[Mapping[str, Any]],
    target: Release,
    base_release: Release,
    table: FeatureTable,
    notes: _Notes,
) -> Version:
    """``version`` as QEMU registered it at ``target``, given how the base build has it."""
    then = _registration_at(registrations, target)
    now = _registration_at(registrations, base_release)
    if then is None or now is None:
        return replace(version, definition=definition)
    where = f"{HISTORY}: versions.{version.name}.as-released"
    then_props = {name: value for name, value in then["props"]}
    now_props = {name: value for name, value in now["props"]}
    changes: list[tuple[str, str]] = []
    for name in sorted(then_props.keys() | now_props.keys()):
        if then_props.get(name) == now_props.get(name):
            continue
        if name in then_props:
            changes.append((name, then_props[name]))
            continue
        # The prop came with a later edit: before it, the version before decided.
        if not kept:
            raise CatalogError(where, f"cannot undo {name!r} on a first version")
        changes.append((name, _value_in(kept[-1].definition, name, table, where)))
    if changes:
        definition = definition.apply(_props_delta(changes, table, where, _Notes()))
        notes.restored.append(version.name)
    alias = then.get("alias")
    return replace(
        version,
        definition=definition,
        aliases=(alias,) if alias else (),
        note=then.get("note"),
    )


def _value_in(definition: Definition, prop: str, table: FeatureTable, where: str) -> str:
    """The value ``definition`` has for ``prop``, written as a prop value."""
    kind = _SIGNATURE_PROPS.get(prop)
    if kind is not None:
        return str(definition.signature.as_dict()[prop])
    try:
        canonical = table.canonical(prop)
    except UnknownFeature as err:
        raise CatalogError(where, str(err)) from err
    return "on" if canonical in definition.features else "off"


def _props_delta(
    props: Sequence[Sequence[str]], table: FeatureTable, where: str, notes: _Notes
) -> Delta:
    """QEMU's props of one version as a delta; what is no feature or signature is counted."""
    delta = Delta()
    for index, (name, value) in enumerate(props):
        place = f"{where}[{index}]"
        kind = _SIGNATURE_PROPS.get(name)
        if kind is not None:
            parsed: SignatureValue = value if kind is str else int(value, 0)
            delta = delta.then(Delta(signature=((name, parsed),)))
        elif value in ("on", "off") and name.startswith("x-"):
            notes.ignore(name)
        elif value in ("on", "off"):
            try:
                canonical = table.canonical(name)
            except UnknownFeature as err:
                raise CatalogError(place, str(err)) from err
            on = frozenset({canonical}) if value == "on" else frozenset()
            delta = delta.then(Delta(on, frozenset({canonical}) - on))
        else:
            notes.ignore(name)
    return delta


def _add_missing_versions(
    models: dict[str, Model],
    base: Catalog,
    target: Release,
    history: Mapping[str, Any],
    table: FeatureTable,
    notes: _Notes,
) -> None:
    """Versions that existed at ``target`` but not in the base build (nor taken from an older
    one): built from the facts."""
    in_base = {version.name for model in base.models.values() for version in model.versions}
    in_base |= {version.name for model in models.values() for version in model.versions}
    removed = {
        name: _key(entry["removed"]) for name, entry in history.get("removed-models", {}).items()
    }
    wanted: dict[str, list[tuple[int, str]]] = {}
    for name, entry in history["versions"].items():
        split = split_versioned_name(name)
        if split is None or name in in_base or _key(entry["since"]) > target:
            continue
        if split[0] in removed and removed[split[0]] <= target:
            continue
        wanted.setdefault(split[0], []).append((split[1], name))
    model_facts = history.get("models", {})
    for model_name, numbered in sorted(wanted.items()):
        entries = [history["versions"][name] for _, name in sorted(numbered)]
        buildable = all("props" in entry for entry in entries) and (
            model_name in models or model_name in model_facts
        )
        if not buildable:
            why = f"removed in {_show(removed[model_name])}" if model_name in removed else ""
            count = f"{len(entries)} version{'s' if len(entries) != 1 else ''}"
            notes.left_out.append(f"{model_name} ({count}{', ' + why if why else ''})")
            continue
        models[model_name] = _extended(
            models.get(model_name), model_name, sorted(numbered), history, table, notes
        )


def _extended(
    model: Model | None,
    name: str,
    numbered: Sequence[tuple[int, str]],
    history: Mapping[str, Any],
    table: FeatureTable,
    notes: _Notes,
) -> Model:
    versions = list(model.versions) if model is not None else []
    for number, version_name in numbered:
        if number != len(versions) + 1:
            raise CatalogError(HISTORY, f"{version_name} has no version {len(versions) + 1}")
        entry = history["versions"][version_name]
        where = f"{HISTORY}: versions.{version_name}.props"
        if versions:
            previous = versions[-1].definition
        else:
            previous = _base_definition(name, history["models"][name], table, notes)
        definition = _with_levels(
            _dependencies(previous.apply(_props_delta(entry["props"], table, where, notes)), table),
            table,
            previous.signature,
        )
        if entry.get("cache-info"):
            notes.ignore("cache model")
        alias = entry.get("alias")
        versions.append(
            Version(
                model=name,
                number=number,
                definition=definition,
                aliases=(alias,) if alias else (),
                note=entry.get("note"),
                since=entry["since"],
                deprecated=model.deprecated if model is not None else False,
            )
        )
        notes.built.append(version_name)
    return Model(name, tuple(versions), model.deprecated if model is not None else False)


_DEPENDENCIES = (
    ("vmx", "FEAT_VMX_"),
    ("svm", "FEAT_SVM"),
    ("arch-capabilities", "FEAT_ARCH_CAPABILITIES"),
    ("core-capability", "FEAT_CORE_CAPABILITY"),
    ("pdcm", "FEAT_PERF_CAPABILITIES"),
)
"""QEMU's feature_dependencies (target/i386/cpu.c, 5.2 to 10.0): a feature word exists only while
the bit it depends on is on (vmx -> VMX controls, svm -> SVM features, arch-capabilities ->
its MSR bits ...); x86_cpu_expand_features drops it otherwise, so a static expansion never
shows it."""


def _dependencies(definition: Definition, table: FeatureTable) -> Definition:
    """``definition`` without the features whose parent bit is off."""
    dropped = frozenset(
        feature
        for parent, word in _DEPENDENCIES
        if parent not in definition.features
        for feature in definition.features
        if _word(table, feature).startswith(word)
    )
    return (
        Definition(definition.signature, definition.features - dropped) if dropped else definition
    )


_SVM_MASKED_SINCE = (5, 1, 0)
"""Before 5.1 a model kept its SVM features under KVM with svm off (KVM's default): only "i386: Mask
SVM features if nested SVM is disabled" (Eduardo Habkost, 2020-06, merged for 5.1) made svm a
feature dependency of them. libvirt's recorded answers of QEMU 4.1, 4.2 and 5.0 on an Intel host
refuse npt and nrip-save for the EPYC models under KVM."""


def _accelerators(
    base: Catalog, target: Release, table: FeatureTable, notes: _Notes
) -> Mapping[str, Accelerator]:
    """The base's accelerator defaults as ``target`` applied them."""
    kvm = base.accelerators.get("kvm")
    if kvm is None or target >= _SVM_MASKED_SINCE:
        return base.accelerators
    kept = frozenset(f for f in kvm.defaults.off if _word(table, f).startswith("FEAT_SVM"))
    if not kept:
        return base.accelerators
    defaults = Delta(kvm.defaults.on, kvm.defaults.off - kept, kvm.defaults.signature)
    notes.rules.append(
        f"under KVM, svm off keeps a model's SVM features ({', '.join(sorted(kept))}) "
        "as before QEMU 5.1"
    )
    return {**base.accelerators, "kvm": replace(kvm, defaults=defaults)}


@dataclass(frozen=True, slots=True)
class _BaseEdit:
    """A change QEMU made to a model's base definition without a new version: every version of
    ``model`` had ``delta`` applied in the releases ``first`` … ``last``."""

    model: str
    delta: Delta
    first: Release
    last: Release
    why: str


_BASE_EDITS = (
    _BaseEdit(
        "Cooperlake",
        Delta(on=frozenset({"avx-vnni"})),
        (6, 1, 0),
        (6, 1, 0),
        "QEMU 6.1.0 gave Cooperlake avx-vnni; 6.2 removed it again (i386/cpu: Remove AVX_VNNI "
        "feature from Cooperlake cpu model, Yang Zhong, 2021-08); libvirt's recorded 6.1.0 "
        "answers refuse it",
    ),
    _BaseEdit(
        "qemu64",
        Delta(signature=(("family", 6), ("model", 6), ("stepping", 3))),
        (4, 1, 0),
        (6, 0, 0),
        "qemu64 was family 6 model 6 stepping 3 until QEMU 6.1 (pc_compat_6_0 keeps it for old "
        "machine types; the 5.2 import has it)",
    ),
)


def _edit_base_definitions(models: dict[str, Model], target: Release, notes: _Notes) -> None:
    for edit in _BASE_EDITS:
        model = models.get(edit.model)
        if model is None or not edit.first <= target <= edit.last:
            continue
        versions = tuple(
            replace(v, definition=v.definition.apply(edit.delta)) for v in model.versions
        )
        if versions != model.versions:
            models[edit.model] = replace(model, versions=versions)
            notes.rules.append(edit.why)


TCG_OFFERS = "tcg-offers.json"


def _tcg_offers(
    base: Catalog, older: Catalog | None, target: Release, known: FeatureSet, notes: _Notes
) -> FeatureSet:
    """What TCG offered in ``target``: QEMU's recorded answer of that release when there is one
    (``data/tcg-offers.json``, from libvirt's recordings); else what both nearest imports' TCG
    offers, plus what QEMU's TCG rules add from their first release on."""
    data = _bundled_data(TCG_OFFERS)
    short = f"{target[0]}.{target[1]}"
    recorded = data["recorded"].get(short)
    if recorded is not None:
        notes.rules.append(
            f"TCG offers as QEMU {short} answered libvirt ({data['sources'][short]})"
        )
        return frozenset(recorded) & known
    if older is None:
        return base.tcg_offers & known
    offers = set(base.tcg_offers & older.tcg_offers)
    for rule in data["rules"]:
        if _key(f"{rule['since']}.0") <= target:
            offers |= set(rule["features"])
    notes.rules.append(
        f"TCG offers: what both {older.release} and {base.release} offer, with QEMU's TCG "
        f"rules up to {short}"
    )
    return frozenset(offers) & known


def _known_features(base: Catalog, target: Release, table: FeatureTable) -> FeatureSet:
    """The base's feature names that existed at ``target`` (the feature table's first release)."""
    known = set()
    for name in base.known_features:
        since = table.get(name).since if name in table else None
        first = _feature_since(since)
        if first is None or first <= target:
            known.add(name)
    return frozenset(known)


def _feature_since(since: str | None) -> Release | None:
    """``v5.0.0`` -> (5, 0, 0); ``<=v1.1.0`` (known to exist by then) -> (1, 1, 0)."""
    match = re.search(r"v([0-9]+)\.([0-9]+)\.([0-9]+)", since or "")
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def _base_definition(
    name: str, facts: Mapping[str, Any], table: FeatureTable, notes: _Notes
) -> Definition:
    """A new model's definition before version props, as a static expansion shows it."""
    where = f"{HISTORY}: models.{name}.features"
    features = {"hypervisor"}  # QEMU sets it for every named model (x86_cpu_load_model)
    for index, feature in enumerate(facts["features"]):
        if _UNNAMED_BIT.match(feature):
            notes.ignore("unnamed feature bit")
            continue
        try:
            features.add(table.canonical(feature))
        except UnknownFeature as err:
            raise CatalogError(f"{where}[{index}]", str(err)) from err
    for switch, word in (("vmx", "FEAT_VMX"), ("svm", "FEAT_SVM")):
        if switch not in features:
            features = {f for f in features if not _word(table, f).startswith(word)}
    if facts.get("cache-info"):
        notes.ignore("cache model")
    signature = Signature(
        vendor=facts["vendor"],
        family=facts["family"],
        model=facts["model"],
        stepping=facts["stepping"],
        model_id=facts["model-id"],
        min_level=facts["min-level"],
        min_xlevel=facts["min-xlevel"],
    )
    return Definition(signature, frozenset(features))


def _word(table: FeatureTable, name: str) -> str:
    location = table.get(name).location
    return location.word if location is not None else ""


def _with_levels(definition: Definition, table: FeatureTable, floor: Signature) -> Definition:
    """``min-level``/``min-xlevel`` raised to what the enabled features need, as QEMU does."""
    level, xlevel = floor.min_level, floor.min_xlevel
    for name in definition.features:
        for location in table.get(name).locations:
            if not isinstance(location, CpuidBit):
                continue
            if location.leaf < _HYPERVISOR_RANGE:
                level = max(level, location.leaf)
            elif _EXTENDED <= location.leaf < 0xC0000000:
                xlevel = max(xlevel, location.leaf)
    if "svm" in definition.features:
        xlevel = max(xlevel, _SVM_LEVEL)
    changes: list[tuple[str, SignatureValue]] = [("min-level", level), ("min-xlevel", xlevel)]
    return definition.apply(Delta(signature=tuple(changes)))


def _machines(
    base: Catalog, target: Release, older: Catalog | None, notes: _Notes
) -> dict[str, MachineType]:
    newest = (target[0], target[1])
    machines = {
        name: machine
        for name, machine in base.machines.items()
        if machine.release is None or (machine.release <= newest and _exists(machine, target))
    }
    if older is not None:
        oldest = min((m.release for m in machines.values() if m.release), default=newest)
        for name, machine in older.machines.items():
            if machine.release and machine.release < oldest and _exists(machine, target):
                machines[name] = replace(machine, alias=None)
                notes.older_machines.append(name)
    for name, machine in base.machines.items():
        if machine.alias is None or name in machines:
            continue
        family = name.rsplit("-", 1)[0]
        candidates = [
            m for m in machines.values() if m.release and m.name.rsplit("-", 1)[0] == family
        ]
        if candidates:
            heir = max(candidates, key=lambda m: (m.release or (0, 0), m.name))
            machines[heir.name] = replace(heir, alias=machine.alias)
    if target < _NONE_LATEST_BEFORE and "none" in machines:
        machines["none"] = replace(machines["none"], bare=BareRule.LATEST)
    return machines


def _exists(machine: MachineType, target: Release) -> bool:
    """False for an old machine type QEMU had already removed at ``target``."""
    return not any(
        machine.release is not None and machine.release <= upto and target > last
        for upto, last in _MACHINE_REMOVALS
    )


def _show(release: Release) -> str:
    return ".".join(str(part) for part in release)


def _build_line(
    base: Catalog,
    release: str,
    machines: Mapping[str, MachineType],
    target: Release,
    notes: _Notes,
    older: Catalog | None = None,
) -> str:
    parts = [f"derived for QEMU {release} from {base.build} using QEMU's version history"]
    if notes.dropped:
        parts.append(f"left out {notes.dropped} versions first released after {release}")
    if notes.restored:
        parts.append(f"put back as first released: {', '.join(notes.restored)}")
    if notes.built:
        parts.append(f"built from QEMU's props: {', '.join(notes.built)}")
    if notes.ignored:
        ignored = ", ".join(f"{count} x {what}" for what, count in sorted(notes.ignored.items()))
        parts.append(f"not modelled: {ignored}")
    if notes.left_out:
        parts.append(
            f"left out for lack of a base definition in the facts: {', '.join(notes.left_out)}"
        )
    parts += notes.rules
    if older is not None and (notes.older_models or notes.older_machines):
        taken = list(notes.older_models)
        if notes.older_machines:
            ordered = sorted(notes.older_machines, key=lambda n: machine_release(n) or (0, 0))
            taken.append(
                f"{len(ordered)} old machine types ({ordered[0]} … {ordered[-1]})"
                if len(ordered) > 1
                else ordered[0]
            )
        parts.append(f"from {older.build}: {', '.join(taken)}")
    pc = [m for m in machines.values() if m.release is not None]
    newest = max(pc, key=lambda m: (m.release or (0, 0), m.name)).name if pc else "none"
    if not any(m.release == (target[0], target[1]) for m in pc):
        parts.append(f"the base build has no pc-*-{target[0]}.{target[1]}: newest is {newest}")
    if target < _NONE_LATEST_BEFORE:
        parts.append("-machine none gives the latest version")
    return "; ".join(parts)
