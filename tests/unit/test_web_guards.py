"""What every request passes (body limit, Host check) and what every answer carries."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cpuver.web import create_app
from cpuver.web.guards import _host_of
from cpuver.web.server import server_names


def test_a_loopback_server_answers_to_the_loopback_names_only() -> None:
    assert set(server_names("127.0.0.1")) == {"127.0.0.1", "localhost", "::1"}
    assert server_names("192.0.2.7", ["cpuver.example"]) == ["192.0.2.7", "cpuver.example"]


def test_the_name_is_taken_from_a_host_header_with_or_without_a_port() -> None:
    assert [_host_of(h) for h in ("[::1]:8000", "Web:80", "web", "::1")] == [
        "::1", "web", "web", "::1"
    ]  # fmt: skip


def test_a_request_for_another_name_is_a_400_json_error(db_url: str) -> None:
    client = TestClient(create_app(db_url, None, ["testserver"]))
    assert client.get("/api/pools").status_code == 200
    refused = client.get("/api/pools", headers={"Host": "rebound.example:8000"})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "Host 'rebound.example' is not a name of this server "
        "(cpuver serve --allowed-host NAME adds one)"
    }


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(db_url: str) -> None:
    client = TestClient(create_app(db_url, None))
    answer = client.post(
        "/api/resolve", content=b"{}", headers={"Content-Length": str(2 << 20),
                                                "Content-Type": "application/json"}
    )  # fmt: skip
    assert answer.status_code == 413
