"""Talk to a real QEMU binary over QMP: the only module that starts QEMU or speaks QMP.

A :class:`QmpSession` starts ``qemu-system-x86_64`` paused with no devices, connects to its QMP
socket and guarantees the process is gone when the session ends, even on errors or Ctrl-C.
Binaries unpacked with ``dpkg -x`` next to their modules and firmware are run with those, so two
QEMU releases can live side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import ExecuteError, QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from cpuver.errors import QemuError
from cpuver.features import CpuidBit, FeatureSet, FeatureTable
from cpuver.host import termination

START_TIMEOUT_S = 10.0
"""How long QEMU may take to open its QMP socket, to greet on it, to answer one QMP command
and to print ``-version``; ``$CPUVER_QEMU_TIMEOUT`` (seconds) changes it."""
TIMEOUT_ENV = "CPUVER_QEMU_TIMEOUT"
CONNECT_ATTEMPTS = 50
UNIX_PATH_MAX = 108
PIDFILE = "qemu.pid"
"""QEMU's ``-pidfile`` in a lasting work directory: it also puts the directory into QEMU's
command line, so a QEMU whose launching command was killed is found (:func:`processes_under`)."""


def qemu_timeout() -> float:
    """Seconds each QEMU interaction may take (:data:`START_TIMEOUT_S`, or the environment's)."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, START_TIMEOUT_S))
    except ValueError:
        return START_TIMEOUT_S
    return value if 0 < value < 3600 else START_TIMEOUT_S


class _Monitor(QEMUMonitorProtocol):
    """qemu.qmp's synchronous client with a deadline on connecting (its ``connect`` waits for
    QEMU's greeting without one, so a QEMU that listens and never greets hung cpuver), whose
    every exchange a termination request waits for (:mod:`cpuver.host.termination`), and so
    does its making (a signal inside asyncio's new event loop leaves a half-made loop behind)."""

    def __init__(self, address: str) -> None:
        with termination.exchange():
            super().__init__(address)

    def _sync(self, future: Any, timeout: float | None = None) -> Any:
        with termination.exchange():
            return super()._sync(future, timeout)

    def connect_within(self, timeout: float) -> dict[str, Any]:
        self._qmp.await_greeting = True
        self._qmp.negotiate = True
        self._sync(self._qmp.connect(self._address), timeout)
        return dict(self._get_greeting() or {})


_LOADERS = (
    "lib64/ld-linux-x86-64.so.2",
    "usr/lib64/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
)
"""Where a Debian suite's libc6 puts the dynamic loader (relative to the root it is unpacked in)."""
_LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")


@dataclass(frozen=True, slots=True)
class QemuInstall:
    """A QEMU binary and, for unpacked trees (``<root>/usr/bin/...``), its modules and firmware.

    A root that holds its own C library too (a QEMU of another Debian suite, unpacked with every
    library it needs) is run through that root's dynamic loader with the root's libraries, so
    none of this machine's own libraries is mixed in.
    """

    binary: Path

    @property
    def _root(self) -> Path | None:
        usr = self.binary.resolve().parent.parent
        if usr.name != "usr" or usr.parent == Path("/"):
            return None
        return usr.parent

    def loader(self) -> Path | None:
        """The root's own ``ld-linux-x86-64.so.2``, when the binary's root has one."""
        root = self._root
        if root is None:
            return None
        for candidate in _LOADERS:
            if (root / candidate).exists():
                return root / candidate
        return None

    def command(self) -> list[str]:
        """The argv prefix that runs this QEMU (the binary, or the root's loader and the binary)."""
        loader, root = self.loader(), self._root
        if loader is None or root is None:
            return [str(self.binary)]
        libraries = ":".join(str(root / sub) for sub in _LIBRARY_DIRS)
        return [str(loader), "--library-path", libraries, str(self.binary.resolve())]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        root = self._root
        if root is not None and (modules := root / "usr/lib/x86_64-linux-gnu/qemu").is_dir():
            env["QEMU_MODULE_DIR"] = str(modules)
        return env

    def firmware_args(self) -> list[str]:
        root = self._root
        if root is None:
            return []
        args: list[str] = []
        for sub in ("usr/share/qemu", "usr/share/seabios"):
            if (root / sub).is_dir():
                args += ["-L", str(root / sub)]
        return args

    def version(self) -> str:
        """The first line of ``-version`` (``QEMU emulator version 10.0.2 (Debian ...)``)."""
        timeout = qemu_timeout()
        try:
            done = subprocess.run(
                [*self.command(), "-version"],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=self.environment(),
                check=False,
            )
        except OSError as err:
            raise QemuError(f"cannot run {self.binary}: {err.strerror}") from err
        except subprocess.TimeoutExpired as err:  # subprocess.run has killed it
            raise QemuError(
                f"{self.binary} -version did not answer within {timeout:g} s (ended it)"
            ) from err
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            raise QemuError(f"{self.binary} -version failed: {said[-1] if said else 'no output'}")
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if not lines:
            raise QemuError(f"{self.binary} -version printed nothing")
        return lines[0]


def qmp_socket(workdir: Path) -> Path:
    """The QMP socket of a QEMU working in ``workdir``; in the temporary directory when the
    path would pass the 108-byte limit of unix socket addresses."""
    socket = workdir / "qmp.sock"
    if len(bytes(socket)) < UNIX_PATH_MAX:
        return socket
    digest = hashlib.sha256(bytes(workdir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cpuver-qmp-{digest}.sock"


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class QmpSession:
    """A paused QEMU process for one machine type and accelerator, driven over QMP."""

    def __init__(
        self,
        install: QemuInstall,
        machine: str = "none",
        accel: str = "tcg",
        cpu: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
    ) -> None:
        self.install = install
        self.machine = machine
        self.accel = accel
        self.cpu = cpu
        self.extra_args = tuple(extra_args)
        self.failure_stderr: list[str] = []
        self._given_workdir = workdir
        """A lasting directory for the socket and stderr (a guest that outlives this process);
        default: a temporary one, removed with the session."""
        self._owns_process = True
        self.attached_pid: int | None = None
        self.socket_path: Path | None = None
        """QEMU's stderr when starting it failed (the work directory is gone by then)."""
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: _Monitor | None = None
        self.timeout = qemu_timeout()
        self.greeting: dict[str, Any] = {}

    def argv(self, socket_path: Path) -> list[str]:
        return [
            *self.install.command(),
            *self.install.firmware_args(),
            "-machine",
            self.machine,
            "-accel",
            self.accel,
            *(["-cpu", self.cpu] if self.cpu else []),
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-no-user-config",
            "-qmp",
            f"unix:{socket_path},server=on,wait=off",
            *(["-pidfile", str(self._given_workdir / PIDFILE)] if self._given_workdir else []),
            *self.extra_args,
        ]

    def __enter__(self) -> QmpSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="cpuver-qmp-"))
        socket_path = self.socket_path = qmp_socket(self._workdir)
        stderr_path = self._workdir / "stderr"
        with stderr_path.open("wb") as stderr:
            try:
                self._process = subprocess.Popen(
                    self.argv(socket_path),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=self.install.environment(),
                    start_new_session=self._given_workdir is not None,
                )
            except OSError as err:
                raise QemuError(f"cannot start {self.install.binary}: {err.strerror}") from err
        deadline = time.monotonic() + self.timeout
        while not socket_path.exists():
            if self._process.poll() is not None:
                raise QemuError(self._failure("exited before QMP was ready", stderr_path))
            if time.monotonic() > deadline:
                raise QemuError(
                    self._failure(
                        f"did not open its QMP socket within {self.timeout:g} s", stderr_path
                    )
                )
            time.sleep(0.005)
        for attempt in range(CONNECT_ATTEMPTS):
            self._qmp = _Monitor(str(socket_path))
            self._qmp.settimeout(self.timeout)
            try:
                self.greeting = self._qmp.connect_within(max(0.1, deadline - time.monotonic()))
                return
            except TimeoutError as err:
                raise QemuError(
                    self._failure(f"did not greet on QMP within {self.timeout:g} s", stderr_path)
                ) from err
            except QMPError as err:
                # The socket file appears at bind(), a moment before QEMU listens on it.
                self._qmp.close()
                if attempt == CONNECT_ATTEMPTS - 1 or self._process.poll() is not None:
                    raise QemuError(
                        self._failure(f"QMP connection failed ({err})", stderr_path)
                    ) from err
                time.sleep(0.01)

    def _failure(self, what: str, stderr_path: Path) -> str:
        self.failure_stderr = self.stderr_lines()
        errors = [line for line in self.failure_stderr if "warning:" not in line]
        reason = f": {errors[-1]}" if errors else ""
        return (
            f"QEMU {self.install.binary} -machine {self.machine} -accel {self.accel} {what}{reason}"
        )

    def command(self, name: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value."""
        if self._qmp is None:
            raise QemuError("QMP session is not open")
        try:
            return self._qmp.cmd(name, **arguments)
        except TimeoutError as err:
            # the connection is left in an unknown state: nothing more is asked on it
            self._drop_connection()
            raise QemuError(
                f"QEMU (pid {self.pid}) did not answer QMP {name} within {self.timeout:g} s"
            ) from err
        except ExecuteError as err:
            raise QemuError(f"QMP {name} failed: {err.error.error.desc}") from err
        except QMPError as err:
            raise QemuError(f"QMP {name} failed: {err}") from err

    @classmethod
    def attach(
        cls, install: QemuInstall, machine: str, accel: str, workdir: Path, pid: int, socket: Path
    ) -> QmpSession:
        """Connect to a QEMU that an earlier :meth:`detach` left running in ``workdir``."""
        session = cls(install, machine, accel, workdir=workdir)
        session._owns_process = False
        session._workdir = workdir
        session.attached_pid = pid
        session.socket_path = socket
        session._qmp = _Monitor(str(socket))
        session._qmp.settimeout(session.timeout)
        try:
            session.greeting = session._qmp.connect_within(session.timeout)
        except TimeoutError as err:
            session._drop_connection()
            raise QemuError(
                f"QEMU (pid {pid}) did not greet on QMP within {session.timeout:g} s"
            ) from err
        except (QMPError, OSError) as err:
            session._drop_connection()
            raise QemuError(f"QEMU (pid {pid}) no longer answers at {workdir}: {err}") from err
        return session

    def _drop_connection(self) -> None:
        if self._qmp is not None:
            # closing after a failure re-raises what broke the connection: it is over anyway
            with contextlib.suppress(QMPError, OSError, EOFError, TimeoutError, RuntimeError):
                self._qmp.close()
            self._qmp = None

    def detach(self) -> int:
        """Leave QEMU running on its own (it must have a lasting workdir); returns its pid."""
        if self._process is None or self._given_workdir is None:
            raise QemuError("only a QEMU started with a lasting workdir can be left running")
        pid = self._process.pid
        self._owns_process = False
        self.close()
        return pid

    def quit(self, timeout: float = START_TIMEOUT_S) -> None:
        """Ask QEMU to quit and wait until its process is gone (killed when it does not quit)."""
        pid = self.pid or self.attached_pid
        with contextlib.suppress(QemuError):
            if self._qmp is not None:
                self.command("quit")
        deadline = time.monotonic() + timeout
        while pid is not None and process_alive(pid) and time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.01)
        if pid is not None and process_alive(pid) and self._process is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        if not self._owns_process:
            self._drop_connection()
            self._process = None
            return
        # EOFError: QEMU is already gone (e.g. it exited after a failed incoming migration).
        self._drop_connection()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
        elif self._given_workdir is not None:
            # interrupted (SIGTERM, Ctrl-C) while Popen ran: the QEMU may run without a handle
            for pid, _workdir in processes_under(self._given_workdir):
                end_process(pid)
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else self.attached_pid

    def stderr_lines(self) -> list[str]:
        """What QEMU has written to stderr so far (warnings included), one message a line."""
        path = self._workdir / "stderr" if self._workdir is not None else None
        if path is None or not path.exists():
            return []
        text = path.read_text(errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def static_expansion(self, model: str) -> dict[str, Any]:
        """``query-cpu-model-expansion`` type static: the props QEMU reports for ``model``."""
        reply = self.command("query-cpu-model-expansion", type="static", model={"name": model})
        return dict(reply["model"]["props"])


def offered_features(
    install: QemuInstall, accel: str, features: FeatureTable | None = None
) -> tuple[FeatureSet, str | None]:
    """The features ``accel`` can give a guest on this host, by QEMU's own filter, and the vendor.

    ``host``/``max`` expansions alone under-report: QEMU never switches some supported features
    on by itself (``topoext``, ``invtsc``), and hides MSR sub-features whose parent bit is off
    (TCG supports the ``arch-capabilities`` bits but not the CPUID flag). So a vCPU is created
    from ``base`` with every feature requested, and QEMU's ``unavailable-features`` of that vCPU
    says what is missing. Under KVM the MSR-based features are taken from the ``host`` expansion
    instead: nested KVM may refuse MSR values it advertises, which aborts QEMU.
    """
    table = features or FeatureTable.bundled()
    maximal = "host" if accel == "kvm" else "max"
    with QmpSession(install, "none", accel) as session:
        props = session.static_expansion(maximal)
    known = [name for name in table if name in props]
    from_expansion = frozenset(name for name in known if props[name] is True)
    requested = [
        name
        for name in known
        if accel != "kvm" or all(isinstance(loc, CpuidBit) for loc in table.get(name).locations)
    ]
    missing, warnings = _unavailable(install, accel, requested)
    # QEMU 11 refuses features that conflict with each other when both are asked for (MPX and
    # APX share XSAVE state: "this feature conflicts with APX: ...mpx"); asked alone, each may run.
    for name in sorted({m[1] for line in warnings if (m := _CONFLICT.search(line))} & missing):
        if name in table and not _unavailable(install, accel, [table.canonical(name)])[0]:
            missing.discard(name)
    offered = (frozenset(requested) - missing) | (from_expansion - frozenset(requested))
    vendor = props.get("vendor")
    return offered, vendor if isinstance(vendor, str) else None


_CONFLICT = re.compile(r"this feature conflicts with \S+: \S+\.([A-Za-z0-9_.-]+) \[bit")
"""``warning: this feature conflicts with APX: CPUID[eax=07h,ecx=00h].EBX.mpx [bit 14]``."""


def _unavailable(
    install: QemuInstall, accel: str, requested: Sequence[str]
) -> tuple[set[str], list[str]]:
    """QEMU's ``unavailable-features`` of a vCPU from ``base`` asking for ``requested``, and what
    QEMU warned meanwhile."""
    cpu = ",".join(["base", *(f"{name}=on" for name in requested)])
    with QmpSession(install, "pc", accel, cpu=cpu) as session:
        path = session.command("query-cpus-fast")[0]["qom-path"]
        missing = set(session.command("qom-get", path=path, property="unavailable-features"))
        return missing, session.stderr_lines()


def processes_under(root: Path) -> list[tuple[int, Path]]:
    """Every running QEMU whose ``-pidfile`` lies under ``root``, with its work directory: the
    QEMU processes cpuver started there, found even when no record of them was written."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for flag, value in itertools.pairwise(argv):
            pidfile = Path(os.fsdecode(value))
            ours = flag == b"-pidfile" and pidfile.name == PIDFILE and pidfile.is_relative_to(root)
            if ours and process_alive(int(entry.name)):
                found.append((int(entry.name), pidfile.parent))
    return found


def end_process(pid: int, timeout: float = START_TIMEOUT_S) -> None:
    """End ``pid`` (SIGTERM, then SIGKILL when it does not go within ``timeout``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
