"""(j) cpuver's libvirt hook as a whole process; (k) ``domain pin`` of 1,000 domains through one
libvirt connection.

(j) ``cpuver libvirt install-hook`` into a temporary folder (it probes this host once for its
cache), then the installed script is run as libvirt runs it (``DOMAIN prepare begin -``, the
pinned domain XML on standard input, libvirt's environment: ``LC_ALL=C``, ``PATH``, ``HOME``) 200
times after 5 untimed runs; median and p99 of the wall time, next to the bare interpreter
(``python -IS -c pass``). Goal: <= 30 ms median.

(k) A throwaway libvirt daemon (tests/libvirt/daemons.py: root, libvirtd, tini), 1,000 realistic
domains defined (untimed), then ``api.pin_many``: one connection, each domain's persistent XML
read, resolved (``Westmere`` under TCG), rewritten and defined back. Needs root and libvirt
(``./dev setup``); skipped with a note otherwise.

Run alone: ``.venv/bin/python bench/bench_libvirt.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import PYTHON, ROOT, Result, median, ms, quantile, status
from cpuver import api

HOOK_GOAL_NS = 30_000_000
HOOK_RUNS = 200
DOMAINS = 1000
LIBVIRT_ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <title>bench {name}</title>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>Westmere</model>
    <topology sockets='1' dies='1' clusters='1' cores='2' threads='1'/>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _timed(argv: list[str], stdin: bytes) -> int:
    start = time.perf_counter_ns()
    done = subprocess.run(argv, input=stdin, capture_output=True, env=LIBVIRT_ENV, check=False)
    elapsed = time.perf_counter_ns() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def hook() -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script, _how = api.install_hook(folder / "hooks", folder / "hook-host.json")
        catalog = api.open_catalog("10.0")
        xml = api.pin_definition(DOMAIN.format(name="web1", uuid=uuid.uuid4()), "web1", catalog)
        argv = [str(script), "web1", "prepare", "begin", "-"]
        stdin = xml.xml.encode()
        for _ in range(5):
            _timed(argv, stdin)
        runs = [_timed(argv, stdin) for _ in range(HOOK_RUNS)]
        bare = [_timed([str(PYTHON), "-IS", "-c", "pass"], b"") for _ in range(50)]
    figure = median(runs)
    return Result(
        "(j) libvirt hook as a whole process (prepare begin of a pinned domain)",
        "<= 30 ms median",
        f"{ms(figure)} median, p99 {ms(quantile(runs, 0.99))}",
        status(figure <= HOOK_GOAL_NS),
        [f"bare `python -IS -c pass`: {ms(median(bare))} median; {HOOK_RUNS} runs"],
        {"median_ns": figure, "p99_ns": quantile(runs, 0.99), "python_ns": median(bare)},
    )


def pin_thousand() -> Result:
    sys.path.insert(0, str(ROOT / "tests" / "libvirt"))
    from daemons import Daemon, missing_programs

    name = f"(k) `domain pin` of {DOMAINS:,} domains through one connection"
    missing = missing_programs()
    if missing:
        return Result(name, "-", f"not run: needs {', '.join(missing)}", "INFO")
    from cpuver.libvirt import Connection

    base = Path(tempfile.mkdtemp(prefix="cpuver-bench-libvirt-"))
    daemon = Daemon(base / "d", name="bench")
    try:
        daemon.start()
        names = [f"guest{n:04d}" for n in range(DOMAINS)]
        with Connection(daemon.uri) as conn:
            for guest in names:
                conn.define(DOMAIN.format(name=guest, uuid=uuid.uuid4()))
        start = time.perf_counter_ns()
        api.pin_many(daemon.uri, names)
        elapsed = time.perf_counter_ns() - start
        with Connection(daemon.uri) as conn:
            sample = api.domain_pin(conn.domain_xml(names[-1]))
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)
    return Result(
        name,
        "-",
        f"{elapsed / 1e9:.2f} s ({elapsed / DOMAINS / 1e6:.1f} ms per domain)",
        "INFO",
        [f"each: read the persistent XML, resolve Westmere (TCG), rewrite, define; {sample.name}"],
        {"total_ns": elapsed, "per_domain_ns": elapsed / DOMAINS},
    )


def run() -> list[Result]:
    return [hook(), pin_thousand()]


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
