"""Build cpuver's bundled feature table from the QEMU facts, Linux's and libvirt's feature names.

The package cannot read the shared QEMU facts at run time, so this maintainer script turns them
into ``src/cpuver/catalog/data/features.json``. Linux ``/proc/cpuinfo`` names and libvirt's CPU
map names are joined to QEMU features by location (CPUID leaf, subleaf, register, bit, or MSR
index and bit), never by spelling, because the projects name many bits differently (Linux
``dts``, ``rng``, ``tsc_deadline_timer`` are QEMU ``ds``, ``xstore``, ``tsc-deadline``; libvirt
``pclmuldq``, ``cmt`` are QEMU ``pclmulqdq``, Linux ``cqm``). A join is checked against the QEMU
spellings libvirt records itself (``<alias source='qemu'>``).

libvirt's names come from ``tools/libvirt_x86_features.json``, facts extracted from one libvirt
release's ``cpu_map/x86_features.xml`` (its source is recorded in the file), so the table can be
rebuilt without libvirt installed. To re-extract them from another release, pass that file with
``--import-libvirt XML --libvirt-source TEXT``.

The output is deterministic (sorted, fixed formatting, trailing newline) so that running the script
twice gives identical bytes and a test can prove the bundled file is current.

Feature names of QEMU releases newer than the facts come from fragments in the same format
(``--more-facts``, default: ``tools/qemu_features_11.1.json``, written by
``tools/qemu_feature_locations.py`` from a QEMU binary).

Usage: python tools/build_feature_table.py QEMU_FEATURES_JSON [--output PATH]
       [--more-facts FRAGMENT ...] [--libvirt-data PATH]
       [--import-libvirt X86_FEATURES_XML --libvirt-source TEXT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "src" / "cpuver" / "catalog" / "data" / "features.json"
DEFAULT_LIBVIRT_DATA = Path(__file__).resolve().with_name("libvirt_x86_features.json")
DEFAULT_MORE_FACTS = (Path(__file__).resolve().with_name("qemu_features_11.1.json"),)

LINUX_SOURCE = (
    "torvalds/linux arch/x86/include/asm/cpufeatures.h "
    "at commit baf8361e54550a48a7087b603313ad013cc13386"
)

# Facts from LINUX_SOURCE: for each Linux capability word that is a plain CPUID register which QEMU
# also models, the word's (leaf, subleaf, register) as its heading comment states, and the
# /proc/cpuinfo name of each bit (the quoted string of the bit's comment, else the lowercased macro
# name without X86_FEATURE_). Bits whose quoted string is "" are not shown by Linux and are left
# out. Subleaf is None where QEMU's facts treat the leaf as not indexed. Not listed: words Linux
# defines itself or fills from scattered leaves (3, 7, 8, 11, 21), words for leaves QEMU does not
# model (2, 19), and word 20 (0x80000021 EAX), all of whose bits Linux hides.
# fmt: off
LINUX_CPUID_WORDS: dict[int, tuple[int, int | None, str, dict[int, str]]] = {
    0: (0x1, None, "edx", {
        0: "fpu", 1: "vme", 2: "de", 3: "pse", 4: "tsc", 5: "msr", 6: "pae", 7: "mce",
        8: "cx8", 9: "apic", 11: "sep", 12: "mtrr", 13: "pge", 14: "mca", 15: "cmov",
        16: "pat", 17: "pse36", 18: "pn", 19: "clflush", 21: "dts", 22: "acpi", 23: "mmx",
        24: "fxsr", 25: "sse", 26: "sse2", 27: "ss", 28: "ht", 29: "tm", 30: "ia64", 31: "pbe",
    }),
    1: (0x80000001, None, "edx", {
        11: "syscall", 19: "mp", 20: "nx", 22: "mmxext", 25: "fxsr_opt", 26: "pdpe1gb",
        27: "rdtscp", 29: "lm", 30: "3dnowext", 31: "3dnow",
    }),
    4: (0x1, None, "ecx", {
        0: "pni", 1: "pclmulqdq", 2: "dtes64", 3: "monitor", 4: "ds_cpl", 5: "vmx", 6: "smx",
        7: "est", 8: "tm2", 9: "ssse3", 10: "cid", 11: "sdbg", 12: "fma", 13: "cx16",
        14: "xtpr", 15: "pdcm", 17: "pcid", 18: "dca", 19: "sse4_1", 20: "sse4_2",
        21: "x2apic", 22: "movbe", 23: "popcnt", 24: "tsc_deadline_timer", 25: "aes",
        26: "xsave", 28: "avx", 29: "f16c", 30: "rdrand", 31: "hypervisor",
    }),
    5: (0xC0000001, None, "edx", {
        2: "rng", 3: "rng_en", 6: "ace", 7: "ace_en", 8: "ace2", 9: "ace2_en", 10: "phe",
        11: "phe_en", 12: "pmm", 13: "pmm_en",
    }),
    6: (0x80000001, None, "ecx", {
        0: "lahf_lm", 1: "cmp_legacy", 2: "svm", 3: "extapic", 4: "cr8_legacy", 5: "abm",
        6: "sse4a", 7: "misalignsse", 8: "3dnowprefetch", 9: "osvw", 10: "ibs", 11: "xop",
        12: "skinit", 13: "wdt", 15: "lwp", 16: "fma4", 17: "tce", 19: "nodeid_msr",
        21: "tbm", 22: "topoext", 23: "perfctr_core", 24: "perfctr_nb", 26: "bpext",
        27: "ptsc", 28: "perfctr_llc", 29: "mwaitx",
    }),
    9: (0x7, 0, "ebx", {
        0: "fsgsbase", 1: "tsc_adjust", 2: "sgx", 3: "bmi1", 4: "hle", 5: "avx2", 7: "smep",
        8: "bmi2", 9: "erms", 10: "invpcid", 11: "rtm", 12: "cqm", 14: "mpx", 15: "rdt_a",
        16: "avx512f", 17: "avx512dq", 18: "rdseed", 19: "adx", 20: "smap",
        21: "avx512ifma", 23: "clflushopt", 24: "clwb", 25: "intel_pt", 26: "avx512pf",
        27: "avx512er", 28: "avx512cd", 29: "sha_ni", 30: "avx512bw", 31: "avx512vl",
    }),
    10: (0xD, 1, "eax", {
        0: "xsaveopt", 1: "xsavec", 2: "xgetbv1", 3: "xsaves",
    }),
    12: (0x7, 1, "eax", {
        4: "avx_vnni", 5: "avx512_bf16", 26: "lam",
    }),
    13: (0x80000008, None, "ebx", {
        0: "clzero", 1: "irperf", 2: "xsaveerptr", 4: "rdpru", 9: "wbnoinvd", 23: "amd_ppin",
        25: "virt_ssbd", 27: "cppc", 31: "brs",
    }),
    14: (0x6, None, "eax", {
        0: "dtherm", 1: "ida", 2: "arat", 4: "pln", 6: "pts", 7: "hwp", 8: "hwp_notify",
        9: "hwp_act_window", 10: "hwp_epp", 11: "hwp_pkg_req", 19: "hfi",
    }),
    15: (0x8000000A, None, "edx", {
        0: "npt", 1: "lbrv", 2: "svm_lock", 3: "nrip_save", 4: "tsc_scale", 5: "vmcb_clean",
        6: "flushbyasid", 7: "decodeassists", 10: "pausefilter", 12: "pfthreshold",
        13: "avic", 15: "v_vmsave_vmload", 16: "vgif", 18: "x2avic", 20: "v_spec_ctrl",
        25: "vnmi",
    }),
    16: (0x7, 0, "ecx", {
        1: "avx512vbmi", 2: "umip", 3: "pku", 4: "ospke", 5: "waitpkg", 6: "avx512_vbmi2",
        8: "gfni", 9: "vaes", 10: "vpclmulqdq", 11: "avx512_vnni", 12: "avx512_bitalg",
        13: "tme", 14: "avx512_vpopcntdq", 16: "la57", 22: "rdpid", 24: "bus_lock_detect",
        25: "cldemote", 27: "movdiri", 28: "movdir64b", 29: "enqcmd", 30: "sgx_lc",
    }),
    17: (0x80000007, None, "ebx", {
        0: "overflow_recov", 1: "succor", 3: "smca",
    }),
    18: (0x7, 0, "edx", {
        2: "avx512_4vnniw", 3: "avx512_4fmaps", 4: "fsrm", 8: "avx512_vp2intersect",
        10: "md_clear", 14: "serialize", 16: "tsxldtrk", 18: "pconfig", 19: "arch_lbr",
        20: "ibt", 22: "amx_bf16", 23: "avx512_fp16", 24: "amx_tile", 25: "amx_int8",
        28: "flush_l1d", 29: "arch_capabilities",
    }),
}
# fmt: on

CpuidKey = tuple[int, int | None, str, int]


def linux_names_by_location() -> dict[CpuidKey, str]:
    """Index the Linux table by CPUID location, refusing a cpuinfo name used twice."""
    by_location: dict[CpuidKey, str] = {}
    for leaf, subleaf, register, names in LINUX_CPUID_WORDS.values():
        for bit, name in names.items():
            by_location[(leaf, subleaf, register, bit)] = name
    names_seen = list(by_location.values())
    repeated = sorted({name for name in names_seen if names_seen.count(name) > 1})
    if repeated:
        raise ValueError(f"Linux cpuinfo names used at several bits: {repeated}")
    return by_location


def qemu_source(about: str) -> str:
    """Name the QEMU release and commit the facts were taken from, for the output's header."""
    match = re.search(r"at (v[\d.]+) \(commit ([0-9a-f]{40})\)", about)
    if match is None:
        raise ValueError("cannot find the QEMU release and commit in the facts' 'about'")
    return f"qemu target/i386/cpu.c feature_word_info at {match[1]} (commit {match[2]})"


