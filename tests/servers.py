"""The service for tests: in process (``client``: FastAPI's TestClient on a fresh SQLite store at
``db_url``) and as real ``cpuver serve`` processes over loopback (``serve``).

:func:`running_servers` starts ``count`` servers at once (the venv's ``cpuver`` console script,
each on a free loopback port, all on the store at ``db_url``, with the token :data:`TOKEN` and any
further ``cpuver serve`` options), yields them once every one answers and stops them (SIGTERM,
then SIGKILL) at the end. A server that exits or does not answer within :data:`START_TIMEOUT_S`
fails the test with its output. The ``serve`` fixture wraps it for one test. The fixtures are
registered for every test in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from fastapi.testclient import TestClient

from cpuver.web import create_app

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


def without_token_env() -> dict[str, str]:
    """The environment minus CPUVER_TOKEN, so only the token a test gives counts."""
    return {k: v for k, v in os.environ.items() if k != "CPUVER_TOKEN"}


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


@contextmanager
def server_pool(workdir: Path) -> Iterator[Serve]:
    """A ``start(db_url, count, *options)`` for as many servers as a test needs, each one
    logging into ``workdir``; all of them are stopped at the end."""
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    started: list[Server] = []

    def start(db_url: str, count: int, *options: str) -> list[Server]:
        batch = []
        for _ in range(count):  # all at once: they share the start-up (and its migration)
            port = free_port()
            log = workdir / f"serve-{len(started)}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [cpuver_script(), "serve", "--port", str(port), "--db", db_url,
                     "--token-file", str(token_file), *options],
                    stdout=out, stderr=subprocess.STDOUT, env=without_token_env(),
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


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with server_pool(tmp_path) as start:
        yield start


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cpuver.db'}"


@pytest.fixture
def client(db_url: str) -> TestClient:
    return TestClient(create_app(db_url, TOKEN))
