"""Probe what KVM can give a guest straight from ``/dev/kvm``, and decode it as QEMU would.

Two halves, so recorded answers can be decoded without hardware:

* :func:`read_kvm` does the I/O: system ioctls on the ``/dev/kvm`` fd (``KVM_GET_SUPPORTED_CPUID``,
  ``KVM_GET_MSR_INDEX_LIST``, ``KVM_GET_MSR_FEATURE_INDEX_LIST`` + ``KVM_GET_MSRS``,
  ``KVM_CHECK_EXTENSION``, ``KVM_GET_DEVICE_ATTR``) plus the few host CPUID registers QEMU reads
  itself (``/dev/cpu/0/cpuid``, else ``/proc/cpuinfo``). The raw answer is a :class:`KvmDump`
  that round-trips through JSON (schema ``cpuver-kvm-dump/1``).
* :func:`kvm_offers` is pure: it applies QEMU's adjustments to KVM's raw answer and answers
  with the feature names QEMU's own filter would let a guest have under KVM, i.e. what
  ``cpuver.host.qemu.offered_features`` asks a real QEMU. The adjustments
  (``kvm_arch_get_supported_cpuid`` / ``kvm_arch_get_supported_msr_feature`` and the feature
  dependencies of QEMU's ``target/i386``), each applied from the first QEMU release that has it:

  - always on: ``hypervisor``, ``arat``, ``topoext``, ``kvm-hint-dedicated``, ``mtrr``/``pat``/
    ``mce``/``mca``; ``tsc-deadline`` with ``KVM_CAP_TSC_DEADLINE_TIMER``; ``ht`` (8.2+);
    ``overflow-recov``/``succor`` (9.1+);
  - from the host's own CPUID: ``erms``, ``fsrm``, ``fzrm``, ``fsrs``, ``fsrc`` (8.0+), ``mcdt-no``
    (8.1+);
  - hidden: ``hle``/``rtm`` on Haswells with broken TSX; ``arch-capabilities`` when KVM's MSR index
    list lacks IA32_ARCH_CAPABILITIES; features whose XSAVE components KVM cannot give;
  - MSR features: only feature MSRs KVM lists; VMX controls count when allowed-1 but not
    must-be-1; ``fb-clear`` for MDS-immune hosts (10.2+); a word only while its CPUID flag (or
    VMX control) is on, as ``-cpu host`` has them: QEMU reports MSR features from there.

  ``invtsc`` counts (a vCPU that asks for it gets it), though ``-cpu host`` leaves it off;
  so do ``pdcm`` and ``arch-lbr`` from 10.1 (dropped without a PMU, never refused).

Assumes QEMU's defaults: in-kernel irqchip (not split), ``cpu-pm=off``, no confidential guest.
Not modelled: Intel PT's CPUID leaf 0x14 check and AVX10 version checks of QEMU's filter.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuver.errors import HostError
from cpuver.features import CpuidBit, FeatureSet, FeatureTable, MsrBit

DUMP_SCHEMA = "cpuver-kvm-dump/1"

# --- ioctl numbers (linux/kvm.h): _IO/_IOWR(KVMIO=0xAE, nr, size) --------------------------------

_KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | nr


_IOC_NONE, _IOC_WRITE, _IOC_RW = 0, 1, 3
KVM_GET_API_VERSION = _ioc(_IOC_NONE, 0x00, 0)
KVM_CHECK_EXTENSION = _ioc(_IOC_NONE, 0x03, 0)
KVM_GET_MSR_INDEX_LIST = _ioc(_IOC_RW, 0x02, 4)  # struct kvm_msr_list {u32 nmsrs; u32 indices[]}
KVM_GET_SUPPORTED_CPUID = _ioc(_IOC_RW, 0x05, 8)  # struct kvm_cpuid2 {u32 nent, pad; entries[]}
KVM_GET_MSR_FEATURE_INDEX_LIST = _ioc(_IOC_RW, 0x0A, 4)
KVM_GET_MSRS = _ioc(_IOC_RW, 0x88, 8)  # struct kvm_msrs {u32 nmsrs, pad; kvm_msr_entry[]}
KVM_GET_DEVICE_ATTR = _ioc(_IOC_WRITE, 0xE2, 24)  # struct kvm_device_attr {u32, u32, u64, u64}

_CPUID_ENTRY = struct.Struct("<7I12x")  # kvm_cpuid_entry2: function index flags eax ebx ecx edx pad
_MSR_ENTRY = struct.Struct("<IIQ")  # kvm_msr_entry: index reserved data
_MAX_CPUID_ENTRIES = 4096
KVM_X86_XCOMP_GUEST_SUPP = 0

CAPABILITIES: Mapping[str, int] = {
    "KVM_CAP_IRQCHIP": 0,
    "KVM_CAP_EXT_CPUID": 7,
    "KVM_CAP_TSC_DEADLINE_TIMER": 72,
    "KVM_CAP_GET_MSR_FEATURES": 153,
    "KVM_CAP_X86_DISABLE_EXITS": 143,
    "KVM_CAP_SYS_ATTRIBUTES": 209,
}
"""The KVM extensions QEMU consults when it decides what a guest may have."""

HOST_CPUID_LEAVES: tuple[tuple[int, int], ...] = ((7, 0), (7, 1), (7, 2))
"""Host CPUID leaves QEMU reads itself (with the CPUID instruction) to add ``erms``/``fsrm``/..."""

# --- MSR indices and bits QEMU treats specially ------------------------------------------------

MSR_IA32_ARCH_CAPABILITIES = 0x10A
MSR_IA32_CORE_CAPABILITY = 0xCF
MSR_IA32_PERF_CAPABILITIES = 0x345
MSR_VMX_PROCBASED_CTLS2 = 0x48B
_VMX_CONTROL_MSRS = (0x48B, 0x48D, 0x48E, 0x48F, 0x490)
"""VMX control MSRs (true pin/proc/exit/entry, secondary): QEMU keeps may-be-1-need-not bits."""


def _bit(n: int) -> int:
    return 1 << n


# --- the raw answer ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuidEntry:
    """One ``kvm_cpuid_entry2``: what KVM can put in CPUID leaf ``function``/``index``."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int

    def register(self, name: str) -> int:
        return int(getattr(self, name))


