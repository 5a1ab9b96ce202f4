"""A bounded fuzz of every route of a real ``cpuver serve``: no answer >= 500, no traceback in
the server's log, every /api error a 4xx JSON ``{"error": "..."}``.

Every route of the OpenAPI schema and every dashboard page is requested with generated path
segments (valid names, near misses, paths, control characters, long and non-ASCII text),
query values and bodies (arbitrary JSON, and bodies shaped like each route's request with
fields replaced by hostile values), with and without the token, on a store holding a pool, its
hosts and a guest so that the valid names reach deep. The budget is fixed: at most
:data:`REQUESTS` requests and :data:`SECONDS` seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_hosts import TSX, capable, snapshot
from servers import AUTH, Server

REQUESTS = 1200
SECONDS = 90.0
NAMES = ["rack3", "hv1", "hv3", "web1", "Haswell", "Haswell-v4", "10.0", "7.2", "kvm", "tcg"]
HOSTILE = [
    "", ".", "..", "../x", "/srv/data", "a/b", "a\0b", "\x1b[31m", "web\n1", "<script>", "é",
    "²", "9" * 5000, "x" * 3000, "%", "%00", "Haswell,,+avx", "Haswell,version=best", "null",
]  # fmt: skip

text = st.one_of(st.sampled_from(NAMES + HOSTILE), st.text(max_size=40))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**301),
    st.floats(allow_nan=False), text,
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10) | text, inner, max_size=4)
    ),
    max_leaves=20,
)


def body_like(example: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``example`` with some fields replaced by anything, or any JSON at all."""
    fields = st.fixed_dictionaries(
        {}, optional={key: st.one_of(st.just(value), json_values) for key, value in example.items()}
    )
    return st.one_of(fields, json_values, st.just("[" * 20_000), st.just(example))


EXAMPLES: dict[str, dict[str, Any]] = {
    "/api/resolve": {"specs": ["Haswell,version=best"], "qemu": "10.0", "accel": "kvm",
                     "host": snapshot("hv9", capable())},
    "/api/hosts": snapshot("hv9", capable()),
    "/api/guests": {"definition": json.dumps({"name": "web9", "cpu": "Haswell-v2"}),
                    "pool": "rack3", "qemu": "10.0", "accel": "kvm"},
    "/api/pools/{pool}/what-if": {"drop": ["hle", "rtm"], "hosts": ["hv1"], "qemu": "10.0"},
    "/api/guests/{name}/update-cpu": {"to": "best", "pool": "rack3", "dry_run": True},
}  # fmt: skip
DASHBOARD = ["/", "/pools/{pool}", "/models", "/models/{name}", "/guests", "/guests/{name}",
             "/hosts/{name}"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from servers import server_pool

    workdir: Path = tmp_path_factory.mktemp("fuzz")
    with server_pool(workdir) as start:
        [started] = start(f"sqlite:///{workdir / 'cpuver.db'}", 1, "--no-access-log")
        client = started.client
        for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
            client.post("/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"},
                        headers=AUTH).raise_for_status()  # fmt: skip
        body = {"definition": json.dumps({"name": "web1", "cpu": "Haswell-v2"}), "qemu": "10.0",
                "accel": "kvm"}  # fmt: skip
        client.post("/api/guests", json=body, headers=AUTH).raise_for_status()
        yield started


def routes(server: Server) -> list[tuple[str, str]]:
    schema = server.client.get("/openapi.json").json()
    found = [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops]
    return found + [("GET", path) for path in DASHBOARD]


def test_no_route_answers_5xx_or_logs_a_traceback(server: Server) -> None:
    every = routes(server)
    assert len(every) >= 18
    started = time.monotonic()
    sent = {"count": 0}
    failures: list[str] = []

    @settings(
        max_examples=REQUESTS, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        if time.monotonic() - started > SECONDS:
            return
        method, template = data.draw(st.sampled_from(every))
        path = template
        for part in ("{pool}", "{name}"):
            if part in path:
                path = path.replace(part, quote(data.draw(text), safe=""))
        query = data.draw(
            st.dictionaries(
                st.sampled_from(["qemu", "machine", "accel", "spec", "pool", "limit", "after"]),
                text,
                max_size=3,
            )
        )
        headers = dict(AUTH) if data.draw(st.booleans()) else {}
        if data.draw(st.integers(0, 20)) == 0:
            headers["Host"] = data.draw(st.sampled_from(["evil.example", "localhost", ""]))
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if method in ("POST", "PUT"):
            kwargs["content"] = json.dumps(data.draw(body_like(EXAMPLES.get(template, {}))))
            headers["Content-Type"] = "application/json"
        try:
            response = server.client.request(method, path, timeout=30, **kwargs)
        except httpx.HTTPError as err:  # a client-side refusal (an unencodable header)
            if isinstance(err, httpx.TransportError):
                failures.append(f"{method} {path}: {err!r}")
            return
        sent["count"] += 1
        if response.status_code >= 500:
            failures.append(
                f"{method} {path} {query}: {response.status_code} {response.text[:200]}"
            )
        elif path.startswith("/api") and response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                failures.append(f"{method} {path}: {response.status_code} not a JSON error")
                return
            if not isinstance(error, str) or "\n" in error:
                failures.append(f"{method} {path}: error not one line: {error!r}")

    one_request()
    assert failures == [], failures[:10]
    assert sent["count"] >= 300, sent
    assert "Traceback" not in server.output(), server.output()[-4000:]
    assert "Exception in ASGI application" not in server.output()
