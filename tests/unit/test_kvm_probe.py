"""The KVM ioctl probe: decoding KVM's raw answer the way QEMU does, the dump format, the errors.

Hand-made hosts are built by :func:`make_dump` from feature names and the bundled feature table's
CPUID/MSR locations, so every bit sits where real hardware puts it. The JSON copies in
``tests/data/hosts`` are made by the same function (``python tests/unit/test_kvm_probe.py``
rewrites them) and a test keeps them equal.
"""

from __future__ import annotations

import errno
import json
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

from cpuver import api
from cpuver.errors import HostError
from cpuver.features import CpuidBit, FeatureTable, MsrBit
from cpuver.host import kvm
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.kvm import (
    DUMP_SCHEMA,
    CpuidEntry,
    KvmDump,
    host_cpuid_from_features,
    kvm_offers,
    kvm_vendor,
    read_kvm,
)
from cpuver.resolve import Resolver

HOSTS = Path(__file__).resolve().parent.parent / "data" / "hosts"
TABLE = FeatureTable.bundled()
EVERYTHING = frozenset(TABLE)
NEW, OLD = (10, 0), (7, 2)


def _names(text: str) -> list[str]:
    return text.split()


PARAVIRT = _names(
    "kvmclock kvm-nopiodelay kvm-mmu kvm-asyncpf kvm-steal-time kvm-pv-eoi kvm-pv-unhalt "
    "kvm-pv-tlb-flush kvm-asyncpf-vmexit kvm-pv-ipi kvm-poll-control kvm-pv-sched-yield "
    "kvm-asyncpf-int kvmclock-stable-bit"
)
"""What KVM puts in its paravirtual leaf 0x40000001 (Linux 6.x)."""

CASCADELAKE = _names(
    "3dnowprefetch abm adx aes apic arch-capabilities avx avx2 avx512bw avx512cd avx512dq "
    "avx512f avx512vl avx512vnni bmi1 bmi2 clflush clflushopt clwb cmov cx16 cx8 de erms f16c fma "
    "fpu fsgsbase fxsr hle invpcid lahf-lm lm mca mce mmx movbe msr mtrr nx pae pat pcid "
    "pclmulqdq pdpe1gb pge pku pni popcnt pse pse36 rdrand rdseed rdtscp rtm sep smap smep "
    "spec-ctrl ssbd sse sse2 sse4.1 sse4.2 ssse3 syscall tsc vme x2apic xgetbv1 xsave xsavec "
    "xsaveopt xsaves vmx "
    # ARCH_CAPABILITIES of a Cascade Lake before the TSX microcode
    "ibrs-all mds-no rdctl-no skip-l1dfl-vmentry "
    # a few VMX capabilities (allowed-1 bits of the VMX capability MSRs)
    "vmx-secondary-ctls vmx-ept vmx-unrestricted-guest vmx-vpid vmx-hlt-exit vmx-ins-outs "
    "vmx-entry-ia32e-mode vmx-invpcid-exit vmx-xsaves"
)
"""A Cascade Lake server with TSX, as KVM reports it (Cascadelake-Server-v2's features + VMX)."""

EPYC_MILAN = _names(
    "3dnowprefetch abm adx aes amd-ssbd amd-stibp apic avx avx2 bmi1 bmi2 clflush clflushopt "
    "clwb clzero cmov cr8legacy cx16 cx8 de erms f16c fma fpu fsgsbase fsrm fxsr fxsr-opt ibpb "
    "ibrs invpcid lahf-lm lm mca mce misalignsse mmx mmxext movbe msr mtrr npt nrip-save nx osvw "
    "pae pat pcid pclmulqdq pdpe1gb perfctr-core pge pku pni popcnt pse pse36 rdpid rdrand "
    "rdseed rdtscp sep sha-ni smap smep spec-ctrl sse sse2 sse4.1 sse4.2 sse4a ssse3 svm "
    "svme-addr-chk syscall topoext tsc umip vme wbnoinvd x2apic xgetbv1 xsave xsavec xsaveerptr "
    "xsaveopt xsaves"
)
"""An AMD EPYC Milan host as KVM reports it: EPYC-Milan-v1's features without ``monitor``, with
``spec-ctrl`` (KVM shows AMD's IBRS as Intel's SPEC_CTRL bit)."""

