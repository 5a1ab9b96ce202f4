"""Hostile requests and faults against a real ``cpuver serve`` over loopback.

Bodies and lists are bounded (413/422 naming the limit, never an input echoed back whole); no
input gives a 500 or a traceback in the server's log; names are names on SQLite and PostgreSQL
(a NUL in a guest name is a 400 without SQL); a request must name the server in ``Host``; the
dashboard tells browsers not to frame it, sniff it or load anything foreign; every list is paged;
a pool's answers follow a change made through another server at once; a worker that dies is
replaced; a PostgreSQL that stops gives 503 with Retry-After and no SQL, and once it is back
the next request works.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet_hosts import TSX, capable, snapshot
from postgres import PostgresCluster, postgres_bindir, unavailable, url_fixture  # noqa: F401
from servers import AUTH, Serve, Server, server_pool

GUESTS = "/api/guests"


def definition(name: str, cpu: str = "Haswell-v2") -> dict[str, object]:
    return {"definition": json.dumps({"name": name, "cpu": cpu}), "qemu": "10.0", "accel": "kvm"}


def no_traceback(server: Server) -> None:
    assert "Traceback" not in server.output(), server.output()[-3000:]


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server on a SQLite store for the tests that need no store of their own."""
    workdir = tmp_path_factory.mktemp("hardening")
    with server_pool(workdir) as start:
        [server] = start(f"sqlite:///{workdir / 'cpuver.db'}", 1)
        yield server


# -- 2. bounded requests --------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_naming_it(sqlite_server: Server) -> None:
    specs = ["Haswell,version=best"] * 200_000  # 4.6 MB, as the adversarial test sent
    started = time.monotonic()
    response = sqlite_server.client.post("/api/resolve", json={"specs": specs})
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than the limit of 1,048,576 bytes"}
    assert time.monotonic() - started < 5
    no_traceback(sqlite_server)


def test_a_streamed_body_over_the_limit_is_413(sqlite_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = sqlite_server.client.post(
        "/api/resolve", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_too_many_specs_are_422_naming_the_limit(sqlite_server: Server) -> None:
    response = sqlite_server.client.post("/api/resolve", json={"specs": ["Haswell"] * 101})
    assert response.status_code == 422
    assert "at most 100 items" in response.json()["error"]


def test_a_huge_field_is_refused_without_echoing_it(sqlite_server: Server) -> None:
    machine = "m" * 900_000
    response = sqlite_server.client.post(
        "/api/resolve", json={"specs": ["Haswell"], "machine": machine}
    )
    assert response.status_code == 422
    assert "at most 64 characters" in response.json()["error"]
    assert len(response.content) < 1000


def test_an_unknown_long_name_is_not_echoed_whole(sqlite_server: Server) -> None:
    response = sqlite_server.client.post("/api/resolve", json={"specs": ["H" * 4000]})
    assert response.status_code == 404
    assert len(response.content) < 1000


def test_a_big_resolve_does_not_stall_other_requests(sqlite_server: Server) -> None:
    body = {"specs": ["Haswell,version=best"] * 100, "host": snapshot("hv1", capable())}
    with httpx.Client(base_url=sqlite_server.base, timeout=60) as other:
        for _ in range(3):
            sqlite_server.client.post("/api/resolve", json=body)
            started = time.monotonic()
            assert other.get("/api/pools").status_code == 200
            assert time.monotonic() - started < 2


# -- 3. no 500 on any input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/resolve", {"specs": ["Haswell"], "host": {"schema": "cpuver-host/\u00b2"}}),
        ("/api/resolve", {"specs": ["Haswell"], "host": {"schema": "cpuver-host/" + "9" * 5000}}),
        ("/api/resolve", {"specs": ["Haswell"], "host": {"model": {"name": ["x"], "props": {}}}}),
        ("/api/resolve", {"specs": ["Haswell"], "host": {"model": {"name": {}, "props": {}}}}),
        ("/api/guests", {"definition": "[" * 100_000}),
        ("/api/guests", {"definition": '{"name": ' + "9" * 5000 + "}"}),
        ("/api/guests", {"definition": "a = " + "[" * 50_000, "format": "toml"}),
        ("/api/guests", {"definition": "<domain><name>/srv/data</name></domain>"}),
        ("/api/guests", {"definition": json.dumps({"name": "../x", "cpu": "Haswell"})}),
        ("/api/hosts", snapshot("hv1", capable()) | {"host": "a\0b"}),
    ],
)
def test_bad_input_is_a_4xx_json_error(sqlite_server: Server, path: str, body: object) -> None:
    response = sqlite_server.client.post(path, json=body, headers=AUTH)
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)
    no_traceback(sqlite_server)


