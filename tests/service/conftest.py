"""Real ``cpuver serve`` processes for the service tests.

Fixture ``serve``: ``serve(db_url, count, *options)`` starts ``count`` servers at once (the
``cpuver`` console script, each on a free loopback port, all on the store at ``db_url``, with the
token :data:`TOKEN` and any further ``cpuver serve`` options) and returns them once every one
answers. A server that exits or does not answer within :data:`START_TIMEOUT_S` fails the test
with its output. Every server is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def cpuver_script() -> str:
    """The ``cpuver`` console script of the interpreter running the tests (the venv's)."""
    beside = Path(sys.executable).with_name("cpuver")
    found = str(beside) if beside.exists() else shutil.which("cpuver")
    if found is None:
        pytest.fail("no cpuver console script (pip install -e '.[dev]')", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One running ``cpuver serve`` and an HTTP client for it."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path
    client: httpx.Client

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


class Serve(Protocol):
    def __call__(self, db_url: str, count: int, *options: str) -> list[Server]: ...


def wait_until_up(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"cpuver serve exited with {server.process.returncode}:\n{server.output()}",
                pytrace=False,
            )
        try:
            server.client.get("/openapi.json", timeout=1.0).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    pytest.fail(
        f"cpuver serve did not answer within {START_TIMEOUT_S:.0f} s:\n{server.output()}",
        pytrace=False,
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CPUVER_TOKEN"}
    started: list[Server] = []

    def start(db_url: str, count: int, *options: str) -> list[Server]:
        batch = []
        for _ in range(count):  # all at once: they share the start-up (and its migration)
            port = free_port()
            log = tmp_path / f"serve-{len(started)}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [cpuver_script(), "serve", "--port", str(port), "--db", db_url,
                     "--token-file", str(token_file), *options],
                    stdout=out, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            server = Server(process, base, log, httpx.Client(base_url=base, timeout=60.0))
            started.append(server)
            batch.append(server)
        deadline = time.monotonic() + START_TIMEOUT_S
        for server in batch:
            wait_until_up(server, deadline)
        return batch

    try:
        yield start
    finally:
        for server in started:
            server.stop()