@dataclass(frozen=True, slots=True)
class KvmDump:
    """KVM's raw answer on one host, with the few host facts QEMU adds on top.

    ``msrs`` holds the value of every feature MSR KVM lists (``KVM_GET_MSR_FEATURE_INDEX_LIST``);
    ``msr_index`` is ``KVM_GET_MSR_INDEX_LIST`` (QEMU checks it for ``arch-capabilities``);
    ``host_cpuid`` the host's own CPUID leaves of :data:`HOST_CPUID_LEAVES`; ``xcomp_guest_supp``
    the XSAVE components a guest may use (``KVM_GET_DEVICE_ATTR``), None if KVM cannot say.
    """

    cpuid: tuple[CpuidEntry, ...]
    msrs: Mapping[int, int] = field(default_factory=dict)
    capabilities: Mapping[str, int] = field(default_factory=dict)
    msr_index: tuple[int, ...] = ()
    host_cpuid: tuple[CpuidEntry, ...] = ()
    xcomp_guest_supp: int | None = None
    api_version: int = 12
    source: str = ""

    def entry(self, function: int, index: int = 0) -> CpuidEntry | None:
        for entry in self.cpuid:
            if entry.function == function and entry.index == index:
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": DUMP_SCHEMA,
            "api_version": self.api_version,
            "cpuid": [_entry_to_json(entry) for entry in self.cpuid],
            "msrs": {f"{index:#x}": f"{value:#x}" for index, value in sorted(self.msrs.items())},
            "msr_index": [f"{index:#x}" for index in self.msr_index],
            "capabilities": dict(sorted(self.capabilities.items())),
            "host_cpuid": [_entry_to_json(entry) for entry in self.host_cpuid],
            "xcomp_guest_supp": (
                None if self.xcomp_guest_supp is None else f"{self.xcomp_guest_supp:#x}"
            ),
        }
        if self.source:
            out["source"] = self.source
        return out

    @staticmethod
    def from_json(data: Any, source: str = "KVM dump") -> KvmDump:
        """Read :meth:`to_json`'s form; :class:`HostError` names the bad field."""
        if not isinstance(data, dict):
            raise HostError(f"{source}: expected a JSON object")
        schema = data.get("schema")
        if schema != DUMP_SCHEMA:
            raise HostError(f"{source}: schema: expected {DUMP_SCHEMA!r}, got {schema!r}")
        cpuid = tuple(
            _entry_from_json(item, f"{source}: cpuid[{i}]")
            for i, item in enumerate(_list(data, "cpuid", source))
        )
        host_cpuid = tuple(
            _entry_from_json(item, f"{source}: host_cpuid[{i}]")
            for i, item in enumerate(_list(data, "host_cpuid", source, required=False))
        )
        raw_msrs = data.get("msrs", {})
        if not isinstance(raw_msrs, dict):
            raise HostError(f"{source}: msrs: expected an object of MSR index -> value")
        msrs = {
            _int(key, f"{source}: msrs key {key!r}"): _int(value, f"{source}: msrs[{key!r}]")
            for key, value in raw_msrs.items()
        }
        msr_index = tuple(
            _int(item, f"{source}: msr_index[{i}]")
            for i, item in enumerate(_list(data, "msr_index", source, required=False))
        )
        raw_caps = data.get("capabilities", {})
        if not isinstance(raw_caps, dict):
            raise HostError(f"{source}: capabilities: expected an object of name -> integer")
        capabilities = {
            str(name): _int(value, f"{source}: capabilities[{name!r}]")
            for name, value in raw_caps.items()
        }
        xcomp = data.get("xcomp_guest_supp")
        return KvmDump(
            cpuid=cpuid,
            msrs=msrs,
            capabilities=capabilities,
            msr_index=msr_index,
            host_cpuid=host_cpuid,
            xcomp_guest_supp=None if xcomp is None else _int(xcomp, f"{source}: xcomp_guest_supp"),
            api_version=_int(data.get("api_version", 12), f"{source}: api_version"),
            source=str(data.get("source", source)),
        )


