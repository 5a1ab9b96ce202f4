"""``cpuver domain pin|verify|update-cpu --connect`` and ``cpuver libvirt install-hook`` as a user
runs them against a real daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from libvirt_pair import Pair, hook_answers_for

from cpuver import api
from cpuver.cli import main
from cpuver.domain import pinmeta
from cpuver.host import hookcache
from cpuver.host.capabilities import HostCapabilities

SPEC = "Westmere,version=best"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pin_then_verify_a_running_domain(
    daemons: Pair,
    define: Callable[..., None],
    domain_xml: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = daemons.a.uri
    define(daemons.a, domain_xml("web1"))
    code, out, err = run(capsys, "domain", "pin", "web1", "--connect", uri, "--spec", SPEC)
    assert code == 0, err
    assert out.startswith("pinned web1: Westmere-v1 as <model>Westmere-v1</model>")
    daemons.a.virsh("start", "web1")
    code, out, _err = run(capsys, "domain", "verify", "web1", "-c", uri)
    assert (code, out.split(":")[0]) == (0, "web1")
    assert "the running vCPU is its pin Westmere-v1" in out


def test_verify_names_what_the_running_vcpu_lacks(
    daemons: Pair,
    define: Callable[..., None],
    domain_xml: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pin whose metadata claims a feature libvirt cannot name (xstore) that QEMU does not
    give this vCPU, on a host whose snapshot claims it too: libvirt's own check and the hook
    cannot see it, cpuver's verify does."""
    define(daemons.a, domain_xml("web1"))
    api.pin_domain(daemons.a.uri, "web1", spec=SPEC)
    xml = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    define(daemons.a, _claiming(xml, "xstore"))
    here = hookcache.load(str(daemons.hook_caches["hv-a"]))
    claims = {accel: frozenset(features) | {"xstore"} for accel, features in here["offers"].items()}
    with hook_answers_for(daemons, daemons.a, HostCapabilities("hv-a", claims)):
        daemons.a.virsh("start", "web1")
    code, out, _err = run(capsys, "domain", "verify", "web1", "-c", daemons.a.uri)
    assert code == 1
    assert "  xstore: pinned on, the vCPU has it off" in out


def _claiming(xml: str, feature: str) -> str:
    """``xml`` whose pin says ``feature`` is on, fingerprint and all (as if pinned so)."""
    pin = api.domain_pin(xml)
    meta = pinmeta.read(pinmeta.parse(xml).find(f"metadata/{pinmeta.TAG}"))  # type: ignore[arg-type]
    on, off = pin.on | {feature}, pin.off - {feature}
    new = pinmeta.fingerprint(pin.version, pin.machine, on, off, pin.signature.as_dict())
    before = f'on="" off="{" ".join(sorted(meta.off))}"'
    after = f'on="{feature}" off="{" ".join(sorted(meta.off - {feature}))}"'
    assert before in xml and meta.fingerprint is not None
    return xml.replace(meta.fingerprint, new).replace(before, after)


def test_update_cpu_dry_run_shows_the_diff_and_changes_nothing(
    daemons: Pair,
    define: Callable[..., None],
    domain_xml: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    define(daemons.a, domain_xml("web1"))
    api.pin_domain(daemons.a.uri, "web1", spec="Westmere-v1")
    before = daemons.a.virsh("dumpxml", "--inactive", "web1").stdout
    code, out, err = run(
        capsys, "domain", "update-cpu", "web1", "-c", daemons.a.uri, "--to", "v2", "--dry-run"
    )
    assert code == 0, err
    assert out.startswith("Westmere-v1 -> Westmere-v2\n") and "(dry run: nothing changed)" in out
    assert daemons.a.virsh("dumpxml", "--inactive", "web1").stdout == before


def test_install_hook_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks, cache = tmp_path / "hooks", tmp_path / "cache"
    code, out, err = run(
        capsys, "libvirt", "install-hook", "--hooks-dir", str(hooks), "--cache", str(cache)
    )
    assert code == 0, err
    assert out.startswith(f"installed {hooks / 'qemu'} (answers from this host, probed again")
    assert (hooks / "qemu").stat().st_mode & 0o111 and cache.exists()
