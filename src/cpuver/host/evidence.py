"""What a host offers, from what QEMU told a management layer about it: its expansion of the
accelerator's maximal CPU (``host`` under KVM, ``max`` under TCG) and, when given, its
``query-cpu-definitions``.

Readers (:mod:`cpuver.host.qmp_replies` for QMP replies, :mod:`cpuver.host.libvirt_caps` for
libvirt's capabilities cache) turn files into :class:`QemuEvidence`; :func:`offer` turns one
accelerator's evidence into what QEMU's filter lets a guest have, for one QEMU release. Pure: no
I/O.

An expansion is not the filter. ``host``/``max`` are built from what the accelerator supports
minus what QEMU never switches on by itself, minus what a migratable CPU may not have, minus what
feature dependencies drop; ``query-cpu-definitions`` checks a model against what the accelerator
supports. Each difference is a rule of the QEMU source (target/i386/cpu.c, target/i386/kvm/kvm.c;
5.2, 7.2 and 10.0.13 read from Debian's source packages, the first release of a rule from
libvirt's recorded answers of every release where the source was not at hand), applied from the
first release that has it:

* KVM, every release: ``topoext`` (kvm_arch_get_supported_cpuid: "It's safe to enable TOPOEXT
  even if it's not returned by GET_SUPPORTED_CPUID"; cpu.c: FEAT_8000_0001_ECX
  ``.no_autoenable_flags = CPUID_EXT3_TOPOEXT``) and ``kvm-hint-dedicated`` (``ret |=
  KVM_HINTS_REALTIME``; FEAT_KVM_HINT ``.no_autoenable_flags = ~0U``) are offered though never
  shown;
* KVM, 8.2 and later: ``ht`` (``ret |= CPUID_HT``; FEAT_1_EDX ``.no_autoenable_flags =
  CPUID_HT``);
* KVM, 9.1 and later: ``overflow-recov``, ``succor`` (``ret |= CPUID_8000_0007_EBX_OVERFLOW_RECOV
  | CPUID_8000_0007_EBX_SUCCOR``; the expansion of a non-AMD host drops them: "Disable AMD machine
  check architecture for Intel CPU", which the filter, asked without a CPU, does not apply);
* KVM: ``invtsc`` is unmigratable (FEAT_8000_0007_EDX ``.unmigratable_flags =
  CPUID_APM_INVTSC``): only an expansion with ``migratable=off`` (libvirt's ``migratable='no'``)
  can show it; the filter, asked with no CPU, allows it whenever KVM does. From a migratable
  expansion alone it is *unknown*;
* TCG, every release: the KVM paravirtual features (FEAT_KVM) are cleared before the filter runs
  ("if (!kvm_enabled() || !cpu->expose_kvm) env->features[FEAT_KVM] = 0"), so a model asking for
  them is never refused: they count as offered;
* TCG, 8.1 and later: the arch-capabilities MSR bits (``rdctl-no``, ``ibrs-all``, ``mds-no`` ...):
  FEAT_ARCH_CAPABILITIES ``.tcg_features = ~0U`` (10.0.13: "it has no impact on any user-mode
  operation"; 5.2 and 7.2 have no TCG bits there; libvirt's recorded TCG answers of 8.0.0 refuse
  ``ibrs-all``, those of 8.1.0 do not), while TCG has no ``arch-capabilities`` CPUID bit, so the
  feature dependency "arch-capabilities -> its MSR word" drops them from ``max``;
  ``its-no`` (first named in 10.1) is not among them: QEMU 11.1.3's filter refuses it under TCG;
* TCG, 8.2 and later: ``ht`` (TCG_FEATURES has CPUID_HT, FEAT_1_EDX never switches it on);
* KVM and TCG, 10.1 and later: ``pdcm`` and ``arch-lbr`` are dropped, not refused, when the vCPU
  has no PMU (the default; ``pc_compat_10_0`` sets ``x-pdcm-on-even-without-pmu`` for older
  machine types), so ``host``/``max`` leave them off while a model or spec asking for them is never
  refused (QEMU 11.1.3's filter, asked live by tests/oracle/test_evidence_rules.py).

Otherwise what an expansion does not show is not offered: a feature word whose parent bit is off
(VMX controls without ``vmx``, SVM features without ``svm``, arch-capabilities bits without
``arch-capabilities``) is not given by KVM either (no nested virtualisation: no VMX MSRs, SVM leaf
zeroed; KVM lists ARCH_CAPABILITIES whenever it offers the bit).

A reply that does not say its QEMU release (a lone expansion) gets the rules every release
cpuver describes shares; a rule that depends on the release makes its features *unknown*. Given
``query-cpu-definitions`` of the same QEMU, :func:`settle` takes QEMU's own answer for every
feature a model asks for: refused ones are not offered, the features of runnable models are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpuver.features import FeatureSet, FeatureTable

Release = tuple[int, int]

UNKNOWN_RELEASE = "the reply does not say which QEMU release gave it"


@dataclass(frozen=True, slots=True)
class Expansion:
    """One ``query-cpu-model-expansion`` reply: what was asked and the properties returned."""

    model: str
    """The model asked for (``host``, ``max``), or the reply's own name (``base``) if unknown."""
    kind: str
    """``static`` or ``full``."""
    migratable: bool | None
    """As asked (``props.migratable``); None when the question is not known."""
    props: Mapping[str, Any]

    def enabled(self, table: FeatureTable) -> FeatureSet:
        """Features switched on, by QEMU's canonical name (full expansions spell some twice)."""
        return frozenset(
            table.canonical(name)
            for name, value in self.props.items()
            if value is True and name in table
        )