_VMX_CONTROLS = (0x48B, 0x48D, 0x48E, 0x48F, 0x490)


def _signature_eax(family: int, model: int, stepping: int) -> int:
    base_family, ext_family = (family, 0) if family < 0xF else (0xF, family - 0xF)
    return (
        (ext_family << 20)
        | ((model >> 4) << 16)
        | (base_family << 8)
        | ((model & 0xF) << 4)
        | (stepping)
    )


def make_dump(
    vendor: str,
    signature: tuple[int, int, int],
    features: Iterable[str],
    host_features: Iterable[str] = (),
    capabilities: Mapping[str, int] | None = None,
) -> KvmDump:
    """A KVM dump of a host whose KVM reports exactly ``features`` (plus KVM's paravirt leaf).

    CPUID features set their bits in the leaves the feature table names; MSR features set their
    bits in the MSR (VMX control MSRs: in the allowed-1 half). ARCH_CAPABILITIES and the VMX MSRs
    are listed as feature MSRs and in KVM's MSR index list when any of their bits is set. The
    XSAVE components follow the features (x87/SSE always, AVX, AVX-512, PKRU). ``host_features``
    are the bits the host's own CPUID shows in leaf 7 (what QEMU copies: ``erms``, ``fsrm``...).
    """
    features = [*features, *PARAVIRT]
    registers: dict[tuple[int, int], dict[str, int]] = {}
    msrs: dict[int, int] = {}
    for name in features:
        for loc in TABLE.get(name).locations:
            if isinstance(loc, CpuidBit):
                leaf = registers.setdefault((loc.leaf, loc.subleaf or 0), {})
                leaf[loc.register] = leaf.get(loc.register, 0) | (1 << loc.bit)
            elif isinstance(loc, MsrBit):
                shift = 32 if loc.index in _VMX_CONTROLS else 0
                msrs[loc.index] = msrs.get(loc.index, 0) | (1 << (loc.bit + shift))
    vendor_words = struct.unpack("<3I", vendor.encode("ascii"))
    registers[(0, 0)] = {"eax": 0x1F, "ebx": vendor_words[0], "edx": vendor_words[1]}
    registers[(0, 0)]["ecx"] = vendor_words[2]
    registers.setdefault((1, 0), {})["eax"] = _signature_eax(*signature)
    registers[(0x40000000, 0)] = {"eax": 0x40000001, "ebx": 0x4B4D564B, "ecx": 0x564B4D56}
    registers[(0x40000000, 0)]["edx"] = 0x4D
    xcomp = 0b11
    for name, bits in (("avx", 0b100), ("avx512f", 0b11100000), ("pku", 1 << 9)):
        if name in features:
            xcomp |= bits
    registers.setdefault((0xD, 0), {})["eax"] = xcomp
    entries = tuple(
        CpuidEntry(leaf, subleaf, 1 if leaf in (4, 7, 0xB, 0xD) else 0, **_regs(values))
        for (leaf, subleaf), values in sorted(registers.items())
    )
    return KvmDump(
        cpuid=entries,
        msrs=msrs,
        capabilities=dict(
            capabilities
            if capabilities is not None
            else {"KVM_CAP_TSC_DEADLINE_TIMER": 1, "KVM_CAP_GET_MSR_FEATURES": 1}
        ),
        msr_index=tuple(sorted(msrs)),
        host_cpuid=host_cpuid_from_features(host_features, TABLE),
        xcomp_guest_supp=xcomp,
        source="hand-made (tests/unit/test_kvm_probe.py make_dump)",
    )


def _regs(values: Mapping[str, int]) -> dict[str, int]:
    return {register: values.get(register, 0) for register in ("eax", "ebx", "ecx", "edx")}


def intel_tsx() -> KvmDump:
    """Cascade Lake (family 6 model 85 stepping 7) before the TSX microcode: hle and rtm."""
    return make_dump("GenuineIntel", (6, 85, 7), CASCADELAKE, host_features=["erms"])


def intel_no_tsx() -> KvmDump:
    """The same Cascade Lake after the TSX microcode: no hle/rtm, TSX_CTRL and TAA_NO set."""
    features = [f for f in CASCADELAKE if f not in ("hle", "rtm")] + ["tsx-ctrl", "taa-no"]
    return make_dump("GenuineIntel", (6, 85, 7), features, host_features=["erms"])


