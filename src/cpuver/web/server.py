"""Running the service: uvicorn, one process or several workers on one port.

Each worker gets a listening socket of its own, bound with ``SO_REUSEPORT``, so the kernel
spreads new connections evenly over the workers; with one shared socket (uvicorn's own
``workers``), one worker's accept loop took whole bursts of connections and throughput swung 2x
between runs (bench/bench_service.py). The parent binds every socket before starting a worker,
so a port in use is reported once, by the parent, and workers get their settings (store, token)
as arguments, never through the environment. The parent keeps the sockets and watches the
workers: one that dies is replaced by a new worker on the same socket (connections that arrived
meanwhile wait in its queue), so the server never runs on at part of its capacity.

Requests must name the server in their ``Host`` header (:func:`server_names`, plus
``--allowed-host``): a web page of another site cannot read the service through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cpuver import api
from cpuver.errors import CpuverError
from cpuver.web.app import create_app

LISTEN_BACKLOG = 2048
RESTART_PAUSE_S = 1.0
"""A worker that dies within this long of its start is replaced only after this pause (no
busy loop of restarts when every new worker fails at once)."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def server_names(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The names a request may give in ``Host``: the address listened on, loopback names when
    it is a loopback or wildcard address, this machine's names on a wildcard one, and
    ``extra`` (``--allowed-host``)."""
    names = [host, *extra]
    if host in WILDCARDS or host.startswith("127.") or host in ("::1", "localhost"):
        names += LOOPBACK_NAMES
    if host in WILDCARDS:
        names += [socket.gethostname(), socket.getfqdn(), *_addresses(socket.gethostname())]
    return list(dict.fromkeys(name for name in names if name))


def _addresses(name: str) -> list[str]:
    """The addresses ``name`` resolves to (none when it does not)."""
    try:
        return socket.gethostbyname_ex(name)[2]
    except OSError:
        return []


class NoDelayHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with Nagle's algorithm off on every connection. asyncio
    turns it off itself only on sockets that name TCP as their protocol, and sockets handed to
    uvicorn do not: each keep-alive answer then waited ~40 ms for the client's delayed ACK."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def serve(
    host: str,
    port: int,
    db_url: str | None,
    token: str | None,
    workers: int = 1,
    access_log: bool = True,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Run the service until interrupted: ``workers`` processes on ``host:port``, a line per
    request on stdout when ``access_log``; ``Host`` may be :func:`server_names` or
    ``allowed_hosts``.

    The store's schema is created or upgraded here, once, before any request: a database that
    cannot be opened stops the server at once, and workers never migrate it.
    """
    with api.open_store(db_url) as store:
        if store.migrate():
            print(
                "cpuver serve: migrated the store's schema to the newest revision", file=sys.stderr
            )
    # asyncio's own event loop: under uvloop, about 1% of the requests of a saturated server
    # waited 0.2-1 s (bench/bench_service.py); under asyncio none did
    options: dict[str, Any] = dict(
        log_level="info", access_log=access_log, http=NoDelayHttp, loop="asyncio"
    )
    names = server_names(host, allowed_hosts)
    if workers == 1:
        _run_worker(_listening_socket(host, port, shared=False), db_url, token, names, options)
        return
    # SO_REUSEPORT would also let another server of the same user share the port unnoticed:
    # first claim it alone (which also picks the port when 0 was asked for), then as a group.
    with _listening_socket(host, port, shared=False) as alone:
        port = alone.getsockname()[1]
    sockets = [_listening_socket(host, port, shared=True) for _ in range(workers)]
    _supervise(sockets, (db_url, token, names, options))


def _supervise(sockets: list[socket.socket], settings: tuple[Any, ...]) -> None:
    """Run a worker per socket until SIGTERM or SIGINT; a worker that dies meanwhile is
    replaced on its socket."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(n: int) -> tuple[multiprocessing.process.BaseProcess, float]:
        process = context.Process(
            target=_run_worker, args=(sockets[n], *settings), name=f"cpuver-serve-{n + 1}"
        )
        process.start()
        return process, time.monotonic()

    running = {n: start(n) for n in range(len(sockets))}

    def stop(_signal: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process, _started in running.values():
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        by_sentinel = {process.sentinel: n for n, (process, _started) in running.items()}
        for sentinel in multiprocessing.connection.wait(list(by_sentinel)):
            n = by_sentinel[sentinel]  # type: ignore[index]
            process, started = running.pop(n)
            process.join()
            if stopping:
                continue
            print(
                f"cpuver serve: worker {n + 1} (pid {process.pid}) exited with code "
                f"{process.exitcode}; starting a new one",
                file=sys.stderr,
                flush=True,
            )
            if time.monotonic() - started < RESTART_PAUSE_S:
                time.sleep(RESTART_PAUSE_S)
            if not stopping:
                running[n] = start(n)
    for sock in sockets:
        sock.close()


def _listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise CpuverError(f"cannot listen on {host}:{port}: {err.strerror}") from err
    return sock


def _run_worker(
    sock: socket.socket,
    db_url: str | None,
    token: str | None,
    names: Sequence[str],
    options: dict[str, Any],
) -> None:
    """One worker: the app on its own listening socket (also the whole server when alone)."""
    # the store's details of a database error (one line) go to the server's log
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logging.getLogger("cpuver").addHandler(handler)
    config = uvicorn.Config(create_app(db_url, token, names), **options)
    uvicorn.Server(config).run(sockets=[sock])