@dataclass(frozen=True, slots=True)
class AccelEvidence:
    """What QEMU answered about one accelerator."""

    accel: str
    expansions: tuple[Expansion, ...] = ()
    definitions: Mapping[str, tuple[str, ...]] | None = None
    """``query-cpu-definitions``: every name's ``unavailable-features``; None if not given."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """``alias-of`` of every name that has one (the machine type of the QEMU asked)."""

    @property
    def vendor(self) -> str | None:
        for expansion in self.expansions:
            vendor = expansion.props.get("vendor")
            if isinstance(vendor, str):
                return vendor
        return None


@dataclass(frozen=True, slots=True)
class QemuEvidence:
    """Everything one file said about a host, per accelerator."""

    source: str
    release: str | None
    """``X.Y`` of the QEMU that answered, when the file says (``query-version``, ``<version>``)."""
    build: str | None
    accels: Mapping[str, AccelEvidence]
    form: str
    """How it came: ``QMP replies`` or ``libvirt capabilities cache``."""
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the expansion says of the CPU itself (vendor, family, model, stepping, model-id)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What one accelerator offers according to the evidence, and what it cannot decide."""

    features: FeatureSet
    unknown: Mapping[str, str]
    """Feature -> why the evidence cannot tell whether it is offered."""
    rules: tuple[str, ...]
    """The rules applied, one short sentence each (for the provenance note)."""


@dataclass(frozen=True, slots=True)
class _Rule:
    accel: str
    features: tuple[str, ...] | str
    """Feature names, or a feature word name (``FEAT_KVM``) meaning every feature of it."""
    since: Release
    why: str
    exclude: tuple[str, ...] = ()


_EVERY = (4, 1)
"""The oldest release cpuver describes: a rule "since" it holds for every one of them."""

_RULES = (
    _Rule("kvm", ("topoext",), _EVERY, "topoext: KVM always offers it, host never shows it"),
    _Rule(
        "kvm",
        ("kvm-hint-dedicated",),
        _EVERY,
        "kvm-hint-dedicated: KVM always offers it, host never shows it",
    ),
    _Rule("kvm", ("ht",), (8, 2), "ht: KVM offers it since QEMU 8.2, host never shows it"),
    _Rule(
        "kvm",
        ("overflow-recov", "succor"),
        (9, 1),
        "overflow-recov, succor: KVM offers them since QEMU 9.1 (host shows them on AMD only)",
    ),
    _Rule("tcg", "FEAT_KVM", _EVERY, "KVM features: cleared before TCG's filter, never refused"),
    _Rule(
        "tcg",
        "FEAT_ARCH_CAPABILITIES",
        (8, 1),
        "arch-capabilities bits: TCG offers them since QEMU 8.1, max never shows them",
        exclude=("its-no",),
    ),
    _Rule("tcg", ("ht",), (8, 2), "ht: TCG offers it since QEMU 8.2, max never shows it"),
    _Rule(
        "kvm",
        ("pdcm", "arch-lbr"),
        (10, 1),
        "pdcm, arch-lbr: dropped without a PMU since QEMU 10.1, never refused",
    ),
    _Rule(
        "tcg",
        ("pdcm", "arch-lbr"),
        (10, 1),
        "pdcm, arch-lbr: dropped without a PMU since QEMU 10.1, never refused",
    ),
)

