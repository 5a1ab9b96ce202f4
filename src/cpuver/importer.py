"""Import a catalog from a real QEMU binary over QMP.

Nothing here is typed in by hand: every definition, alias, compat rule and accelerator default is
read from QEMU itself, and derived rules are checked to reproduce every answer QEMU gave:

* version definitions: ``query-cpu-model-expansion`` (static) of every ``-vN`` name under
  ``-machine none``, once with TCG and once with KVM; a property on which the two differ belongs to
  the accelerator whose value is the same for every model (TCG turns ``vme`` off, KVM turns
  ``x2apic`` and its paravirt features on ...), the other side is the model's own value;
* machine types: for every machine type, what each name expands to there; what ``-vN`` names get
  is the machine's global compat delta, what bare and alias names get on top is per-type compat;
  which version a bare name starts from comes from ``alias-of`` in ``query-cpu-definitions``;
* notes: ``-cpu help``; first releases: the bundled QEMU history facts.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from cpuver.catalog import Accelerator, Catalog
from cpuver.errors import QemuError
from cpuver.features import FeatureTable
from cpuver.host.kvm import kvm_usable
from cpuver.host.qemu import QemuInstall, QmpSession, offered_features
from cpuver.models import (
    LEVEL_FIELDS,
    AccelCompat,
    BareRule,
    Definition,
    Delta,
    MachineType,
    Model,
    Signature,
    Version,
    machine_release,
    split_versioned_name,
    version_number,
)

Progress = Callable[[str], None]
NOT_CPU_MODELS = frozenset({"base", "host", "max"})
NOT_FEATURE_WORD_PROPS = frozenset({"lmce"})
"""Boolean CPU properties in QEMU's static expansion that are no CPUID/MSR feature bit."""


@dataclass(frozen=True, slots=True)
class _Names:
    """The CPU names a QEMU binary knows, classified."""

    versions: dict[str, list[str]]  # model -> ["Haswell-v1", ...] ascending
    aliases: dict[str, str]  # alias name -> versioned name
    deprecated: frozenset[str]


def import_catalog(install: QemuInstall, progress: Progress | None = None) -> Catalog:
    """Read every model, version, machine type and accelerator rule from ``install``."""
    say = progress or (lambda _message: None)
    table = FeatureTable.bundled()
    build = install.version()
    release = _release_of(build)
    if not kvm_usable():
        raise QemuError(
            "importing needs a usable /dev/kvm: KVM and TCG expansions together "
            "tell a model's own features from each accelerator's defaults"
        )

    say(f"reading CPU models of {build}")
    with QmpSession(install, "none", "tcg") as session:
        definitions = session.command("query-cpu-definitions")
        names = _classify(definitions)
        versioned = [name for model in names.versions.values() for name in model]
        known = frozenset(name for name in session.static_expansion("max") if name in table)
        tcg = {name: _definition(session.static_expansion(name), table) for name in versioned}
        machine_list = session.command("query-machines")
    with QmpSession(install, "none", "kvm") as session:
        kvm = {name: _definition(session.static_expansion(name), table) for name in versioned}

    own, accelerators = _split_accelerator_defaults(tcg, kvm)
    tcg_offers, _vendor = offered_features(install, "tcg", table)
    notes = _notes(install, {name: d.signature.model_id for name, d in own.items()})
    history = _history()
    models = {
        model: Model(
            model,
            tuple(
                Version(
                    model=model,
                    number=number,
                    definition=own[name],
                    aliases=tuple(
                        sorted(a for a, target in names.aliases.items() if target == name)
                    ),
                    note=notes.get(name),
                    since=history.get(name),
                    deprecated=name in names.deprecated,
                )
                for name in names_of_model
                for number in [version_number(name)]
            ),
            deprecated=model in names.deprecated,
        )
        for model, names_of_model in sorted(names.versions.items())
    }

    machines: dict[str, MachineType] = {}
    for entry in sorted(machine_list, key=lambda m: str(m["name"])):
        name = str(entry["name"])
        say(f"reading machine type {name}")
        try:
            machine = _import_machine(install, name, entry, names, tcg, table)
            start = _starting_versions(names, machine.bare)
            machines[name] = _add_kvm_compat(
                install, machine, list(start), start, own, accelerators, table
            )
        except QemuError as err:
            say(f"skipping machine type {name}: {err}")
    return Catalog(
        release,
        build,
        models,
        machines,
        accelerators,
        tcg_offers,
        source=build,
        known_features=known,
    )