def amd_epyc() -> KvmDump:
    """An AMD EPYC Milan (family 25 model 1 stepping 1): no feature MSRs at all."""
    return make_dump("AuthenticAMD", (25, 1, 1), EPYC_MILAN, host_features=["erms", "fsrm"])


HAND_MADE = {
    "intel-tsx-kvm.json": intel_tsx,
    "intel-notsx-kvm.json": intel_no_tsx,
    "amd-epyc-kvm.json": amd_epyc,
}


def write_fixtures() -> None:
    for name, build in HAND_MADE.items():
        (HOSTS / name).write_text(json.dumps(build().to_json(), indent=1) + "\n")


def minimal(**changes: object) -> KvmDump:
    """A dump whose KVM reports nothing but the vendor leaf (QEMU's own additions show alone)."""
    dump = make_dump("GenuineIntel", (6, 85, 7), [], capabilities={})
    fields = {name: getattr(dump, name) for name in KvmDump.__dataclass_fields__}
    fields.update(changes)
    return KvmDump(**fields)  # type: ignore[arg-type]


# --- hand-made hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize("release", [OLD, NEW])
def test_intel_host_with_tsx_offers_hle_and_rtm(release: tuple[int, int]) -> None:
    assert {"hle", "rtm"} <= kvm_offers(intel_tsx(), EVERYTHING, release)


@pytest.mark.parametrize("release", [OLD, NEW])
def test_intel_host_after_tsx_microcode_offers_no_hle_or_rtm(release: tuple[int, int]) -> None:
    assert not {"hle", "rtm"} & kvm_offers(intel_no_tsx(), EVERYTHING, release)


def test_intel_host_after_tsx_microcode_offers_tsx_ctrl_and_taa_no() -> None:
    offers = kvm_offers(intel_no_tsx(), EVERYTHING, NEW)
    assert {"tsx-ctrl", "taa-no"} <= offers
    assert not {"tsx-ctrl", "taa-no"} & kvm_offers(intel_tsx(), EVERYTHING, NEW)


def test_intel_host_offers_its_arch_capabilities_bits() -> None:
    offers = kvm_offers(intel_tsx(), EVERYTHING, NEW)
    assert {"arch-capabilities", "mds-no", "rdctl-no", "ibrs-all", "skip-l1dfl-vmentry"} <= offers


def test_amd_host_offers_topoext_and_amd_ssbd() -> None:
    offers = kvm_offers(amd_epyc(), EVERYTHING, NEW)
    assert {"topoext", "amd-ssbd", "svm", "npt", "clzero", "xsaves"} <= offers
    assert not {"arch-capabilities", "vmx", "hle"} & offers


@pytest.mark.parametrize(
    ("host", "runs", "blocked"),
    [
        (intel_tsx, ["Haswell-v1", "Haswell-v4", "Cascadelake-Server-v2"], []),
        (intel_no_tsx, ["Haswell-v2", "Haswell-v4", "Cascadelake-Server-v3"], ["Haswell-v1"]),
        (amd_epyc, ["Haswell-v2", "Haswell-v4", "EPYC-Milan-v1"], ["Haswell-v1", "Haswell-v3"]),
    ],
)
def test_hand_made_hosts_run_the_models_such_hosts_run(
    host: Callable[[], KvmDump], runs: list[str], blocked: list[str]
) -> None:
    catalog = api.open_catalog("10.0")
    dump = host()
    offers = kvm_offers(dump, catalog.known_features, NEW)
    caps = HostCapabilities(host.__name__, {"kvm": offers}, kvm_vendor(dump))
    resolver = Resolver(catalog, accel="kvm", host=caps)
    for name in runs:
        assert not resolver.blockers(resolver.effective(catalog.lookup(name))), name
    for name in blocked:
        assert {"hle", "rtm"} <= set(resolver.blockers(resolver.effective(catalog.lookup(name))))


def test_vendor_comes_from_cpuid_leaf_0() -> None:
    assert kvm_vendor(intel_tsx()) == "GenuineIntel"
    assert kvm_vendor(amd_epyc()) == "AuthenticAMD"