def canonical_hex(number: str) -> str:
    """One spelling per number (lowercase, no leading zeros), so equal locations compare equal."""
    return f"{int(number, 16):#x}"


def locations_of(fact: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One location per bit: a few QEMU names set two bits of their word (kvmclock)."""
    bits = fact["bit"] if isinstance(fact["bit"], list) else [fact["bit"]]
    if fact["kind"] == "cpuid":
        return [
            {
                "kind": "cpuid",
                "word": fact["word"],
                "leaf": canonical_hex(fact["leaf"]),
                "subleaf": fact["subleaf"],
                "register": fact["register"],
                "bit": bit,
            }
            for bit in sorted(bits)
        ]
    if fact["kind"] == "msr":
        return [
            {
                "kind": "msr",
                "word": fact["word"],
                "index": canonical_hex(fact["msr_index"]),
                "bit": bit,
            }
            for bit in sorted(bits)
        ]
    raise ValueError(f"{fact['name']}: unknown location kind {fact['kind']!r}")


def linux_name_of(
    locations: Sequence[Mapping[str, Any]], linux: Mapping[CpuidKey, str]
) -> str | None:
    """The cpuinfo name Linux shows for the feature's CPUID bit, if any."""
    keys = [
        (int(location["leaf"], 16), location["subleaf"], location["register"], location["bit"])
        for location in locations
        if location["kind"] == "cpuid"
    ]
    names = {linux[key] for key in keys if key in linux}
    if len(names) > 1:
        raise ValueError(f"one QEMU feature at several Linux names: {sorted(names)}")
    return names.pop() if names else None


LocationKey = tuple[Any, ...]


def location_key(location: Mapping[str, Any]) -> LocationKey:
    """One hashable key per bit, equal for equal locations in the QEMU and libvirt data."""
    if location["kind"] == "cpuid":
        leaf = int(location["leaf"], 16)
        return ("cpuid", leaf, location["subleaf"], location["register"], location["bit"])
    if location["kind"] == "msr":
        return ("msr", int(location["index"], 16), location["bit"])
    raise ValueError(f"unknown location kind {location['kind']!r}")


def set_bits(mask: int) -> list[int]:
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]


