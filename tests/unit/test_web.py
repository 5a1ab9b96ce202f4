"""The REST service (cpuver.web) on a temporary SQLite store, through FastAPI's TestClient, and
`cpuver serve` + `cpuver host push` as real processes on a loopback port.

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 and Cooperlake-v2 need; hv3
the same without TSX (hle, rtm), as after a microcode update.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cpuver.api import open_catalog
from cpuver.host.capabilities import HostCapabilities
from cpuver.web import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TSX = frozenset({"hle", "rtm"})


def capable() -> frozenset[str]:
    catalog = open_catalog("10.0")
    machine = catalog.machine(None)
    return frozenset().union(
        *(catalog.effective(catalog.lookup(name), machine, "kvm").features
          for name in ("Haswell-v3", "Cooperlake-v2"))
    )  # fmt: skip


def snapshot(name: str, offers: frozenset[str]) -> dict[str, Any]:
    return HostCapabilities(name, {"kvm": offers}).to_json()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cpuver.db'}"


@pytest.fixture
def client(db_url: str) -> TestClient:
    return TestClient(create_app(db_url, TOKEN))


# -- catalog --------------------------------------------------------------------------------------


def test_models_list_has_the_query_cpu_definitions_shape(client: TestClient) -> None:
    response = client.get("/api/models", params={"qemu": "10.0", "accel": "tcg"})
    assert response.status_code == 200
    entries = response.json()
    by_name = {e["name"]: e for e in entries}
    assert "Haswell-v4" in by_name
    assert set(by_name["Haswell-v4"]) == {
        "name", "deprecated", "migration-safe", "static", "unavailable-features"
    }  # fmt: skip
    assert by_name["Haswell"]["alias-of"].startswith("Haswell-v")


def test_resolve_answers_several_specs_in_the_order_given(client: TestClient) -> None:
    specs = ["Haswell-v2", "Skylake-Client,version=latest", "qemu64"]
    response = client.post("/api/resolve", json={"specs": specs, "qemu": "10.0", "accel": "tcg"})
    assert response.status_code == 200
    results = response.json()
    assert [r["spec"] for r in results] == specs
    assert results[0]["name"] == "Haswell-v2"
    assert {"qemu_cpu_arg", "libvirt_xml", "features", "signature"} <= set(results[1])


def test_resolve_with_a_host_snapshot_picks_the_best_version_it_runs(client: TestClient) -> None:
    host = snapshot("hv3", capable() - TSX)
    body = {"specs": ["Haswell,version=best"], "qemu": "10.0", "host": host}
    response = client.post("/api/resolve", json=body)
    assert response.status_code == 200, response.text
    [result] = response.json()
    assert result["accel"] == "kvm"
    assert not TSX & set(result["features"])


def test_bad_spec_is_400_naming_the_position(client: TestClient) -> None:
    response = client.post("/api/resolve", json={"specs": ["Haswell,,+avx"], "accel": "tcg"})
    assert response.status_code == 400
    data = response.json()
    assert data["position"] == 8
    assert "position 8" in data["error"]
    assert "\n" not in data["error"]


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/api/resolve", json={"specs": ["Haswel"], "accel": "tcg"})
    assert response.status_code == 404
    assert "unknown CPU model 'Haswel'" in response.json()["error"]


def test_malformed_json_body_is_422_with_a_clear_message(client: TestClient) -> None:
    response = client.post(
        "/api/resolve",
        content=b'{"specs": ["Haswell"',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "not valid JSON at position 20" in response.json()["error"]


def test_request_without_specs_is_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/resolve", json={"qemu": "10.0"})
    assert response.status_code == 422
    assert "specs" in response.json()["error"]


def test_resolve_when_no_version_runs_on_the_host_is_409_with_blockers(client: TestClient) -> None:
    body = {"specs": ["Haswell,version=best"], "host": snapshot("tiny", frozenset({"fpu"}))}
    response = client.post("/api/resolve", json=body)
    assert response.status_code == 409
    data = response.json()
    assert data["error"] == "no version of 'Haswell,version=best' can run on this host"
    assert "avx2" in data["blockers"]["Haswell-v4"]


# -- hosts and pools ------------------------------------------------------------------------------


def test_host_push_without_token_header_is_401(client: TestClient) -> None:
    response = client.post("/api/hosts", json=snapshot("hv1", capable()))
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


def test_host_push_with_a_wrong_token_is_401(client: TestClient) -> None:
    headers = {"Authorization": "Bearer nope"}
    response = client.post("/api/hosts", json=snapshot("hv1", capable()), headers=headers)
    assert response.status_code == 401


def test_writes_are_403_when_the_server_has_no_token(db_url: str) -> None:
    client = TestClient(create_app(db_url, None))
    response = client.post("/api/hosts", json=snapshot("hv1", capable()), headers=AUTH)
    assert response.status_code == 403
    assert "no token configured" in response.json()["error"]


def test_host_push_with_token_is_201_and_then_listed(client: TestClient) -> None:
    response = client.post(
        "/api/hosts", json=snapshot("hv1", capable()), params={"pool": "rack3"}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    assert response.json()["host"] == "hv1"
    listed = client.get("/api/hosts").json()
    assert [(h["host"], h["pools"]) for h in listed] == [("hv1", ["rack3"])]


def test_host_push_takes_pools_from_the_body_field(client: TestClient) -> None:
    body = {**snapshot("hv1", capable()), "pools": ["rack3", "rack4"]}
    assert client.post("/api/hosts", json=body, headers=AUTH).status_code == 201
    pools = client.get("/api/pools").json()
    assert pools == [{"pool": "rack3", "hosts": ["hv1"]}, {"pool": "rack4", "hosts": ["hv1"]}]


def test_host_push_of_a_non_snapshot_is_400(client: TestClient) -> None:
    response = client.post("/api/hosts", json={"schema": "nonsense"}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]


def test_pool_best_after_two_snapshots_names_what_holds_older_versions_back(
    client: TestClient,
) -> None:
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        response = client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
        assert response.status_code == 201
    response = client.get("/api/pools/rack3/best", params={"spec": "Haswell", "qemu": "10.0"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["hosts"] == ["hv1", "hv3"]
    assert data["best"] == "Haswell-v4"
    assert data["held-back"]["Haswell-v3"] == {"hv3": ["hle", "rtm"]}


def test_pool_matrix_has_a_row_per_host(client: TestClient) -> None:
    client.post("/api/hosts", json=snapshot("hv1", capable()), params={"pool": "p"}, headers=AUTH)
    data = client.get("/api/pools/p/matrix", params={"qemu": "10.0"}).json()
    assert data["hosts"] == ["hv1"]
    assert len(data["runs"]) == 1 and len(data["runs"][0]) == len(data["versions"])


def test_unknown_pool_is_404(client: TestClient) -> None:
    response = client.get("/api/pools/nope/best", params={"spec": "Haswell"})
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


# -- guests ---------------------------------------------------------------------------------------


def test_unknown_guest_is_404(client: TestClient) -> None:
    response = client.get("/api/guests/web9")
    assert response.status_code == 404
    assert response.json() == {"error": "no guest named 'web9'"}


def test_guests_list_is_empty_on_a_new_store(client: TestClient) -> None:
    assert client.get("/api/guests").json() == []


def test_unknown_route_is_404_with_an_error_field(client: TestClient) -> None:
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


def test_openapi_lists_every_path(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/api/models",
        "/api/resolve",
        "/api/hosts",
        "/api/pools",
        "/api/pools/{pool}/best",
        "/api/pools/{pool}/matrix",
        "/api/guests",
        "/api/guests/{name}",
    }


# -- cpuver serve + cpuver host push, as processes ------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, server: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise AssertionError(f"cpuver serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"cpuver serve did not answer {url} within {deadline_s}s")


def test_host_push_posts_a_snapshot_to_cpuver_serve(tmp_path: Path, db_url: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    snapshot_file = tmp_path / "hv1.json"
    snapshot_file.write_text(json.dumps(snapshot("hv1", capable())))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cpuver = [sys.executable, "-c", "import sys; from cpuver.cli import main; sys.exit(main())"]
    env = {k: v for k, v in os.environ.items() if k != "CPUVER_TOKEN"}
    server = subprocess.Popen(
        [*cpuver, "serve", "--port", str(port), "--db", db_url, "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_until_up(f"{base}/openapi.json", server)
        push = subprocess.run(
            [*cpuver, "host", "push", base, "--snapshot", str(snapshot_file), "--pool", "rack3",
             "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert push.returncode == 0, push.stderr
        assert "pushed hv1" in push.stdout
        refused = subprocess.run(
            [*cpuver, "host", "push", base, "--snapshot", str(snapshot_file)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "HTTP 401" in refused.stderr
        with urllib.request.urlopen(f"{base}/api/hosts", timeout=5.0) as response:
            listed = json.loads(response.read())
        assert [(h["host"], h["pools"]) for h in listed] == [("hv1", ["rack3"])]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