@pytest.mark.parametrize(
    "path",
    [
        "/api/models?qemu=" + "9" * 5000,
        "/api/models?qemu=%C2%B2.0",
        "/api/pools/rack3/best?spec=Haswell&qemu=" + "9" * 5000,
        "/?qemu=" + "9" * 5000,
        "/api/guests?limit=" + "9" * 5000,
        "/api/guests?limit=0",
        "/pools/rack3?accel=foo",
        "/api/pools/a%2Fb/best?spec=Haswell",
    ],
)
def test_bad_query_is_a_4xx(sqlite_server: Server, path: str) -> None:
    response = sqlite_server.client.get(path)
    assert 400 <= response.status_code < 500, response.text
    no_traceback(sqlite_server)


# -- 1 and 6. names, on both databases ------------------------------------------------------------


def test_a_nul_in_a_guest_name_is_400_without_sql(url: str, serve: Serve) -> None:
    [server] = serve(url, 1)
    response = server.client.get("/api/guests/a%00b")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "guest name 'a\\x00b' is not valid" in error
    for leak in ("SELECT", "sqlalchemy", "psycopg", "host=", "/tmp"):
        assert leak not in error
    no_traceback(server)


def test_a_pool_name_with_a_slash_is_refused_when_pushed(url: str, serve: Serve) -> None:
    [server] = serve(url, 1)
    pushed = server.client.post(
        "/api/hosts", json=snapshot("hv1", capable()), params={"pool": "a/b"}, headers=AUTH
    )
    assert pushed.status_code == 400
    assert "pool name 'a/b' is not valid" in pushed.json()["error"]
    assert server.client.get("/api/pools").json() == []


# -- 8. browser protections -----------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(sqlite_server: Server) -> None:
    for route in ("/api/guests", "/"):
        response = sqlite_server.client.get(route, headers={"Host": "attacker.example"})
        assert response.status_code == 400
        assert "not a name of this server" in response.json()["error"]
    assert sqlite_server.client.get("/api/guests", headers={"Host": "localhost:1"}).is_success


def test_the_dashboard_forbids_framing_sniffing_and_foreign_content(
    sqlite_server: Server,
) -> None:
    for route in ("/", "/guests", "/static/dashboard.js", "/api/guests"):
        headers = sqlite_server.client.get(route).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"


# -- 9. paging and kept pool answers --------------------------------------------------------------


def test_every_list_is_paged_with_a_link_to_the_next_page(sqlite_server: Server) -> None:
    client = sqlite_server.client
    for n in range(5):
        assert client.post(GUESTS, json=definition(f"web{n}"), headers=AUTH).status_code == 201
        pushed = client.post(
            "/api/hosts", json=snapshot(f"hv{n}", capable()), params={"pool": f"p{n}"},
            headers=AUTH,
        )  # fmt: skip
        assert pushed.status_code == 201
    for route, key in (("/api/guests", "name"), ("/api/hosts", "host"), ("/api/pools", "pool"),
                       ("/api/models", "name")):  # fmt: skip
        seen: list[str] = []
        page = client.get(route, params={"limit": 2})
        while True:
            assert page.status_code == 200
            seen += [item[key] for item in page.json()]
            if "link" not in page.headers:
                break
            page = client.get(page.headers["link"].split(">")[0].lstrip("<"))
        assert seen == sorted(set(seen)), route
        assert len(seen) == len(client.get(route, params={"limit": 1000}).json()), route
    html = client.get("/guests", params={"limit": 2}).text
    assert 'rel="next"' in html and "web2" not in html