def _hex_attribute(element: ElementTree.Element, attribute: str, default: str = "0") -> int:
    return int(element.get(attribute, default), 16)


def extract_libvirt(xml_text: str, source: str) -> dict[str, Any]:
    """Facts of libvirt's ``cpu_map/x86_features.xml``: each name, its bit and its aliases.

    libvirt writes a CPUID bit as ``<cpuid eax_in= [ecx_in=] REG=mask/>`` (no ``ecx_in``: leaf
    not indexed) and an MSR bit as ``<msr index= edx= eax=/>`` (a 64-bit mask, edx the high half,
    numbered 0-63 as QEMU numbers MSR feature bits). Every feature must name exactly one bit.
    """
    root = ElementTree.fromstring(xml_text)
    features: list[dict[str, Any]] = []
    for element in root.findall("feature"):
        name = element.get("name")
        if not name:
            raise ValueError("libvirt feature without a name")
        locations: list[dict[str, Any]] = []
        for cpuid in element.findall("cpuid"):
            ecx_in = cpuid.get("ecx_in")
            for register in ("eax", "ebx", "ecx", "edx"):
                locations += [
                    {
                        "kind": "cpuid",
                        "leaf": f"{_hex_attribute(cpuid, 'eax_in', ''):#x}",
                        "subleaf": None if ecx_in is None else int(ecx_in, 16),
                        "register": register,
                        "bit": bit,
                    }
                    for bit in set_bits(_hex_attribute(cpuid, register))
                ]
        for msr in element.findall("msr"):
            mask = _hex_attribute(msr, "edx") << 32 | _hex_attribute(msr, "eax")
            locations += [
                {"kind": "msr", "index": f"{_hex_attribute(msr, 'index', ''):#x}", "bit": bit}
                for bit in set_bits(mask)
            ]
        if len(locations) != 1:
            raise ValueError(f"libvirt feature {name!r} names {len(locations)} bits, not one")
        aliases = sorted(
            {(alias.get("source", ""), alias.get("name", "")) for alias in element.findall("alias")}
        )
        features.append(
            {
                "name": name,
                "location": locations[0],
                "aliases": [{"name": alias, "source": origin} for origin, alias in aliases],
            }
        )
    features.sort(key=lambda feature: feature["name"])
    names = [feature["name"] for feature in features]
    if len(set(names)) != len(names):
        raise ValueError("libvirt's CPU map lists a feature name twice")
    return {"source": source, "features": features}