_REGISTERS = ("eax", "ebx", "ecx", "edx")
_ENTRY_FIELDS = ("function", "index", "flags", *_REGISTERS)


def _entry_to_json(entry: CpuidEntry) -> dict[str, str]:
    return {name: f"{getattr(entry, name):#x}" for name in _ENTRY_FIELDS}


def _entry_from_json(item: Any, where: str) -> CpuidEntry:
    if not isinstance(item, dict):
        raise HostError(f"{where}: expected an object with {', '.join(_ENTRY_FIELDS)}")
    values = {}
    for name in _ENTRY_FIELDS:
        if name not in item:
            raise HostError(f"{where}.{name}: missing")
        values[name] = _int(item[name], f"{where}.{name}")
    return CpuidEntry(**values)


def _list(data: dict[str, Any], key: str, source: str, required: bool = True) -> list[Any]:
    if key not in data:
        if required:
            raise HostError(f"{source}: {key}: missing")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise HostError(f"{source}: {key}: expected a list")
    return value


def _int(value: Any, where: str) -> int:
    """An unsigned integer from JSON: a number or a string (``"0x1f"``, ``"31"``)."""
    if isinstance(value, bool):
        raise HostError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value, 0)
        except ValueError:
            raise HostError(f"{where}: expected an integer, got {value!r}") from None
    else:
        raise HostError(f"{where}: expected an integer, got {value!r}")
    if number < 0:
        raise HostError(f"{where}: expected a non-negative integer, got {number}")
    return number


# --- I/O ---------------------------------------------------------------------------------------


KVM_API_VERSION = 12
"""The only KVM API version Linux has ever reported (since 2.6.22); QEMU refuses any other."""


