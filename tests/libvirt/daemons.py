"""Throwaway libvirt daemons for the tests (../shared/libvirt-facts.md says why each step).

A :class:`Daemon` is a real ``libvirtd`` (Debian's 11.3, installed by ``./dev setup``) running as
root in namespaces of its own:

* a mount namespace where libvirt's five built-in folders (``/etc/libvirt``, ``/run/libvirt``,
  ``/var/lib/libvirt``, ``/var/cache/libvirt``, ``/var/log/libvirt``) are folders of a temporary
  directory, so it shares nothing with the system's libvirt or another daemon (except the QEMU
  capability cache, which the daemons of one run share: only the first pays its probe);
* a UTS namespace with its own host name (two daemons are two hosts, also to cpuver);
* a PID namespace whose init is ``tini``: it reaps exited QEMU processes at once (the machine's
  own PID 1 is slow at it, and libvirt waits for them), and when it ends the kernel ends every
  process of the namespace, so no daemon or QEMU outlives :meth:`Daemon.stop`, also after a
  failed test or a killed test run (the namespace's init dies with its parent).

Each daemon has its own ``host_uuid`` (live migration between two daemons on one machine needs
two), is pinned to CPU 0 (a daemon on the other core would find "host cpuid changed" and probe
QEMU again), and is reached at ``qemu+unix:///system?socket=<dir>/run/libvirt-sock``. A hook
script under ``<dir>/etc/hooks`` must exist before :meth:`Daemon.start` (libvirt looks once).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

FOLDERS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
PROGRAMS = ("libvirtd", "virsh", "tini", "unshare", "qemu-img")
START_TIMEOUT_S = 20.0

LIBVIRTD_CONF = """\
host_uuid = "{uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
"""

# root runs QEMU (the default libvirt-qemu user cannot open /dev/kvm here), QEMU's output goes to
# a file (no virtlogd), no cgroups (two daemons' cgroup names would clash).
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
stdio_handler = "file"
cgroup_controllers = [ ]
security_driver = "none"
"""


def missing_programs() -> list[str]:
    found = [name for name in PROGRAMS if shutil.which(name) is None]
    if os.geteuid() != 0:
        found.append("root (libvirtd runs as root in a private mount namespace)")
    return found


class Daemon:
    """One private libvirtd in ``base`` (a fresh directory)."""

    def __init__(self, base: Path, cache: Path | None = None, name: str = "libvirtd") -> None:
        """``name`` is also the daemon's host name (it runs in a UTS namespace of its own)."""
        self.base = base
        self.name = name
        self.host_uuid = str(uuid.uuid4())
        self.dirs = {key: base / key for key in FOLDERS}
        if cache is not None:
            self.dirs["cache"] = cache
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        self.hooks = self.dirs["etc"] / "hooks"
        self.hooks.mkdir(exist_ok=True)
        (self.dirs["etc"] / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(uuid=self.host_uuid))
        (self.dirs["etc"] / "qemu.conf").write_text(QEMU_CONF)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dirs["run"] / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.dirs["log"] / "libvirtd.log"

    def outside(self, inside: str) -> Path:
        """Where a path the daemon sees (``/var/lib/libvirt/qemu/save``) is outside it."""
        for key, folder in FOLDERS.items():
            if inside == folder or inside.startswith(folder + "/"):
                return self.dirs[key] / inside[len(folder) :].lstrip("/")
        return Path(inside)

    def start(self) -> None:
        mounts = "; ".join(
            f"mkdir -p '{folder}'; mount --bind '{self.dirs[key]}' '{folder}'"
            for key, folder in FOLDERS.items()
        )
        script = (
            f"set -e; hostname '{self.name}'; {mounts}; "
            "exec taskset -c 0 libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid"
        )
        stderr = (self.base / f"{self.name}.stderr").open("wb")
        self.process = subprocess.Popen(
            [
                "unshare", "--mount", "--uts", "--propagation", "private", "--pid", "--fork",
                "--mount-proc", "--kill-child=SIGKILL",
                "tini", "-s", "-g", "--", "sh", "-c", script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.base / f"{self.name}.stderr").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {output[-2000:]}")
            time.sleep(0.02)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
        return done

    def stop(self) -> None:
        """End the daemon and every QEMU it started (the whole PID namespace)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # unshare ignores SIGTERM while it waits; killed, it takes the namespace's init (tini)
        # with it (--kill-child), and the kernel every process of the namespace.
        process.kill()
        process.wait(timeout=30)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """``unshare`` (and with it the namespace) ends when the test process ends, however."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