def libvirt_names_by_location(libvirt: Mapping[str, Any]) -> dict[LocationKey, str]:
    """Index libvirt's names by location, refusing two names for one bit."""
    by_location: dict[LocationKey, str] = {}
    for feature in libvirt["features"]:
        key = location_key(feature["location"])
        if by_location.setdefault(key, feature["name"]) != feature["name"]:
            raise ValueError(f"libvirt names {by_location[key]!r} and {feature['name']!r} one bit")
    return by_location


def libvirt_name_of(
    name: str, locations: Sequence[Mapping[str, Any]], libvirt: Mapping[LocationKey, str]
) -> str | None:
    """The name libvirt's CPU map gives the feature's bit(s), if any.

    Where QEMU gives one name two bits that libvirt names apart (QEMU's table calls bit 41 of
    the EPT/VPID capabilities MSR ``vmx-invept-single-context`` too; libvirt calls it
    ``vmx-invvpid-single-context``), the libvirt name spelled as QEMU's is the one.
    """
    names = {libvirt[key] for key in map(location_key, locations) if key in libvirt}
    if len(names) > 1:
        names &= {name}
        if len(names) != 1:
            raise ValueError(f"QEMU {name!r} is at several libvirt names: {sorted(names)}")
    return names.pop() if names else None


def _spelling_key(spelling: str) -> str:
    """As QEMU's option parser reads a name: every "_" is a "-"."""
    return spelling.replace("_", "-")


def check_libvirt_join(features: Iterable[Mapping[str, Any]], libvirt: Mapping[str, Any]) -> None:
    """Prove the location join right with libvirt's own words.

    libvirt records the QEMU spelling of some names (``<alias source='qemu'>``, e.g. ``pclmulqdq``
    for ``pclmuldq``); each must be a spelling of the QEMU feature joined by location. And no
    libvirt name may be joined to two QEMU features.
    """
    joined: dict[str, Mapping[str, Any]] = {}
    for feature in features:
        name = feature["libvirt_name"]
        if name is None:
            continue
        if name in joined:
            raise ValueError(
                f"libvirt {name!r} joined to {joined[name]['name']!r} and {feature['name']!r}"
            )
        joined[name] = feature
    for entry in libvirt["features"]:
        qemu_aliases = [a["name"] for a in entry["aliases"] if a["source"] == "qemu"]
        if not qemu_aliases:
            continue
        owner = joined.get(entry["name"])
        if owner is None:
            raise ValueError(f"libvirt {entry['name']!r} has QEMU aliases but no QEMU bit")
        spellings = {_spelling_key(s) for s in (owner["name"], *owner["aliases"])}
        strays = [alias for alias in qemu_aliases if _spelling_key(alias) not in spellings]
        if strays:
            raise ValueError(
                f"libvirt {entry['name']!r} says QEMU calls it {strays}, "
                f"but its bit is QEMU's {owner['name']!r}"
            )


