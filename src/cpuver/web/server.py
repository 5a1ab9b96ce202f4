"""Running the service: uvicorn, one process or several workers on one port.

Each worker gets a listening socket of its own, bound with ``SO_REUSEPORT``, so the kernel
spreads new connections evenly over the workers; with one shared socket (uvicorn's own
``workers``), one worker's accept loop took whole bursts of connections and throughput swung 2x
between runs (bench/bench_service.py). The parent binds every socket before starting a worker,
so a port in use is reported once, by the parent, and workers get their settings (store, token)
as arguments, never through the environment.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cpuver import api
from cpuver.errors import CpuverError
from cpuver.web.app import create_app

LISTEN_BACKLOG = 2048


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
) -> None:
    """Run the service until interrupted: ``workers`` processes on ``host:port``, a line per
    request on stdout when ``access_log``.

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
    if workers == 1:
        _run_worker(_listening_socket(host, port, shared=False), db_url, token, options)
        return
    # SO_REUSEPORT would also let another server of the same user share the port unnoticed:
    # first claim it alone (which also picks the port when 0 was asked for), then as a group.
    with _listening_socket(host, port, shared=False) as alone:
        port = alone.getsockname()[1]
    sockets = [_listening_socket(host, port, shared=True) for _ in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_run_worker, args=(sock, db_url, token, options), name=f"cpuver-serve-{n}"
        )
        for n, sock in enumerate(sockets, 1)
    ]
    for process in processes:
        process.start()
    for sock in sockets:
        sock.close()

    def stop(_signal: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()


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
    sock: socket.socket, db_url: str | None, token: str | None, options: dict[str, Any]
) -> None:
    """One worker: the app on its own listening socket (also the whole server when alone)."""
    config = uvicorn.Config(create_app(db_url, token), **options)
    uvicorn.Server(config).run(sockets=[sock])