def test_hand_made_json_fixtures_are_what_make_dump_builds() -> None:
    for name, build in HAND_MADE.items():
        stored = KvmDump.from_json(json.loads((HOSTS / name).read_text()), name)
        assert kvm_offers(stored, EVERYTHING, NEW) == kvm_offers(build(), EVERYTHING, NEW), name
        assert stored.to_json() == build().to_json(), f"{name}: rerun this module as a script"


# --- QEMU's adjustments ------------------------------------------------------------------------


def test_qemu_always_offers_hypervisor_arat_topoext_and_kvm_hint_dedicated() -> None:
    offers = kvm_offers(minimal(), EVERYTHING, NEW)
    assert {"hypervisor", "arat", "topoext", "kvm-hint-dedicated", "mtrr", "pat", "mce"} <= offers


def test_tsc_deadline_needs_the_kvm_capability() -> None:
    assert "tsc-deadline" not in kvm_offers(minimal(), EVERYTHING, NEW)
    with_cap = minimal(capabilities={"KVM_CAP_TSC_DEADLINE_TIMER": 1})
    assert "tsc-deadline" in kvm_offers(with_cap, EVERYTHING, NEW)


def test_ht_is_offered_from_qemu_8_2_only() -> None:
    assert "ht" in kvm_offers(minimal(), EVERYTHING, NEW)
    assert "ht" not in kvm_offers(minimal(), EVERYTHING, OLD)


@pytest.mark.parametrize(
    ("release", "offered"), [((10, 0), False), ((10, 1), True), ((11, 1), True)]
)
def test_pdcm_and_arch_lbr_are_never_refused_from_qemu_10_1(
    release: tuple[int, int], offered: bool
) -> None:
    """Dropped without a PMU, not refused (QEMU 11.1.3's filter, tests/oracle/test_kvm_probe.py)."""
    assert ({"pdcm", "arch-lbr"} <= kvm_offers(minimal(), EVERYTHING, release)) is offered


def test_erms_and_fsrm_come_from_the_host_cpuid_from_qemu_8_0() -> None:
    dump = minimal(host_cpuid=host_cpuid_from_features(["erms", "fsrm", "fzrm"], TABLE))
    assert {"erms", "fsrm", "fzrm"} <= kvm_offers(dump, EVERYTHING, NEW)
    assert not {"erms", "fsrm", "fzrm"} & kvm_offers(dump, EVERYTHING, OLD)
    assert "erms" not in kvm_offers(minimal(), EVERYTHING, NEW)


def test_broken_haswell_tsx_is_hidden() -> None:
    broken = make_dump("GenuineIntel", (6, 60, 3), ["hle", "rtm", "avx2"])
    fixed = make_dump("GenuineIntel", (6, 63, 4), ["hle", "rtm", "avx2"])
    assert not {"hle", "rtm"} & kvm_offers(broken, EVERYTHING, NEW)
    assert {"hle", "rtm"} <= kvm_offers(fixed, EVERYTHING, NEW)


def test_arch_capabilities_needs_the_msr_in_kvms_msr_index_list() -> None:
    dump = intel_tsx()
    unlisted = KvmDump(**{**_fields(dump), "msr_index": ()})
    offers = kvm_offers(unlisted, EVERYTHING, NEW)
    assert "arch-capabilities" not in offers
    assert "mds-no" not in offers  # its MSR bits go with the CPUID flag


def test_msr_features_need_kvm_to_list_the_feature_msr() -> None:
    dump = intel_tsx()
    msrs = {index: value for index, value in dump.msrs.items() if index != 0x10A}
    assert "mds-no" not in kvm_offers(KvmDump(**{**_fields(dump), "msrs": msrs}), EVERYTHING, NEW)


def test_vmx_control_bits_count_only_when_allowed_but_not_forced() -> None:
    dump = intel_tsx()
    forced = dict(dump.msrs)
    forced[0x48E] |= 1 << 7  # vmx-hlt-exit must be 1: not a choice a guest can get
    offers = kvm_offers(KvmDump(**{**_fields(dump), "msrs": forced}), EVERYTHING, NEW)
    assert "vmx-hlt-exit" in kvm_offers(dump, EVERYTHING, NEW)
    assert "vmx-hlt-exit" not in offers


