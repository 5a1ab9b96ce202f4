"""The service as an operator lives with it: undefine and cancel over HTTP, a read that says
whether a guest could start on or migrate to a host, health and readiness probes, API docs
that work without internet, and messages in HTTP's words, not the CLI's.

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 needs; hv3 the same without
TSX (hle, rtm).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cpuver.api import open_store
from fleet_hosts import TSX, capable, snapshot, start_on
from servers import AUTH


def add_rack3(client: TestClient) -> None:
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        response = client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
        assert response.status_code == 201, response.text


def define(client: TestClient, name: str, cpu: str) -> Any:
    definition = json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu})
    request = {"definition": definition, "qemu": "10.0", "accel": "kvm"}
    response = client.post("/api/guests", json=request, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


# -- undefine and cancel ---------------------------------------------------------------------------


def test_delete_undefines_a_guest_and_frees_its_name(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    assert client.delete("/api/guests/web1", headers=AUTH).status_code == 204
    assert client.get("/api/guests/web1").status_code == 404
    define(client, "web1", "Haswell-v4")
    assert client.get("/api/guests/web1").json()["pin"]["name"] == "Haswell-v4"


def test_delete_keeps_the_cpu_history_unless_asked(client: TestClient, db_url: str) -> None:
    define(client, "web1", "Haswell-v3")
    define(client, "web2", "Haswell-v3")
    client.delete("/api/guests/web1", headers=AUTH)
    client.delete("/api/guests/web2", params={"history": "delete"}, headers=AUTH)
    store = open_store(db_url)
    assert [entry.reason for entry in store.history("web1")][-1] == "undefine"
    with pytest.raises(LookupError):
        store.history("web2")


def test_delete_of_a_running_guest_is_409(client: TestClient, db_url: str) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")
    start_on(db_url, "web1", "hv1")
    response = client.delete("/api/guests/web1", headers=AUTH)
    assert response.status_code == 409
    assert "it is running on 'hv1'" in response.json()["error"]


def test_delete_needs_the_token(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    assert client.delete("/api/guests/web1").status_code == 401


def test_cancel_update_drops_a_pending_update(client: TestClient, db_url: str) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")
    start_on(db_url, "web1", "hv1")
    body = {"to": "v4", "accept_signature_change": True, "force": True}
    updated = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert updated.json()["guest"]["pending"]["name"] == "Haswell-v4", updated.text
    cancelled = client.post("/api/guests/web1/cancel-update", headers=AUTH)
    assert cancelled.status_code == 200
    assert cancelled.json()["pending"] is None
    assert cancelled.json()["pin"]["name"] == "Haswell-v3"


def test_cancel_without_a_pending_update_is_409(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    response = client.post("/api/guests/web1/cancel-update", headers=AUTH)
    assert response.status_code == 409
    assert "no pending CPU update" in response.json()["error"]


def test_update_the_stored_hosts_cannot_run_is_409_unless_forced(client: TestClient) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v4")
    body = {"to": "v3", "accept_signature_change": True}
    refused = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert refused.status_code == 409
    assert "hv3 lacks hle, rtm" in refused.json()["error"]
    forced = client.post("/api/guests/web1/update-cpu", json={**body, "force": True}, headers=AUTH)
    assert forced.status_code == 200, forced.text


# -- can it start / migrate there? -----------------------------------------------------------------


def check(client: TestClient, guest: str, action: str, host: str) -> Any:
    response = client.get(f"/api/guests/{guest}/check", params={"action": action, "host": host})
    assert response.status_code == 200, response.text
    return response.json()


def test_check_says_a_host_with_every_pinned_feature_can_start_the_guest(
    client: TestClient,
) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")
    assert check(client, "web1", "start", "hv1") == {
        "guest": "web1", "action": "start", "host": "hv1", "allowed": True, "reason": None,
        "missing": [],
    }  # fmt: skip


def test_check_names_what_a_host_lacks(client: TestClient) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")
    answer = check(client, "web1", "start", "hv3")
    assert (answer["allowed"], answer["missing"]) == (False, ["hle", "rtm"])
    assert "cannot start guest 'web1' on host 'hv3'" in answer["reason"]


def test_check_of_a_step_the_state_forbids_says_why(client: TestClient) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")
    answer = check(client, "web1", "migrate", "hv1")
    assert answer["allowed"] is False
    assert "it is shutoff" in answer["reason"]


def test_check_changes_nothing(client: TestClient) -> None:
    add_rack3(client)
    before = define(client, "web1", "Haswell-v3")
    check(client, "web1", "start", "hv1")
    assert client.get("/api/guests/web1").json() == before


def test_check_of_an_unknown_host_is_404(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    response = client.get("/api/guests/web1/check", params={"action": "start", "host": "hv9"})
    assert response.status_code == 404


# -- probes ----------------------------------------------------------------------------------------


def test_healthz_answers_without_asking_the_database(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_answers_when_the_database_does(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ready"}


# -- docs and wording ------------------------------------------------------------------------------


def test_docs_load_only_this_servers_own_files(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/") for source in sources)
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert "<script>" not in page.text  # nothing inline: the strict CSP holds for /docs too
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_best_without_a_host_is_said_in_http_words(client: TestClient) -> None:
    response = client.post("/api/resolve", json={"specs": ["Haswell,version=best"], "accel": "kvm"})
    assert response.status_code == 400
    message = response.json()["error"]
    assert 'send a host snapshot as "host"' in message
    assert "--host" not in message
