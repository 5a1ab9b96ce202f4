"""Misbehaving QEMUs for fault tests: a script in the test's directory that answers ``-version``
or serves QMP the way a broken or hanging QEMU does (it binds its socket and never greets, or
greets and never answers a command, or hangs on ``-version``), and what is left running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HANGS = ("version", "greeting", "command")

SCRIPT = """#!{python}
import json, socket, sys, time
MODE = {mode!r}
if "-version" in sys.argv:
    if MODE == "version":
        time.sleep(3600)
    print("QEMU emulator version 10.0.2 (a test double)")
    sys.exit(0)
address = sys.argv[sys.argv.index("-qmp") + 1].removeprefix("unix:").split(",")[0]
server = socket.socket(socket.AF_UNIX)
server.bind(address)
server.listen(4)
connection, _ = server.accept()
if MODE == "command":
    greeting = {{"QMP": {{"version": {{"qemu": {{"major": 10, "minor": 0, "micro": 2}},
                                      "package": ""}}, "capabilities": []}}}}
    connection.sendall(json.dumps(greeting).encode() + b"\\r\\n")
    connection.recv(65536)  # qmp_capabilities
    connection.sendall(b'{{"return": {{}}}}\\r\\n')
time.sleep(3600)  # never greets (greeting) or never answers (command)
"""


def hanging_qemu(directory: Path, mode: str) -> Path:
    """A ``qemu-system-x86_64`` that hangs at ``mode`` (one of :data:`HANGS`)."""
    assert mode in HANGS
    path = directory / f"qemu-hangs-at-{mode}"
    path.write_text(SCRIPT.format(python=sys.executable, mode=mode))
    path.chmod(0o755)
    return path


def processes_running(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