def test_vmx_secondary_controls_need_their_activation_bit() -> None:
    dump = intel_tsx()
    msrs = dict(dump.msrs)
    msrs[0x48E] &= ~(1 << (32 + 31))
    offers = kvm_offers(KvmDump(**{**_fields(dump), "msrs": msrs}), EVERYTHING, NEW)
    assert "vmx-ept" in kvm_offers(dump, EVERYTHING, NEW)
    assert not {"vmx-ept", "vmx-vpid", "vmx-unrestricted-guest", "vmx-xsaves"} & offers


def test_vmx_features_need_vmx() -> None:
    dump = make_dump("GenuineIntel", (6, 85, 7), [f for f in CASCADELAKE if f != "vmx"])
    assert not {f for f in kvm_offers(dump, EVERYTHING, NEW) if f.startswith("vmx-")}


def test_fb_clear_is_added_for_mds_immune_hosts_from_qemu_10_2() -> None:
    immune = ["arch-capabilities", "mds-no", "taa-no", "sbdr-ssdp-no", "fbsdp-no", "psdp-no"]
    dump = make_dump("GenuineIntel", (6, 143, 8), immune)
    assert "fb-clear" in kvm_offers(dump, EVERYTHING, (10, 2))
    assert "fb-clear" not in kvm_offers(dump, EVERYTHING, NEW)


def test_feature_with_two_bits_needs_both() -> None:
    dump = minimal()
    leaf = dump.entry(0x40000001)
    assert leaf is not None
    one_bit = [e for e in dump.cpuid if e is not leaf] + [
        CpuidEntry(0x40000001, 0, 0, leaf.eax & ~(1 << 3), leaf.ebx, leaf.ecx, leaf.edx)
    ]
    assert "kvmclock" in kvm_offers(dump, EVERYTHING, NEW)
    assert "kvmclock" not in kvm_offers(minimal(cpuid=tuple(one_bit)), EVERYTHING, NEW)


def test_avx512_needs_its_xsave_components() -> None:
    dump = intel_tsx()
    assert "avx512f" in kvm_offers(dump, EVERYTHING, NEW)
    no_zmm = KvmDump(**{**_fields(dump), "xcomp_guest_supp": 0b111})
    assert "avx512f" not in kvm_offers(no_zmm, EVERYTHING, NEW)


def test_only_known_features_are_offered() -> None:
    assert kvm_offers(intel_tsx(), frozenset({"hle", "not-a-feature"}), NEW) == {"hle"}


def _fields(dump: KvmDump) -> dict[str, object]:
    return {name: getattr(dump, name) for name in KvmDump.__dataclass_fields__}


# --- the dump format ---------------------------------------------------------------------------


def test_dump_round_trips_through_json() -> None:
    dump = intel_tsx()
    again = KvmDump.from_json(json.loads(json.dumps(dump.to_json())))
    assert again == dump


def recorded(name: str) -> KvmDump:
    """A dump captured by :func:`read_kvm` on one of this project's machines, named after it."""
    return KvmDump.from_json(json.loads((HOSTS / name).read_text()), name)


def test_amd_epyc_zen4_nested_dump_decodes_to_amd_with_topoext() -> None:
    dump = recorded("amd-epyc-zen4-nested-kvm.json")
    assert kvm_vendor(dump) == "AuthenticAMD"
    assert {"topoext", "arch-capabilities", "mds-no"} <= kvm_offers(dump, EVERYTHING, NEW)


def test_intel_xeon_nested_dump_decodes_to_intel_without_amd_features() -> None:
    dump = recorded("intel-xeon-nested-kvm.json")
    offers = kvm_offers(dump, EVERYTHING, NEW)
    assert kvm_vendor(dump) == "GenuineIntel"
    assert {"arch-capabilities", "md-clear", "la57", "tsx-ctrl"} <= offers
    assert not {"svm", "sse4a"} & offers


def test_nested_dumps_offer_neither_ssse3_nor_avx() -> None:
    # Both machines' nested KVM hides most of the CPU: the reason only 486..pentium3 run there.
    for name in ("amd-epyc-zen4-nested-kvm.json", "intel-xeon-nested-kvm.json"):
        assert not {"ssse3", "avx"} & kvm_offers(recorded(name), EVERYTHING, NEW), name