def kvm_usable(path: str | os.PathLike[str] = "/dev/kvm") -> bool:
    """Whether KVM answers on ``path`` as QEMU needs it: it opens read-write and speaks API 12.

    Asked of the device, not of its permission bits: root may open anything, and a device that
    opens but is not KVM (a bind-mounted /dev/null, a module without hardware support) makes
    QEMU's ``-accel kvm`` fail all the same.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION)
    except OSError:
        return False
    finally:
        os.close(fd)


def read_kvm(path: str | os.PathLike[str] = "/dev/kvm") -> KvmDump:
    """Ask KVM (system ioctls on ``path``) what it can give a guest; no VM is created."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostError(f"{path}: no such device (KVM not available: module not loaded?)") from None
    except PermissionError:
        raise HostError(
            f"{path}: permission denied (add the user to the 'kvm' group, or run as root)"
        ) from None
    except OSError as err:
        raise HostError(f"{path}: cannot open: {err.strerror}") from None
    try:
        api = _ioctl_int(fd, KVM_GET_API_VERSION, 0, path, "KVM_GET_API_VERSION")
        capabilities = {
            name: _ioctl_int(fd, KVM_CHECK_EXTENSION, number, path, f"KVM_CHECK_EXTENSION({name})")
            for name, number in CAPABILITIES.items()
        }
        cpuid = _supported_cpuid(fd, path)
        msr_index = _msr_list(fd, KVM_GET_MSR_INDEX_LIST, path, "KVM_GET_MSR_INDEX_LIST")
        msrs: dict[int, int] = {}
        if capabilities["KVM_CAP_GET_MSR_FEATURES"] > 0:
            listed = _msr_list(
                fd, KVM_GET_MSR_FEATURE_INDEX_LIST, path, "KVM_GET_MSR_FEATURE_INDEX_LIST"
            )
            msrs = {index: _read_msr(fd, index, path) for index in listed}
        xcomp = None
        if capabilities["KVM_CAP_SYS_ATTRIBUTES"] > 0:
            xcomp = _xcomp_guest_supp(fd)
    finally:
        os.close(fd)
    return KvmDump(
        cpuid=cpuid,
        msrs=msrs,
        capabilities=capabilities,
        msr_index=msr_index,
        host_cpuid=_host_cpuid(),
        xcomp_guest_supp=xcomp,
        api_version=api,
        source=str(path),
    )


def _failure(path: str | os.PathLike[str], what: str, err: OSError) -> HostError:
    return HostError(f"{path}: {what} failed: {err.strerror or err}")


def _ioctl_int(fd: int, request: int, arg: int, path: str | os.PathLike[str], what: str) -> int:
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as err:
        raise _failure(path, what, err) from None


def _supported_cpuid(fd: int, path: str | os.PathLike[str]) -> tuple[CpuidEntry, ...]:
    nent = 64
    while True:
        buffer = bytearray(struct.pack("<II", nent, 0) + bytes(_CPUID_ENTRY.size * nent))
        try:
            fcntl.ioctl(fd, KVM_GET_SUPPORTED_CPUID, buffer, True)
        except OSError as err:
            if err.errno == errno.E2BIG and nent < _MAX_CPUID_ENTRIES:
                nent *= 2
                continue
            raise _failure(path, "KVM_GET_SUPPORTED_CPUID", err) from None
        count = struct.unpack_from("<I", buffer)[0]
        return tuple(
            CpuidEntry(*_CPUID_ENTRY.unpack_from(buffer, 8 + _CPUID_ENTRY.size * i))
            for i in range(count)
        )


def _msr_list(fd: int, request: int, path: str | os.PathLike[str], what: str) -> tuple[int, ...]:
    probe = bytearray(struct.pack("<I", 0))
    try:
        fcntl.ioctl(fd, request, probe, True)
    except OSError as err:
        if err.errno != errno.E2BIG:  # E2BIG: KVM wrote the count it needs
            raise _failure(path, what, err) from None
    count = struct.unpack_from("<I", probe)[0]
    buffer = bytearray(struct.pack("<I", count) + bytes(4 * count))
    try:
        fcntl.ioctl(fd, request, buffer, True)
    except OSError as err:
        raise _failure(path, what, err) from None
    count = struct.unpack_from("<I", buffer)[0]
    return struct.unpack_from(f"<{count}I", buffer, 4)


