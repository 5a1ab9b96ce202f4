"""Fixtures for the tests against real libvirt 11.3 daemons (daemons.py says how they run).

``daemons``    two daemons (hosts ``hv-a`` and ``hv-b``) for the whole session, each with
               cpuver's hook installed (``cpuver libvirt install-hook``: it answers from a probe
               of this machine), sharing one QEMU capability cache; stopped, with every QEMU
               they started, at the end of the session (also when it fails or is killed)
``clean``      (automatic) after each test: every domain of both daemons destroyed and
               undefined, each hook answering from its own probe again
``domain_xml`` a realistic domain: a qcow2 disk made by qemu-img, a serial console, a uuid, a
               title, memory in KiB, two vCPUs as one socket of two cores, a foreign metadata
               element

Without root, libvirtd, tini or libvirt-python the tests skip, except when ``CI=true``: then they
fail, so CI never goes green without them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemons import Daemon, missing_programs
from libvirt_pair import Pair

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.libvirt)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} [CI=true: libvirt tests fail, never skip]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    missing = missing_programs()
    try:
        import libvirt  # noqa: F401
    except ImportError:
        missing.append("libvirt-python")
    if missing:
        _unavailable(f"libvirt tests need {', '.join(missing)} (./dev setup installs them)")
    from cpuver import api

    base = tmp_path_factory.mktemp("libvirt")
    shared_cache = base / "capabilities"
    pair = Pair(Daemon(base / "a", shared_cache, "hv-a"), Daemon(base / "b", shared_cache, "hv-b"))
    for daemon in pair:
        cache = base / f"{daemon.name}-hook.json"
        api.install_hook(daemon.hooks, cache)  # before the daemon starts: libvirt looks once
        pair.hook_caches[daemon.name] = cache
    pair.originals = {name: path.read_bytes() for name, path in pair.hook_caches.items()}
    pair.a.start()
    try:
        pair.b.start()
        yield pair
    finally:
        for daemon in pair:
            daemon.stop()


@pytest.fixture(autouse=True)
def clean(daemons: Pair) -> Iterator[None]:
    yield
    for daemon in daemons:
        for line in daemon.virsh("list", "--all", "--name").stdout.split():
            daemon.virsh("destroy", line, check=False)
            daemon.virsh(
                "undefine", line, "--snapshots-metadata", "--managed-save", "--nvram", check=False
            )
    for name, original in daemons.originals.items():
        daemons.hook_caches[name].write_bytes(original)


DOMAIN = """<domain type='{type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <title>Web server {name}</title>
  <description>A realistic domain for cpuver's tests</description>
  <metadata>
    <app:owner xmlns:app="https://example.org/inventory/1">team-web</app:owner>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""

CPU = """<cpu mode='custom' match='exact'>
    <model fallback='allow'>{model}</model>
    <topology sockets='1' dies='1' clusters='1' cores='2' threads='1'/>
  </cpu>"""


@pytest.fixture
def domain_xml(tmp_path: Path) -> Callable[..., str]:
    """``domain_xml(name, model="Westmere", type="qemu", cpu=None, machine="pc-q35-10.0")``:
    the domain's XML text (``cpu`` replaces the whole ``<cpu>``; "" for none)."""

    def make(
        name: str,
        model: str = "Westmere",
        type: str = "qemu",
        cpu: str | None = None,
        machine: str = "pc-q35-10.0",
    ) -> str:
        disk = tmp_path / f"{name}.qcow2"
        if not disk.exists():
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    str(disk),
                    "16M",
                ],
                check=True,
                timeout=60,
            )
        return DOMAIN.format(
            type=type,
            machine=machine,
            name=name,
            uuid=uuid.uuid4(),
            disk=disk,
            cpu=CPU.format(model=model) if cpu is None else cpu,
        )

    return make


@pytest.fixture
def define(daemons: Pair, tmp_path: Path) -> Callable[[Daemon, str], None]:
    def run(daemon: Daemon, xml: str) -> None:
        path = tmp_path / f"define-{uuid.uuid4().hex}.xml"
        path.write_text(xml)
        daemon.virsh("define", str(path))

    return run