def test_wrong_schema_is_refused_naming_it() -> None:
    with pytest.raises(HostError, match="schema"):
        KvmDump.from_json({"schema": "cpuver-kvm-dump/99", "cpuid": []})


def test_bad_cpuid_register_is_refused_naming_the_field() -> None:
    data = intel_tsx().to_json()
    data["cpuid"][2]["ebx"] = "lots"
    with pytest.raises(HostError, match=r"cpuid\[2\]\.ebx"):
        KvmDump.from_json(data)


def test_missing_cpuid_is_refused_naming_it() -> None:
    with pytest.raises(HostError, match="cpuid: missing"):
        KvmDump.from_json({"schema": DUMP_SCHEMA})


def test_bad_msr_value_is_refused_naming_the_msr() -> None:
    data = intel_tsx().to_json()
    data["msrs"]["0x10a"] = -1
    with pytest.raises(HostError, match=r"msrs\['0x10a'\]"):
        KvmDump.from_json(data)


def test_dump_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(HostError, match="JSON object"):
        KvmDump.from_json([1, 2])


def test_vendor_without_leaf_0_is_an_error() -> None:
    with pytest.raises(HostError, match="leaf 0"):
        kvm_vendor(KvmDump(cpuid=()))


# --- the ioctl side ----------------------------------------------------------------------------


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="no such device"):
        read_kvm(tmp_path / "kvm")


def test_permission_denied_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, flags: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(kvm.os, "open", refuse)
    with pytest.raises(HostError, match=r"permission denied.*kvm"):
        read_kvm("/dev/kvm")


def test_ioctl_failure_is_a_clear_error(tmp_path: Path) -> None:
    not_kvm = tmp_path / "plain-file"
    not_kvm.write_bytes(b"")
    with pytest.raises(HostError, match="KVM_GET_API_VERSION failed"):
        read_kvm(not_kvm)


def test_kvm_is_not_usable_without_the_device(tmp_path: Path) -> None:
    assert not kvm.kvm_usable(tmp_path / "kvm")


def test_kvm_is_not_usable_from_a_device_that_is_not_kvm() -> None:
    # Opens read-write for anyone, but answers no KVM ioctl: QEMU's -accel kvm fails on it too.
    assert not kvm.kvm_usable("/dev/null")


def test_read_kvm_retries_with_more_entries_on_e2big(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []

    def fake_ioctl(fd: int, request: int, arg: object, mutate: bool = False) -> int:
        assert request == kvm.KVM_GET_SUPPORTED_CPUID and isinstance(arg, bytearray)
        nent = struct.unpack_from("<I", arg)[0]
        sizes.append(nent)
        if nent < 200:
            raise OSError(errno.E2BIG, "Argument list too long")
        struct.pack_into("<I", arg, 0, 1)
        struct.pack_into("<7I", arg, 8, 0, 0, 0, 0x1F, 1, 2, 3)
        return 0

    monkeypatch.setattr(kvm.fcntl, "ioctl", fake_ioctl)
    entries = kvm._supported_cpuid(0, "/dev/kvm")
    assert sizes == [64, 128, 256]
    assert entries == (CpuidEntry(0, 0, 0, 0x1F, 1, 2, 3),)


@pytest.mark.kvm
def test_live_dump_decodes_the_same_after_a_json_round_trip() -> None:
    # Whatever this machine's KVM offers: a recording of it is as good as the device itself.
    live = read_kvm()
    again = KvmDump.from_json(json.loads(json.dumps(live.to_json())))
    for release in (OLD, NEW):
        assert kvm_offers(again, EVERYTHING, release) == kvm_offers(live, EVERYTHING, release)
    assert kvm_vendor(again) == kvm_vendor(live)


@pytest.mark.kvm
def test_live_probe_reads_feature_msrs_and_capabilities() -> None:
    live = read_kvm()
    assert live.api_version == 12
    assert live.entry(0) is not None
    assert set(kvm.CAPABILITIES) == set(live.capabilities)
    leaf7 = live.entry(7, 0)
    if leaf7 is not None and leaf7.edx & (1 << 29):  # KVM reports arch-capabilities
        assert kvm.MSR_IA32_ARCH_CAPABILITIES in live.msrs


if __name__ == "__main__":
    write_fixtures()
    sys.exit(0)