def _read_msr(fd: int, index: int, path: str | os.PathLike[str]) -> int:
    buffer = bytearray(struct.pack("<II", 1, 0) + _MSR_ENTRY.pack(index, 0, 0))
    try:
        done = fcntl.ioctl(fd, KVM_GET_MSRS, buffer, True)
    except OSError as err:
        raise _failure(path, f"KVM_GET_MSRS({index:#x})", err) from None
    if done != 1:
        raise HostError(f"{path}: KVM_GET_MSRS({index:#x}) read {done} MSRs, expected 1")
    value: int = _MSR_ENTRY.unpack_from(buffer, 8)[2]
    return value


def _xcomp_guest_supp(fd: int) -> int | None:
    value = ctypes.c_uint64(0)
    attr = bytearray(struct.pack("<IIQQ", 0, 0, KVM_X86_XCOMP_GUEST_SUPP, ctypes.addressof(value)))
    try:
        fcntl.ioctl(fd, KVM_GET_DEVICE_ATTR, attr, True)
    except OSError:
        return None  # QEMU then keeps KVM's CPUID 0xd answer
    return int(value.value)


def _host_cpuid() -> tuple[CpuidEntry, ...]:
    """The host's own CPUID leaves QEMU reads: ``/dev/cpu/0/cpuid``, else ``/proc/cpuinfo``."""
    try:
        with Path("/dev/cpu/0/cpuid").open("rb", buffering=0) as device:
            entries = []
            for leaf, subleaf in HOST_CPUID_LEAVES:
                raw = os.pread(device.fileno(), 16, (subleaf << 32) | leaf)
                entries.append(CpuidEntry(leaf, subleaf, 0, *struct.unpack("<4I", raw)))
            return tuple(entries)
    except OSError:
        pass
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    features, _ = FeatureTable.bundled().from_linux_flags(flags)
    return host_cpuid_from_features(features)


def host_cpuid_from_features(
    features: Iterable[str], table: FeatureTable | None = None
) -> tuple[CpuidEntry, ...]:
    """:data:`HOST_CPUID_LEAVES` with the bits of ``features`` set (for cpuinfo and fixtures)."""
    table = table or FeatureTable.bundled()
    registers = {key: dict.fromkeys(_REGISTERS, 0) for key in HOST_CPUID_LEAVES}
    for name in features:
        for loc in table.get(name).locations:
            if isinstance(loc, CpuidBit) and (loc.leaf, loc.subleaf or 0) in registers:
                registers[(loc.leaf, loc.subleaf or 0)][loc.register] |= _bit(loc.bit)
    return tuple(
        CpuidEntry(leaf, subleaf, 0, *(registers[(leaf, subleaf)][r] for r in _REGISTERS))
        for leaf, subleaf in HOST_CPUID_LEAVES
    )


# --- decoding: QEMU's view ---------------------------------------------------------------------


def kvm_vendor(dump: KvmDump) -> str:
    """The host's CPU vendor string from CPUID leaf 0 (``GenuineIntel``, ``AuthenticAMD``)."""
    leaf0 = dump.entry(0)
    if leaf0 is None:
        raise HostError(f"{dump.source or 'KVM dump'}: cpuid: no leaf 0 (vendor)")
    return struct.pack("<3I", leaf0.ebx, leaf0.edx, leaf0.ecx).decode("ascii", errors="replace")


def _signature(dump: KvmDump) -> tuple[int, int, int]:
    leaf1 = dump.entry(1)
    eax = leaf1.eax if leaf1 else 0
    family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF)
    model = ((eax >> 4) & 0xF) | ((eax & 0xF0000) >> 12)
    return family, model, eax & 0xF