def _release_of(build: str) -> str:
    match = re.search(r"version ([0-9]+\.[0-9]+\.[0-9]+)", build)
    if not match:
        raise QemuError(f"cannot tell the QEMU release from {build!r}")
    return match[1]


def _classify(definitions: Iterable[Mapping[str, Any]]) -> _Names:
    entries = {str(d["name"]): d for d in definitions if d["name"] not in NOT_CPU_MODELS}
    versions: dict[str, list[tuple[int, str]]] = {}
    for name in entries:
        split = split_versioned_name(name)
        if split and split[0] in entries:
            versions.setdefault(split[0], []).append((split[1], name))
    aliases = {
        name: str(entry["alias-of"])
        for name, entry in entries.items()
        if name not in versions
        and split_versioned_name(name) is None
        and "alias-of" in entry
        and split_versioned_name(str(entry["alias-of"])) is not None
        and split_versioned_name(str(entry["alias-of"]))[0] != name  # type: ignore[index]
    }
    unknown = (
        set(entries)
        - set(versions)
        - set(aliases)
        - {name for model in versions.values() for _n, name in model}
    )
    if unknown:
        raise QemuError(f"cannot classify CPU names {sorted(unknown)}")
    return _Names(
        versions={model: [name for _n, name in sorted(v)] for model, v in versions.items()},
        aliases=aliases,
        deprecated=frozenset(name for name, e in entries.items() if e.get("deprecated")),
    )


def _definition(props: Mapping[str, Any], table: FeatureTable) -> Definition:
    features = frozenset(
        name
        for name, value in props.items()
        if value is True and name not in NOT_FEATURE_WORD_PROPS
    )
    unknown = sorted(
        name
        for name, value in props.items()
        if not isinstance(value, (str, int))
        or (isinstance(value, bool) and name not in table and name not in NOT_FEATURE_WORD_PROPS)
    )
    if unknown:
        raise QemuError(f"QEMU reports properties the feature table does not know: {unknown}")
    return Definition(Signature.from_dict(dict(props)), features)


def _split_accelerator_defaults(
    tcg: Mapping[str, Definition], kvm: Mapping[str, Definition]
) -> tuple[dict[str, Definition], dict[str, Accelerator]]:
    """Separate each model's own definition from what TCG and KVM add to every model.

    For a feature on which the two accelerators disagree for some model, the accelerator that
    gives it the same value for every model is the one that sets it; the other shows the model's
    own value. When both are constant, the default is attributed to the side that turns it on.
    """
    names = sorted(tcg)
    every = {f for d in (*tcg.values(), *kvm.values()) for f in d.features}
    defaults: dict[str, dict[str, bool]] = {"tcg": {}, "kvm": {}}
    for feature in sorted(every):
        tcg_values = {feature in tcg[n].features for n in names}
        kvm_values = {feature in kvm[n].features for n in names}
        if all((feature in tcg[n].features) == (feature in kvm[n].features) for n in names):
            continue
        if len(tcg_values) == 1 and (len(kvm_values) > 1 or tcg_values == {True}):
            defaults["tcg"][feature] = tcg_values.pop()
        elif len(kvm_values) == 1:
            defaults["kvm"][feature] = kvm_values.pop()
        else:
            raise QemuError(f"cannot tell which accelerator sets {feature!r}")
    host_vendor = len({kvm[n].signature.vendor for n in names}) == 1 and any(
        tcg[n].signature.vendor != kvm[n].signature.vendor for n in names
    )
    own: dict[str, Definition] = {}
    for name in names:
        features = set(tcg[name].features)
        for feature in defaults["tcg"]:
            features.discard(feature)
            if feature in kvm[name].features:
                features.add(feature)
        own[name] = Definition(tcg[name].signature, frozenset(features))
    levels = {"tcg": _level_changes(own, tcg), "kvm": _level_changes(own, kvm)}
    accelerators = {
        accel: Accelerator(
            accel,
            Delta(
                frozenset(f for f, on in values.items() if on),
                frozenset(f for f, on in values.items() if not on),
            ),
            host_vendor=host_vendor and accel == "kvm",
            levels=levels[accel],
        )
        for accel, values in defaults.items()
    }
    for name in names:
        for accel, expanded in (("tcg", tcg[name]), ("kvm", kvm[name])):
            rebuilt = own[name].apply(accelerators[accel].for_version(name))
            if host_vendor and accel == "kvm":
                rebuilt = rebuilt.apply(Delta(signature=(("vendor", expanded.signature.vendor),)))
            if rebuilt != expanded:
                raise QemuError(f"{name}: {accel} defaults do not reproduce QEMU's expansion")
    return own, accelerators


