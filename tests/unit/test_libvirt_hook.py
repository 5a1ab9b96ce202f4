"""cpuver's libvirt qemu hook (cpuver/hook.py, host/hookcache.py) and ``libvirt install-hook``:
the protocol, the cached snapshot and when it is probed again; through real libvirt in
tests/libvirt/."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cpuver import api
from cpuver.api.libvirt_domains import HOOK_MARKER, hook_data
from cpuver.catalog import Catalog
from cpuver.errors import HostError
from cpuver.hook import main
from cpuver.host import hookcache
from cpuver.host.capabilities import HostCapabilities

DOMAIN = """<domain type='qemu'>
  <name>web1</name>
  <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>
  <cpu><model>Westmere-v1</model></cpu>
</domain>
"""


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return api.open_catalog("10.0")


@pytest.fixture(scope="module")
def pinned_xml(q10: Catalog) -> str:
    return api.pin_definition(DOMAIN, "web1.xml", q10).xml


def fixed_cache(tmp_path: Path, q10: Catalog, lacking: frozenset[str] = frozenset()) -> str:
    host = HostCapabilities("hv1", {"tcg": q10.tcg_offers - lacking})
    path = tmp_path / "cache"
    hookcache.write_snapshot(str(path), hook_data(host, "10.0", None))
    return str(path)


def hook(xml: str, cache: str, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    code = main(list(args or ("web1", "prepare", "begin", "-")), cache, io.StringIO(xml), err)
    return code, err.getvalue()


def test_a_pinned_domain_this_host_runs_passes(pinned_xml: str, tmp_path: Path, q10: Catalog):
    assert hook(pinned_xml, fixed_cache(tmp_path, q10)) == (0, "")


def test_a_host_lacking_a_pinned_feature_refuses_with_one_line(
    pinned_xml: str, tmp_path: Path, q10: Catalog
) -> None:
    code, err = hook(pinned_xml, fixed_cache(tmp_path, q10, frozenset({"aes", "popcnt"})))
    assert code == 1
    assert err == (
        "cpuver: cannot start guest 'web1' (pinned Westmere-v1) on host 'hv1': it lacks "
        "pinned feature(s) aes, popcnt under tcg\n"
    )


@pytest.mark.parametrize(
    ("operation", "verb"),
    [("restore", "restore"), ("migrate", "receive the migration of")],
)
def test_restore_and_incoming_migration_are_guarded_too(
    pinned_xml: str, tmp_path: Path, q10: Catalog, operation: str, verb: str
) -> None:
    cache = fixed_cache(tmp_path, q10, frozenset({"aes"}))
    code, err = hook(pinned_xml, cache, "web1", operation, "begin", "-")
    assert code == 1 and err.startswith(f"cpuver: cannot {verb} guest 'web1'")


@pytest.mark.parametrize(("operation", "sub"), [("started", "begin"), ("stopped", "end")])
def test_other_calls_pass(
    pinned_xml: str, tmp_path: Path, q10: Catalog, operation: str, sub: str
) -> None:
    cache = fixed_cache(tmp_path, q10, frozenset({"aes"}))
    assert hook(pinned_xml, cache, "web1", operation, sub, "-") == (0, "")


def test_an_edited_cpu_is_refused(pinned_xml: str, tmp_path: Path, q10: Catalog) -> None:
    edited = pinned_xml.replace("policy='require' name='aes'", "policy='disable' name='aes'")
    code, err = hook(edited, fixed_cache(tmp_path, q10))
    assert code == 1 and "its <cpu> no longer matches the fingerprint" in err


def test_an_unpinned_domain_passes_even_when_nothing_can_be_read(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "cache.json")
    assert hook(DOMAIN, missing) == (0, "")
    assert hook("<domain><name>broken", missing) == (0, "")


def test_a_pinned_domain_is_refused_when_the_host_cannot_be_read(
    pinned_xml: str, tmp_path: Path
) -> None:
    bad = tmp_path / "cache"
    bad.write_text("{not a snapshot")
    code, err = hook(pinned_xml, str(bad))
    assert code == 1 and "cannot tell what this host offers" in err


def test_a_given_snapshot_is_never_probed_again(tmp_path: Path, q10: Catalog) -> None:
    cache = fixed_cache(tmp_path, q10)

    def probe(_emulator: str, _key: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("probed")

    assert hookcache.cached(cache, "/usr/bin/qemu-system-x86_64", probe)["host"] == "hv1"


def test_the_cache_is_probed_again_when_the_qemu_binary_changes(tmp_path: Path) -> None:
    emulator = tmp_path / "qemu-system-x86_64"
    emulator.write_text("one")
    cache = str(tmp_path / "cache.json")
    probes: list[dict[str, Any]] = []

    def probe(_emulator: str, key: dict[str, Any]) -> dict[str, Any]:
        probes.append(key)
        return {"schema": hookcache.SCHEMA, "key": key, "host": "h", "offers": {}}

    hookcache.cached(cache, str(emulator), probe)
    hookcache.cached(cache, str(emulator), probe)
    assert len(probes) == 1
    emulator.write_text("a new build")
    hookcache.cached(cache, str(emulator), probe)
    assert len(probes) == 2


def test_the_key_names_kernel_microcode_kvm_modules_and_qemu() -> None:
    key = hookcache.host_key(sys.executable)
    assert {"kernel", "microcode", "kvm", "qemu", "cpuver"} <= set(key)


def test_install_hook_writes_an_executable_script_that_speaks_the_protocol(
    tmp_path: Path, q10: Catalog, pinned_xml: str
) -> None:
    host = HostCapabilities("hv1", {"tcg": q10.tcg_offers - {"aes"}})
    path, how = api.install_hook(tmp_path / "hooks", tmp_path / "cache.json", host)
    assert (path, how) == (tmp_path / "hooks" / "qemu", "installed")
    done = subprocess.run(
        [str(path), "web1", "prepare", "begin", "-"],
        input=pinned_xml, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "lacks pinned feature(s) aes" in done.stderr
    assert done.stdout == ""  # libvirt would read anything here as a replacement XML


def test_install_hook_never_replaces_someone_elses_hook(tmp_path: Path, q10: Catalog) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    theirs = hooks / "qemu"
    theirs.write_text("#!/bin/sh\nexit 0\n")
    host = HostCapabilities("hv1", {"tcg": q10.tcg_offers})
    path, how = api.install_hook(hooks, tmp_path / "cache.json", host)
    assert path == hooks / "qemu.d" / "cpuver" and "beside the existing" in how
    assert theirs.read_text() == "#!/bin/sh\nexit 0\n"
    (hooks / "qemu.d" / "cpuver").write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(HostError, match="is not cpuver's hook: not replacing it"):
        api.install_hook(hooks, tmp_path / "cache.json", host)


def test_installing_again_updates_cpuvers_own_hook(tmp_path: Path, q10: Catalog) -> None:
    host = HostCapabilities("hv1", {"tcg": q10.tcg_offers})
    api.install_hook(tmp_path, tmp_path / "cache.json", host)
    path, how = api.install_hook(tmp_path, tmp_path / "cache.json", host)
    assert how == "updated" and HOOK_MARKER in path.read_text()


def test_the_hook_imports_nothing_heavy(tmp_path: Path) -> None:
    """It runs on every domain start: no catalog, feature table, resolver, pathlib or typing."""
    src = Path(api.__file__).resolve().parents[2]
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); import cpuver.hook; "
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-IS", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    heavy = {"cpuver.catalog", "cpuver.features", "cpuver.resolve", "cpuver.domain.xml",
             "pathlib", "typing", "dataclasses", "libvirt"}  # fmt: skip
    assert loaded & heavy == set()


def test_the_cli_speaks_the_protocol_too(
    pinned_xml: str, tmp_path: Path, q10: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cpuver.cli import main as cli

    cache = fixed_cache(tmp_path, q10, frozenset({"aes"}))
    monkeypatch.setattr(sys, "stdin", io.StringIO(pinned_xml))
    assert cli(["libvirt-hook", "--cache", cache, "web1", "prepare", "begin", "-"]) == 1


def test_hook_data_keeps_libvirts_spellings_where_they_differ(q10: Catalog) -> None:
    data = hook_data(HostCapabilities("h", {"tcg": q10.tcg_offers}), "10.0", None)
    assert data["libvirt-names"]["pclmuldq"] == "pclmulqdq"
    assert "aes" not in data["libvirt-names"]
    json.dumps(data)