def _host_tsx_broken(dump: KvmDump) -> bool:
    """Haswells whose TSX is known broken: QEMU hides ``hle``/``rtm`` on them."""
    family, model, stepping = _signature(dump)
    return (
        kvm_vendor(dump) == "GenuineIntel"
        and family == 6
        and ((model == 63 and stepping < 4) or model in (60, 69, 70))
    )


def _host_register(dump: KvmDump, leaf: int, subleaf: int, register: str) -> int:
    for entry in dump.host_cpuid:
        if entry.function == leaf and entry.index == subleaf:
            return entry.register(register)
    return 0


# QEMU's changes to KVM's answer that came with a release, by the first release that has them
# (the QEMU commits: "allow fast string operations if host supports them" 8.0, "Allow MCDT_NO if
# host supports" 8.1, "Fix CPUID_HT exposure" 8.2, SUCCOR/OVERFLOW_RECOV 9.1, "Expose
# ARCH_CAP_FB_CLEAR when invulnerable to MDS" 10.2).
SINCE_HOST_FAST_STRINGS = (8, 0)
SINCE_HOST_MCDT_NO = (8, 1)
SINCE_HT = (8, 2)
SINCE_MCA_RECOVERY = (9, 1)
SINCE_FB_CLEAR = (10, 2)
SINCE_PMU_FEATURES_DROPPED = (10, 1)
"""From 10.1 QEMU drops ``pdcm`` and ``arch-lbr`` from a vCPU without a PMU (the default)
instead of refusing them (``pc_compat_10_0`` sets ``x-pdcm-on-even-without-pmu`` for older
machine types): ``-cpu host`` leaves them off, a model asking for them is never refused."""
NEVER_REFUSED_WITHOUT_PMU = frozenset({"pdcm", "arch-lbr"})

# Bits QEMU copies from the host's own CPUID: (since, leaf, subleaf, register, mask).
_HOST_PASSTHROUGH: tuple[tuple[tuple[int, int], int, int, str, int], ...] = (
    (SINCE_HOST_FAST_STRINGS, 7, 0, "ebx", _bit(9)),  # erms
    (SINCE_HOST_FAST_STRINGS, 7, 0, "edx", _bit(4)),  # fsrm
    (SINCE_HOST_FAST_STRINGS, 7, 1, "eax", _bit(10) | _bit(11) | _bit(12)),  # fzrm fsrs fsrc
    (SINCE_HOST_MCDT_NO, 7, 2, "edx", _bit(5)),  # mcdt-no
)


def supported_cpuid_register(
    dump: KvmDump, leaf: int, subleaf: int, register: str, release: tuple[int, int]
) -> int:
    """QEMU's ``kvm_arch_get_supported_cpuid`` for one register under ``release``'s rules."""
    xcomp = dump.xcomp_guest_supp
    if (leaf, subleaf) == (0xD, 0) and register in ("eax", "edx") and xcomp is not None:
        # XSAVE components that need arch_prctl first are missing from KVM's CPUID answer.
        return xcomp & 0xFFFFFFFF if register == "eax" else xcomp >> 32
    entry = dump.entry(leaf, subleaf)
    value = entry.register(register) if entry else 0
    key = (leaf, subleaf, register)
    if key == (1, 0, "edx"):
        value |= _bit(12) | _bit(16) | _bit(7) | _bit(14)  # mtrr pat mce mca
        if release >= SINCE_HT:
            value |= _bit(28)  # ht: QEMU can give it with more than one vCPU
    elif key == (1, 0, "ecx"):
        value |= _bit(31)  # hypervisor
        if dump.capabilities.get("KVM_CAP_TSC_DEADLINE_TIMER", 0) > 0:
            value |= _bit(24)  # tsc-deadline (with the in-kernel irqchip)
    elif key == (6, 0, "eax"):
        value |= _bit(2)  # arat: the APIC is emulated
    elif key == (7, 0, "ebx") and _host_tsx_broken(dump):
        value &= ~(_bit(4) | _bit(11))  # hle rtm
    elif key == (7, 0, "edx") and MSR_IA32_ARCH_CAPABILITIES not in dump.msr_index:
        value &= ~_bit(29)  # arch-capabilities: Linux 4.17-4.20 reported it wrongly on AMD
    elif key == (0x80000001, 0, "ecx"):
        value |= _bit(22)  # topoext
    elif key == (0x80000001, 0, "edx"):
        amd_aliases = 0x0183F3FF
        value |= supported_cpuid_register(dump, 1, 0, "edx", release) & amd_aliases
    elif key == (0x80000007, 0, "ebx") and release >= SINCE_MCA_RECOVERY:
        value |= _bit(0) | _bit(1)  # overflow-recov succor
    elif key == (0x40000001, 0, "edx"):
        value |= _bit(0)  # kvm-hint-dedicated
    for since, p_leaf, p_subleaf, p_register, mask in _HOST_PASSTHROUGH:
        if release >= since and key == (p_leaf, p_subleaf, p_register):
            value |= _host_register(dump, leaf, subleaf, register) & mask
    return value