def _level_changes(
    own: Mapping[str, Definition], expanded: Mapping[str, Definition]
) -> tuple[tuple[str, Delta], ...]:
    """Versions whose derived CPUID levels differ under an accelerator, and how."""
    out = []
    for name in sorted(own):
        before, after = own[name].signature.as_dict(), expanded[name].signature.as_dict()
        changed = tuple((k, after[k]) for k in LEVEL_FIELDS if before[k] != after[k])
        if changed:
            out.append((name, Delta(signature=changed)))
    return tuple(out)


def _import_machine(
    install: QemuInstall,
    name: str,
    entry: Mapping[str, Any],
    names: _Names,
    tcg: Mapping[str, Definition],
    table: FeatureTable,
) -> MachineType:
    """Compat rules of one machine type; TCG expansions on both sides cancel TCG's defaults."""
    with QmpSession(install, name, "tcg") as session:
        alias_of = {
            str(d["name"]): str(d["alias-of"])
            for d in session.command("query-cpu-definitions")
            if "alias-of" in d
        }
        every = [
            *names.versions,
            *names.aliases,
            *(n for model in names.versions.values() for n in model),
        ]
        expanded = {n: _definition(session.static_expansion(n), table) for n in every}

    bare = _bare_rule(name, names, alias_of)
    versioned = [n for model in names.versions.values() for n in model]
    global_delta = _common_features(
        {n: tcg[n] for n in versioned}, {n: expanded[n] for n in versioned}
    )
    start = _starting_versions(names, bare)
    type_deltas: list[tuple[str, Delta]] = []
    for type_name in sorted(expanded):
        predicted = tcg[start[type_name]].apply(global_delta)
        delta = Delta.between(predicted, expanded[type_name])
        if delta:
            type_deltas.append((type_name, delta))
    return MachineType(
        name=name,
        bare=bare,
        release=machine_release(name),
        alias=str(entry["alias"]) if entry.get("alias") else None,
        deprecated=bool(entry.get("deprecated", False)),
        global_delta=global_delta,
        type_deltas=tuple(type_deltas),
    )