def test_a_pool_answer_follows_a_change_made_through_another_server(url: str, serve: Serve) -> None:
    a, b = serve(url, 2)
    best = "/api/pools/rack3/best"
    query = {"spec": "Cascadelake-Server", "qemu": "10.0"}
    a.client.post("/api/hosts", json=snapshot("hv1", capable()), params={"pool": "rack3"},
                  headers=AUTH)  # fmt: skip
    assert b.client.get(best, params=query).json()["best"] is not None  # b keeps it now
    b.client.get("/api/pools/rack3/matrix")
    a.client.post("/api/hosts", json=snapshot("hv2", capable() - TSX), params={"pool": "rack3"},
                  headers=AUTH)  # fmt: skip
    answer = b.client.get(best, params=query).json()
    assert answer["hosts"] == ["hv1", "hv2"]
    assert b.client.get("/api/pools/rack3/matrix").json()["hosts"] == ["hv1", "hv2"]
    a.client.delete("/api/hosts/hv2", headers=AUTH)
    assert b.client.get(best, params=query).json()["hosts"] == ["hv1"]


# -- 7. workers -----------------------------------------------------------------------------------


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append((int(entry.name), stat[0]))
    return found


def workers_of(server: Server) -> list[int]:
    """The worker processes (spawn also starts a resource tracker, which is not one)."""
    workers = []
    for child, state in children(server.process.pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # it has just ended
            continue
        if b"spawn_main" in cmdline and state != "Z":
            workers.append(child)
    return sorted(workers)


def test_a_worker_that_dies_is_replaced(tmp_path: Path, serve: Serve) -> None:
    [server] = serve(f"sqlite:///{tmp_path / 'cpuver.db'}", 1, "--workers", "2")
    before = workers_of(server)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers_of(server)
        if len(now) == 2 and before[0] not in now:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no new worker: {children(server.process.pid)}\n{server.output()}")
    assert not [c for c, state in children(server.process.pid) if state == "Z"]
    assert "worker 1" in server.output() and "starting a new one" in server.output()
    time.sleep(1.5)  # the new worker's start-up
    for _ in range(10):  # new connections: both workers answer
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.get(GUESTS).status_code == 200


# -- 6. PostgreSQL stopped and restarted ----------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test alone: it is stopped and started again."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not installed (./dev setup installs them)")
    base = Path(tempfile.mkdtemp(prefix="cpuver-pg-restart-"))
    user = None
    if os.geteuid() == 0:
        import pwd

        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(bindir, base, user)
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgresql
def test_postgres_going_away_is_503_and_coming_back_needs_no_retry(
    own_cluster: PostgresCluster, serve: Serve
) -> None:
    url = own_cluster.new_database()
    [server] = serve(url, 1)
    client = server.client
    assert client.post(GUESTS, json=definition("web1"), headers=AUTH).status_code == 201
    assert client.get(GUESTS).status_code == 200  # a pooled connection now exists

    own_cluster.stop()
    for route in (GUESTS, "/api/guests/web1", "/api/pools"):
        response = client.get(route)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert error.startswith("database unavailable: ")
        assert "\n" not in error
        for leak in ("SELECT", "sqlalchemy", "psycopg", str(own_cluster.base), ".s.PGSQL"):
            assert leak not in error, error
    dashboard = client.get("/guests")
    assert dashboard.status_code == 503
    assert dashboard.headers["retry-after"] == "5"

    own_cluster.resume()
    for route in (GUESTS, "/api/guests/web1", "/api/pools"):
        assert client.get(route).status_code == 200  # the first request after the restart too
    no_traceback(server)


@pytest.mark.postgresql
def test_readyz_is_503_while_the_database_is_gone_and_healthz_still_200(
    own_cluster: PostgresCluster, serve: Serve
) -> None:
    [server] = serve(own_cluster.new_database(), 1)
    assert server.client.get("/readyz").json() == {"status": "ready"}
    own_cluster.stop()
    ready, healthy = server.client.get("/readyz"), server.client.get("/healthz")
    own_cluster.resume()
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "5")
    assert ready.json()["error"].startswith("database unavailable: ")
    assert healthy.json() == {"status": "ok"}
    assert server.client.get("/readyz").status_code == 200