# XSAVE state components (CPUID 0xd.0 EAX/EDX bits) a feature needs: QEMU reports the feature
# unavailable when KVM cannot give a guest one of them.
_XSAVE_COMPONENTS: Mapping[str, int] = {
    "avx": _bit(2),
    "mpx": _bit(3) | _bit(4),
    "avx512f": _bit(5) | _bit(6) | _bit(7),
    "pku": _bit(9),
    "amx-tile": _bit(17) | _bit(18),
}


_ARCH_CAP_FB_CLEAR_NEEDS = _bit(5) | _bit(8) | _bit(13) | _bit(14) | _bit(15)
"""mds-no taa-no sbdr-ssdp-no fbsdp-no psdp-no: with all of them QEMU adds fb-clear (bit 17)."""


def supported_msr(dump: KvmDump, index: int, release: tuple[int, int]) -> int:
    """QEMU's ``kvm_arch_get_supported_msr_feature``: 0 unless KVM lists it as a feature MSR."""
    if index not in dump.msrs:
        return 0
    value = dump.msrs[index]
    if index == MSR_VMX_PROCBASED_CTLS2 and index not in dump.msr_index:
        # KVM forgot these allowed-1 bits for a while; QEMU adds them itself.
        for leaf, subleaf, register, cpuid_bit, vmx_bit in (
            (0xD, 1, "eax", 3, 20),  # xsaves -> vmx-xsaves
            (1, 0, "ecx", 30, 11),  # rdrand -> vmx-rdrand-exit
            (7, 0, "ebx", 10, 12),  # invpcid -> vmx-invpcid-exit
            (7, 0, "ebx", 18, 16),  # rdseed -> vmx-rdseed-exit
            (0x80000001, 0, "edx", 27, 3),  # rdtscp -> vmx-rdtscp-exit
        ):
            if supported_cpuid_register(dump, leaf, subleaf, register, release) & _bit(cpuid_bit):
                value |= _bit(32 + vmx_bit)
    if index in _VMX_CONTROL_MSRS:
        must_be_one, may_be_one = value & 0xFFFFFFFF, value >> 32
        return may_be_one & ~must_be_one
    if (
        index == MSR_IA32_ARCH_CAPABILITIES
        and release >= SINCE_FB_CLEAR
        and value & _ARCH_CAP_FB_CLEAR_NEEDS == _ARCH_CAP_FB_CLEAR_NEEDS
    ):
        value |= _bit(17)
    return value