def _add_kvm_compat(
    install: QemuInstall,
    machine: MachineType,
    names: Iterable[str],
    start: Mapping[str, str],
    own: Mapping[str, Definition],
    accelerators: Mapping[str, Accelerator],
    table: FeatureTable,
) -> MachineType:
    """What the machine type does under KVM only, derived from every name's KVM expansion.

    ``start`` maps each name to the version it is built from. KVM defaults the machine type does
    not apply (every name keeps its own value) are ``skipped``; a feature change common to every
    name is the ``delta``; whatever remains for single names is kept per type name.
    """
    kvm = accelerators["kvm"]
    with QmpSession(install, machine.name, "kvm") as session:
        expanded = {n: _definition(session.static_expansion(n), table) for n in names}
    without_kvm = {
        n: own[start[n]].apply(machine.global_delta).apply(machine.type_delta(n)) for n in expanded
    }
    defaults = kvm.defaults.on | kvm.defaults.off
    skipped = frozenset(
        f
        for f in defaults
        if all((f in expanded[n].features) == (f in without_kvm[n].features) for n in expanded)
        and any((f in expanded[n].features) != (f in kvm.defaults.on) for n in expanded)
    )
    predicted = {}
    for name, definition in expanded.items():
        applied = kvm.for_version(start[name])
        applied = Delta(applied.on - skipped, applied.off - skipped, applied.signature)
        vendor = Delta(signature=(("vendor", definition.signature.vendor),))
        predicted[name] = (
            own[start[name]]
            .apply(applied)
            .apply(machine.global_delta)
            .apply(machine.type_delta(name))
            .apply(vendor)
        )
    delta = _common_features(predicted, expanded)
    type_deltas = []
    for name, definition in sorted(expanded.items()):
        residual = Delta.between(predicted[name].apply(delta), definition)
        if residual:
            type_deltas.append((name, residual))
    if not (delta or skipped or type_deltas):
        return machine
    compat = AccelCompat("kvm", delta, skipped, tuple(type_deltas))
    return replace(machine, accel_compat=(compat,))


def _starting_versions(names: _Names, bare: BareRule) -> dict[str, str]:
    """Every CPU name, mapped to the versioned name QEMU builds it from."""
    start = {n: n for model in names.versions.values() for n in model}
    start.update(names.aliases)
    for model, versions in names.versions.items():
        start[model] = versions[-1 if bare is BareRule.LATEST else 0]
    return start


def _bare_rule(machine: str, names: _Names, alias_of: Mapping[str, str]) -> BareRule:
    targets = {model: alias_of.get(model) for model in names.versions}
    if all(target is None for target in targets.values()):
        return BareRule.LEGACY
    for rule, pick in ((BareRule.V1, 0), (BareRule.LATEST, -1)):
        if all(target == names.versions[m][pick] for m, target in targets.items()):
            return rule
    raise QemuError(f"{machine}: bare names follow no known rule: {targets}")


def _common_features(before: Mapping[str, Definition], after: Mapping[str, Definition]) -> Delta:
    """The features a machine type forces to one value for every CPU type (global compat props).

    A feature belongs here when it changed for some type and ends up the same for all of them;
    what the machine type does to single types beyond that is kept per type name.
    """
    changed: set[str] = set()
    for name in before:
        changed |= before[name].features ^ after[name].features
    on = {f for f in changed if all(f in after[n].features for n in after)}
    off = {f for f in changed if all(f not in after[n].features for n in after)}
    return Delta(frozenset(on), frozenset(off))


def _notes(install: QemuInstall, model_ids: Mapping[str, str]) -> dict[str, str]:
    """Version notes, read from ``-cpu help`` (``model-id [note]``)."""
    done = subprocess.run(
        [*install.command(), "-cpu", "help"],
        capture_output=True,
        text=True,
        env=install.environment(),
        timeout=60,
        check=False,
    )
    notes = {}
    for line in done.stdout.splitlines():
        parts = line.strip().removeprefix("x86 ").split(None, 1)  # QEMU < 8 prefixes "x86"
        if len(parts) != 2 or parts[0] not in model_ids:
            continue
        rest = parts[1].removesuffix("(deprecated)").strip()
        rest = rest.removeprefix(model_ids[parts[0]]).strip()
        if rest.startswith("[") and rest.endswith("]"):
            notes[parts[0]] = rest[1:-1]
    return notes


def _history() -> dict[str, str]:
    """First release of every versioned name, from the bundled QEMU history facts."""
    text = (resources.files("cpuver.catalog") / "data" / "qemu-history.json").read_text()
    data = json.loads(text)
    return {name: str(entry["since"]) for name, entry in data["versions"].items()}
