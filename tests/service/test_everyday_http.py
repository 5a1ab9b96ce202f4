"""An operator's day against a real ``cpuver serve`` over loopback: guests deleted (history kept
unless asked) and their names used again, a pending update cancelled, "could it start there?"
asked without changing anything, health and readiness probes, API docs from this server alone,
refusals as 409 and messages in HTTP's words. (The same routes in-process, one behaviour each:
tests/unit/test_web_everyday.py.)

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 needs; hv3 the same without
TSX (hle, rtm).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cpuver.api import open_store
from fleet_hosts import TSX, capable, snapshot, start_on
from servers import AUTH, Server, server_pool


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("everyday")


@pytest.fixture(scope="module")
def db(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'cpuver.db'}"


@pytest.fixture(scope="module")
def server(workdir: Path, db: str) -> Iterator[Server]:
    with server_pool(workdir) as start:
        [one] = start(db, 1)
        for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
            added = one.client.post(
                "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
            )
            assert added.status_code == 201, added.text
        yield one
        assert "Traceback" not in one.output(), one.output()[-3000:]


def define(server: Server, name: str, cpu: str) -> Any:
    definition = json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu})
    request = {"definition": definition, "qemu": "10.0", "accel": "kvm"}
    response = server.client.post("/api/guests", json=request, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_deleted_guest_keeps_its_history_and_its_name_is_free(server: Server, db: str) -> None:
    define(server, "del1", "Haswell-v3")
    assert server.client.delete("/api/guests/del1", headers=AUTH).status_code == 204
    assert server.client.get("/api/guests/del1").status_code == 404
    assert [e.reason for e in open_store(db).history("del1")][-1] == "undefine"
    define(server, "del1", "Haswell-v4")
    assert server.client.get("/api/guests/del1").json()["pin"]["name"] == "Haswell-v4"


def test_a_delete_asked_to_drop_the_history_drops_it(server: Server, db: str) -> None:
    define(server, "del2", "Haswell-v3")
    response = server.client.delete("/api/guests/del2", params={"history": "delete"}, headers=AUTH)
    assert response.status_code == 204
    with pytest.raises(LookupError):
        open_store(db).history("del2")


def test_a_running_guest_is_not_deleted_409(server: Server, db: str) -> None:
    define(server, "run1", "Haswell-v3")
    start_on(db, "run1", "hv1")
    response = server.client.delete("/api/guests/run1", headers=AUTH)
    assert response.status_code == 409
    assert "it is running on 'hv1'" in response.json()["error"]


def test_a_pending_update_is_cancelled(server: Server, db: str) -> None:
    define(server, "upd1", "Haswell-v3")
    start_on(db, "upd1", "hv1")
    body = {"to": "v4", "accept_signature_change": True, "force": True}
    updated = server.client.post("/api/guests/upd1/update-cpu", json=body, headers=AUTH)
    assert updated.json()["guest"]["pending"]["name"] == "Haswell-v4", updated.text
    cancelled = server.client.post("/api/guests/upd1/cancel-update", headers=AUTH)
    assert (cancelled.status_code, cancelled.json()["pending"]) == (200, None)
    again = server.client.post("/api/guests/upd1/cancel-update", headers=AUTH)
    assert again.status_code == 409
    assert "no pending CPU update" in again.json()["error"]


def test_check_answers_whether_a_guest_could_start_on_a_host_and_changes_nothing(
    server: Server,
) -> None:
    before = define(server, "chk1", "Haswell-v3")
    asked = {
        host: server.client.get(
            "/api/guests/chk1/check", params={"action": "start", "host": host}
        ).json()
        for host in ("hv1", "hv3")
    }
    assert (asked["hv1"]["allowed"], asked["hv1"]["missing"]) == (True, [])
    assert (asked["hv3"]["allowed"], asked["hv3"]["missing"]) == (False, ["hle", "rtm"])
    assert server.client.get("/api/guests/chk1").json() == before
    unknown = server.client.get("/api/guests/chk1/check", params={"action": "start", "host": "x"})
    assert unknown.status_code == 404


def test_health_and_readiness_answer(server: Server) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"status": "ready"}


def test_the_docs_page_and_every_file_it_loads_come_from_this_server(server: Server) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/") for source in sources)
    for source in sources:
        assert server.client.get(source).status_code == 200, source


def test_a_missing_host_is_said_in_http_words(server: Server) -> None:
    response = server.client.post(
        "/api/resolve", json={"specs": ["Haswell,version=best"], "accel": "kvm"}
    )
    assert response.status_code == 400
    assert 'send a host snapshot as "host"' in response.json()["error"]
    assert "--host" not in response.json()["error"]
