"""Hosts from libvirt: a running daemon's domcapabilities read as a host (``host probe --via
libvirt``, a domcapabilities file wherever a host file goes, ``fleet add --connect``), and
``domain targets`` agreeing with what the daemons' hooks decide.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from libvirt_pair import Pair, hook_answers_for, this_host_without

from cpuver import api
from cpuver.cli import main
from cpuver.host import hookcache
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.domcaps import PROBE_MACHINE, parse_domain_capabilities
from cpuver.host.kvm import kvm_usable
from cpuver.host.qemu import QemuInstall, QmpSession
from cpuver.libvirt import Connection
from cpuver.resolve import Resolver

ACCELS = ["tcg", "kvm"] if kvm_usable() else ["tcg"]
VIRTTYPE = {"tcg": "qemu", "kvm": "kvm"}


def qemu_unavailable(accel: str) -> dict[str, frozenset[str]]:
    """QEMU 10.0's own unavailable-features of every model, asked as libvirt asks it."""
    binary = Path(os.environ.get("CPUVER_QEMU_10_0", "/usr/bin/qemu-system-x86_64"))
    with QmpSession(QemuInstall(binary), PROBE_MACHINE, accel) as qmp:
        listed = qmp.command("query-cpu-definitions")
    return {e["name"]: frozenset(e.get("unavailable-features", [])) for e in listed}


@pytest.mark.parametrize("accel", ACCELS)
def test_domcapabilities_read_as_a_host_give_libvirts_and_qemus_blockers(
    daemons: Pair, accel: str
) -> None:
    with Connection(daemons.a.uri) as conn:
        text = conn.domain_capabilities(VIRTTYPE[accel])
    caps = parse_domain_capabilities(text, "domcapabilities")
    host = api.probe_libvirt(daemons.a.uri)
    catalog = api.open_catalog("10.0")
    resolver = Resolver(catalog, PROBE_MACHINE, accel, host)
    qemu = qemu_unavailable(accel)
    mine = {name: frozenset(resolver.unavailable(catalog.lookup(name))) for name in caps.usable}
    assert {n: m for n, m in mine.items() if m != caps.blockers[n]} == {}
    assert {n: not m for n, m in mine.items()} == dict(caps.usable)
    assert {n: m for n, m in mine.items() if m != qemu[n]} == {}


def test_host_probe_via_libvirt_writes_the_daemons_host(
    daemons: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["host", "probe", "--via", "libvirt", "--connect", daemons.b.uri]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert (snapshot["host"], snapshot["method"]) == ("hv-b", "libvirt")
    assert set(snapshot["releases"]["10.0"]) == set(ACCELS)


def test_a_domcapabilities_file_is_a_host_file(
    daemons: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hv-a.xml"
    path.write_text(daemons.a.virsh("domcapabilities", "--virttype", "qemu").stdout)
    read = api.read_host(str(path))
    probed = api.probe_libvirt(daemons.a.uri)
    assert (read.name, read.offered("tcg", "10.0")) == ("hv-a", probed.offered("tcg", "10.0"))
    assert main(["resolve", "Westmere,version=best", "--host", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "Westmere-v1"


def test_fleet_add_connect_stores_the_host_behind_each_connection(
    daemons: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    args = ["fleet", "add", "--pool", "lab", "-c", daemons.a.uri, "-c", daemons.b.uri, "--db", db]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["fleet", "ls", "--pool", "lab", "--json", "--db", db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["host"] for row in rows) == ["hv-a", "hv-b"]


def test_domain_targets_agree_with_the_hooks(
    daemons: Pair,
    define: Callable[..., None],
    domain_xml: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stored hosts are what the hooks answer from: a host targets says runs the pin lets the
    domain migrate there; a host it names as lacking a feature refuses it for that feature."""
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = api.open_host_store(db)
    here = hookcache.load(str(daemons.hook_caches["hv-a"]))
    api.add_host(store, HostCapabilities(here["host"], _offers(here)), ["lab"])
    lacking = this_host_without(daemons, "aes")
    api.add_host(store, lacking, ["lab"])
    define(daemons.a, domain_xml("web1"))
    api.pin_domain(daemons.a.uri, "web1", spec="Westmere,version=best")
    rows = dict(api.domain_targets(daemons.a.uri, "web1", api.stored_hosts(store)))
    assert rows == {here["host"]: (), "hv-b": ("aes",)}
    assert main(["domain", "targets", "web1", "--connect", daemons.a.uri, "--db", db]) == 0
    assert "not on hv-b: lacks aes" in capsys.readouterr().out
    daemons.a.virsh("start", "web1")
    with hook_answers_for(daemons, daemons.b, lacking):
        refused = daemons.a.virsh(
            "migrate", "--live", "--unsafe", "--migrateuri", "tcp://127.0.0.1", "web1",
            daemons.b.uri, check=False,
        )  # fmt: skip
    assert "lacks pinned feature(s) aes" in refused.stderr
    with hook_answers_for(daemons, daemons.b, HostCapabilities("hv-b", _offers(here))):
        daemons.a.virsh(
            "migrate", "--live", "--unsafe", "--migrateuri", "tcp://127.0.0.1", "web1",
            daemons.b.uri,
        )  # fmt: skip
    assert daemons.b.virsh("domstate", "web1").stdout.strip() == "running"


def _offers(cache: dict[str, object]) -> dict[str, frozenset[str]]:
    offers = cache["offers"]
    assert isinstance(offers, dict)
    return {accel: frozenset(names) for accel, names in offers.items()}
