"""``cpuver serve`` (the REST service) and ``cpuver host push URL`` (send this host's snapshot).

The service lives in :mod:`cpuver.web` (imported only when serving: FastAPI is slow to load);
``host push`` only needs the standard library's HTTP client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from cpuver import api
from cpuver.cli.output import EXIT_OK, add_json, emit
from cpuver.errors import CpuverError

TOKEN_ENV = "CPUVER_TOKEN"
PUSH_TIMEOUT_S = 60.0


def add_parser(sub: Any, host_actions: Any) -> None:
    serve = sub.add_parser("serve", help="run the REST service (OpenAPI at /openapi.json)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.add_argument("--db", metavar="URL", help="store (default: SQLite file)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port (1; about one per CPU core under load)",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no line per request on stdout (under heavy load it costs a third of the throughput)",
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        help=f"bearer token for writes (default: ${TOKEN_ENV}; none: writes are refused)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name clients reach the server by (Host header; repeat); the address listened "
        "on, loopback names and, on 0.0.0.0, this machine's names are allowed anyway",
    )

    push = host_actions.add_parser(
        "push", help="probe this host and send the snapshot to a service"
    )
    push.add_argument("url", metavar="URL", help="the service (http://server:8000)")
    push.add_argument(
        "--via",
        choices=(*api.PROBE_METHODS, "libvirt"),
        default="auto",
        help="probe method, as for cpuver host probe (default: auto)",
    )
    push.add_argument(
        "-c", "--connect", metavar="URI", help="with --via libvirt: the libvirt connection URI"
    )
    push.add_argument(
        "--snapshot",
        metavar="FILE",
        help="send this snapshot file (or domcapabilities XML) instead of probing",
    )
    push.add_argument(
        "--pool", action="append", default=[], metavar="P", help="pool to put it in (repeat)"
    )
    push.add_argument(
        "--token-file", metavar="FILE", type=Path, help=f"bearer token (default: ${TOKEN_ENV})"
    )
    add_json(push)


def run(args: argparse.Namespace) -> int:
    token = _token(args.token_file)
    if args.command == "serve":
        from cpuver import web

        web.serve(
            args.host, args.port, args.db, token, args.workers, args.access_log, args.allowed_host
        )
        return 0
    return _push(args, token)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _token(path: Path | None) -> str | None:
    if path is not None:
        try:
            text = path.read_text().strip()
        except OSError as err:
            raise CpuverError(f"cannot read token file {path}: {err.strerror}") from err
        if not text:
            raise CpuverError(f"token file {path} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None


def _endpoint(url: str, pools: list[str]) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CpuverError(f"expected an http(s) URL of a cpuver service, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/api/hosts"):
        path += "/api/hosts"
    query = urllib.parse.urlencode([("pool", p) for p in dict.fromkeys(pools)])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _push(args: argparse.Namespace, token: str | None) -> int:
    import urllib.error  # here, not at the top: urllib.request costs every cpuver start ~15 ms
    import urllib.request

    endpoint = _endpoint(args.url, args.pool)
    if args.snapshot:
        host = api.read_host(args.snapshot)
    elif args.via == "libvirt":
        host = api.probe_libvirt(args.connect)
    else:
        host = api.probe_host(args.via, progress=lambda m: print(f"  {m}", file=sys.stderr))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(host.to_json()).encode()
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_S) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise CpuverError(f"{endpoint}: HTTP {err.code}: {_reason(err)}") from err
    except urllib.error.URLError as err:
        raise CpuverError(f"cannot reach {endpoint}: {err.reason}") from err
    except (OSError, ValueError) as err:
        raise CpuverError(f"{endpoint}: {err}") from err
    pools = answer.get("pools", []) if isinstance(answer, dict) else []
    where = f" (pools {', '.join(pools)})" if pools else ""
    pushed = {"pushed": host.name, "url": args.url, "pools": pools}
    emit(args.json, pushed, lambda: [f"pushed {host.name} to {args.url}{where}"])
    return EXIT_OK


def _reason(err: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(err.read())
    except (OSError, ValueError):
        return str(err.reason)
    message = data.get("error") if isinstance(data, dict) else None
    return message if isinstance(message, str) else str(err.reason)