# MSR feature words exist for a guest only while what they depend on is on (QEMU's
# feature_dependencies, in order): (needed bit, MSR index, mask of the bits that need it). A needed
# bit is ("cpuid", leaf, subleaf, register, bit) or ("msr", index, 0, "", bit).
_Need = tuple[str, int, int, str, int]
_VMX = ("cpuid", 1, 0, "ecx", 5)
_MSR_DEPENDENCIES: tuple[tuple[_Need, int, int], ...] = (
    (("cpuid", 7, 0, "edx", 29), MSR_IA32_ARCH_CAPABILITIES, ~0),  # arch-capabilities
    (("cpuid", 7, 0, "edx", 30), MSR_IA32_CORE_CAPABILITY, ~0),  # core-capability
    (("cpuid", 1, 0, "ecx", 15), MSR_IA32_PERF_CAPABILITIES, ~0),  # pdcm
    *((_VMX, index, ~0) for index in (0x48E, 0x48D, 0x48F, 0x490, 0x485, 0x480)),
    (("cpuid", 0x80000001, 0, "edx", 29), 0x490, _bit(9)),  # lm -> vmx-entry-ia32e-mode
    (("msr", 0x48E, 0, "", 31), 0x48B, ~0),  # activate secondary controls -> secondary
    (("cpuid", 0xD, 1, "eax", 3), 0x48B, _bit(20)),  # xsaves
    (("cpuid", 1, 0, "ecx", 30), 0x48B, _bit(11)),  # rdrand
    (("cpuid", 7, 0, "ebx", 10), 0x48B, _bit(12)),  # invpcid
    (("cpuid", 7, 0, "ebx", 18), 0x48B, _bit(16)),  # rdseed
    (("cpuid", 0x80000001, 0, "edx", 27), 0x48B, _bit(3)),  # rdtscp
    (("msr", 0x48B, 0, "", 1), 0x48C, 0xFFFFFFFF),  # ept -> ept caps
    (("msr", 0x48B, 0, "", 1), 0x48B, _bit(7)),  # ept -> unrestricted guest
    (("msr", 0x48B, 0, "", 5), 0x48C, 0xFFFFFFFF << 32),  # vpid -> vpid caps
    (("msr", 0x48B, 0, "", 13), 0x491, ~0),  # vmfunc -> vmfunc word
)


def _msr_words(dump: KvmDump, release: tuple[int, int]) -> dict[int, int]:
    """MSR feature words as ``-cpu host`` has them (QEMU reports MSR features from there)."""
    words = {index: supported_msr(dump, index, release) for index in dump.msrs}
    for (kind, where, subleaf, register, bit), index, mask in _MSR_DEPENDENCIES:
        if kind == "cpuid":
            have = supported_cpuid_register(dump, where, subleaf, register, release)
        else:
            have = words.get(where, 0)
        if not have & _bit(bit) and index in words:
            words[index] &= ~mask
    return words


def kvm_offers(
    dump: KvmDump,
    known: FeatureSet,
    release: tuple[int, int],
    table: FeatureTable | None = None,
) -> FeatureSet:
    """The features of ``known`` QEMU ``release`` offers a guest under KVM on the dumped host.

    CPUID features: those whose every bit QEMU's filter accepts for a vCPU that asks for them
    (so ``invtsc``, which ``-cpu host`` leaves off, counts). MSR features: those ``-cpu host``
    switches on (their CPUID flag must be offered too).
    """
    table = table or FeatureTable.bundled()
    release = (release[0], release[1])
    registers: dict[tuple[int, int, str], int] = {}
    msr_words = _msr_words(dump, release)
    xsave_components = supported_cpuid_register(dump, 0xD, 0, "eax", release) | (
        supported_cpuid_register(dump, 0xD, 0, "edx", release) << 32
    )
    offered = set()
    for name in known:
        if name not in table:
            continue
        feature = table.get(name)
        if not feature.locations:
            continue
        ok = True
        for loc in feature.locations:
            if isinstance(loc, CpuidBit):
                key = (loc.leaf, loc.subleaf or 0, loc.register)
                if key not in registers:
                    registers[key] = supported_cpuid_register(dump, *key, release)
                ok = bool(registers[key] & _bit(loc.bit))
            elif isinstance(loc, MsrBit):
                ok = bool(msr_words.get(loc.index, 0) & _bit(loc.bit))
            if not ok:
                break
        components = _XSAVE_COMPONENTS.get(feature.name, 0)
        if ok and components and components & ~xsave_components:
            ok = False
        if ok:
            offered.add(feature.name)
    if release >= SINCE_PMU_FEATURES_DROPPED:
        offered |= NEVER_REFUSED_WITHOUT_PMU & known
    return frozenset(offered)