def unjoined_libvirt_names(table: Mapping[str, Any], libvirt: Mapping[str, Any]) -> list[str]:
    """libvirt names at bits QEMU has no feature for (QEMU cannot be asked for them)."""
    joined = {feature["libvirt_name"] for feature in table["features"]}
    return [entry["name"] for entry in libvirt["features"] if entry["name"] not in joined]


def build_table(
    facts: Mapping[str, Any],
    libvirt: Mapping[str, Any],
    more: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Join the QEMU facts (and fragments for newer releases) with the Linux and libvirt names
    into the bundled table's structure."""
    linux = linux_names_by_location()
    libvirt_by_location = libvirt_names_by_location(libvirt)
    features = []
    for fact in [*facts["features"], *(f for fragment in more for f in fragment["features"])]:
        locations = locations_of(fact)
        features.append(
            {
                "name": fact["name"],
                "aliases": sorted(fact["aliases"]),
                "linux_name": linux_name_of(locations, linux),
                "libvirt_name": libvirt_name_of(fact["name"], locations, libvirt_by_location),
                "locations": locations,
                "since": fact["first_release_known"],
            }
        )
    features.sort(key=lambda feature: feature["name"])
    names = [feature["name"] for feature in features]
    if len(set(names)) != len(names):
        raise ValueError("the facts list a QEMU feature name twice")
    check_libvirt_join(features, libvirt)
    source = qemu_source(facts["about"])
    if more:
        source += "; newer: " + "; ".join(str(fragment["about"]) for fragment in more)
    return {
        "libvirt_source": libvirt["source"],
        "linux_source": LINUX_SOURCE,
        "qemu_source": source,
        "features": features,
    }


def render(table: Mapping[str, Any]) -> str:
    """Stable text: header keys sorted, one feature per line so diffs show one feature each."""
    header = {key: value for key, value in table.items() if key != "features"}
    lines = ["{"]
    lines += [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in sorted(header.items())]
    lines.append('  "features": [')
    rows = [json.dumps(feature, sort_keys=True) for feature in table["features"]]
    lines += [f"    {row}," for row in rows[:-1]] + [f"    {rows[-1]}"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("facts", type=Path, help="path to qemu-facts/qemu-features.json")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write")
    parser.add_argument(
        "--more-facts",
        type=Path,
        action="append",
        help="facts fragment of a newer QEMU (default: tools/qemu_features_11.1.json)",
    )
    parser.add_argument(
        "--libvirt-data",
        type=Path,
        default=DEFAULT_LIBVIRT_DATA,
        help="libvirt feature facts to read (or, with --import-libvirt, to write)",
    )
    parser.add_argument(
        "--import-libvirt",
        type=Path,
        metavar="X86_FEATURES_XML",
        help="first re-extract --libvirt-data from libvirt's cpu_map/x86_features.xml",
    )
    parser.add_argument(
        "--libvirt-source",
        help="with --import-libvirt: where the XML came from (package, version, distribution)",
    )
    args = parser.parse_args(argv)
    if args.import_libvirt is not None:
        if not args.libvirt_source:
            parser.error("--import-libvirt needs --libvirt-source")
        xml_bytes = args.import_libvirt.read_bytes()
        source = (
            f"{args.libvirt_source}: /usr/share/libvirt/cpu_map/x86_features.xml "
            f"(sha256 {hashlib.sha256(xml_bytes).hexdigest()})"
        )
        extracted = extract_libvirt(xml_bytes.decode("utf-8"), source)
        args.libvirt_data.write_text(render(extracted), encoding="utf-8", newline="\n")
        print(
            f"wrote {args.libvirt_data}: {len(extracted['features'])} libvirt features",
            file=sys.stderr,
        )
    facts = json.loads(args.facts.read_text(encoding="utf-8"))
    libvirt = json.loads(args.libvirt_data.read_text(encoding="utf-8"))
    more = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in (args.more_facts or DEFAULT_MORE_FACTS)
    ]
    table = build_table(facts, libvirt, more)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(table), encoding="utf-8", newline="\n")
    linux = sum(feature["linux_name"] is not None for feature in table["features"])
    joined = sum(feature["libvirt_name"] is not None for feature in table["features"])
    unjoined = unjoined_libvirt_names(table, libvirt)
    print(
        f"wrote {args.output}: {len(table['features'])} features, {linux} with a Linux name, "
        f"{joined} with a libvirt name; libvirt names at bits QEMU has no feature for: "
        f"{', '.join(unjoined) or 'none'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