_MIGRATABLE_ONLY = {"kvm": ("invtsc",)}
"""Unmigratable features the accelerator may offer: shown only with ``migratable=off``."""


def parse_release(release: str | None) -> Release | None:
    if release is None:
        return None
    major, minor = release.split(".")[:2]
    return int(major), int(minor)


def _named(rule: _Rule, table: FeatureTable) -> FeatureSet:
    if isinstance(rule.features, str):
        word = rule.features
        return frozenset(
            feature.name
            for feature in (table.get(name) for name in table)
            if feature.location is not None and feature.location.word == word
        )
    return frozenset(rule.features)


def offer(
    evidence: AccelEvidence,
    release: str | None,
    known: FeatureSet,
    table: FeatureTable | None = None,
) -> Offer:
    """What QEMU ``release``'s filter lets a guest have under ``evidence.accel``.

    ``known``: the features that QEMU release has (a catalog's ``known_features``); rules only
    add those. ``release`` None: the file does not say; release-dependent rules are unknown.
    """
    table = table or FeatureTable.bundled()
    accel = evidence.accel
    migratable_off = [e for e in evidence.expansions if e.migratable is False]
    shown = migratable_off or list(evidence.expansions)
    features: set[str] = set()
    for expansion in shown:
        features |= expansion.enabled(table)
    unknown: dict[str, str] = {}
    rules: list[str] = []
    if not migratable_off:
        for name in _MIGRATABLE_ONLY.get(accel, ()):
            if name in known and name not in features:
                unknown[name] = (
                    f"not in QEMU's expansion: a migratable {_asked(evidence)} never shows "
                    f"{name} (give the migratable=off reply)"
                )
    at = parse_release(release)
    for rule in _RULES:
        if rule.accel != accel:
            continue
        names = (_named(rule, table) - frozenset(rule.exclude)) & known
        if (at is not None and at >= rule.since) or (at is None and rule.since == _EVERY):
            features |= names
            rules.append(rule.why)
        elif at is None:
            for name in sorted(names - features):
                unknown[name] = (
                    f"not in QEMU's expansion, and whether QEMU offers it depends on the release "
                    f"(since {rule.since[0]}.{rule.since[1]}): {UNKNOWN_RELEASE}"
                )
    offered = frozenset(features & known) if known else frozenset(features)
    return Offer(offered, dict(sorted(unknown.items())), tuple(rules))


def _asked(evidence: AccelEvidence) -> str:
    return "host expansion" if evidence.accel == "kvm" else "max expansion"


def settle(
    found: Offer,
    definitions: Mapping[str, tuple[str, ...]],
    requested: Mapping[str, FeatureSet],
    table: FeatureTable | None = None,
) -> Offer:
    """``found`` corrected by QEMU's own ``query-cpu-definitions``.

    ``requested``: every name's enabled features as the catalog defines it (under the machine
    type and accelerator QEMU was asked with). A feature QEMU refused for some name is not
    offered; one a name asks for and QEMU did not refuse is.
    """
    table = table or FeatureTable.bundled()
    refused: set[str] = set()
    granted: set[str] = set()
    for name, unavailable in definitions.items():
        if name not in requested:
            continue
        missing = {table.canonical(f) if f in table else f for f in unavailable}
        refused |= missing
        granted |= requested[name] - missing
    features = (found.features - refused) | (granted - refused)
    unknown = {f: why for f, why in found.unknown.items() if f not in refused | granted}
    rules = found.rules
    if features != found.features or unknown != found.unknown:
        rules = (*rules, "settled by QEMU's query-cpu-definitions")
    return Offer(frozenset(features), unknown, rules)


def signature_facts(props: Mapping[str, Any]) -> dict[str, Any]:
    """The CPU identity an expansion of ``host`` reports (vendor, family, model, ...)."""
    out: dict[str, Any] = {}
    for key in ("vendor", "family", "model", "stepping", "model-id"):
        value = props.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            out[key] = value.strip() if isinstance(value, str) else value
    return out


def tcg_rule_features(table: FeatureTable | None = None) -> list[tuple[Release, FeatureSet]]:
    """Every TCG rule's features (by name) and the first release it holds for, oldest first."""
    table = table or FeatureTable.bundled()
    return sorted(
        (rule.since, _named(rule, table) - frozenset(rule.exclude))
        for rule in _RULES
        if rule.accel == "tcg"
    )
