"""The REST service (cpuver.web) on a temporary SQLite store, through FastAPI's TestClient, and
`cpuver serve` + `cpuver host push` as real processes on a loopback port.

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 and Cooperlake-v2 need; hv3
the same without TSX (hle, rtm), as after a microcode update.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cpuver.api import guest_transition, open_store
from cpuver.host.capabilities import HostCapabilities
from cpuver.web import create_app
from fleet_hosts import TSX, capable, snapshot
from servers import AUTH, TOKEN, Serve, cpuver_script, without_token_env

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


def test_resolving_twice_with_one_snapshot_gives_the_same_answer(client: TestClient) -> None:
    body = {"specs": ["Haswell,version=best"], "qemu": "10.0", "host": snapshot("hv1", capable())}
    first = client.post("/api/resolve", json=body)
    again = client.post("/api/resolve", json={**body, "host": dict(reversed(body["host"].items()))})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()


def test_resolve_with_another_snapshot_of_the_same_host_uses_the_new_one(
    client: TestClient,
) -> None:
    body = {"specs": ["Cooperlake,version=best"], "qemu": "10.0"}
    with_tsx = client.post("/api/resolve", json={**body, "host": snapshot("hv1", capable())})
    without = client.post("/api/resolve", json={**body, "host": snapshot("hv1", capable() - TSX)})
    assert with_tsx.json()[0]["name"] == "Cooperlake-v2"
    assert without.status_code == 409  # every Cooperlake version needs TSX


def test_snapshot_holding_a_number_beyond_64_bits_is_still_resolved(client: TestClient) -> None:
    host = {**snapshot("hv1", capable()), "probed": 2**70}  # too big for the fast JSON encoder
    response = client.post("/api/resolve", json={"specs": ["Haswell-v2"], "host": host})
    assert response.status_code == 200, response.text
    assert response.json()[0]["name"] == "Haswell-v2"


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
    assert data["error"] == "no version of 'Haswell,version=best' can run on host tiny"
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


def test_a_qmp_expansion_reply_is_read_with_qemus_rules_as_a_host_file_is(
    client: TestClient,
) -> None:
    """topoext: KVM offers it, QEMU's host expansion never shows it (host.evidence)."""
    props = {"vendor": "AuthenticAMD", "kvmclock": True, "sse2": True}
    reply = {"return": {"model": {"name": "host", "props": props}}}
    response = client.post("/api/resolve", json={"specs": ["qemu64,+topoext"], "host": reply})
    assert response.status_code == 200, response.text
    (answer,) = response.json()
    assert "topoext" not in answer["missing"]
    assert answer["unknown"] == {}


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


def guest(name: str, cpu: str, **fields: str) -> str:
    """A guest definition as JSON text (the ``definition`` field of ``POST /api/guests``)."""
    return json.dumps({"name": name, "cpu": cpu, **fields})


def add_rack3(client: TestClient) -> None:
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        response = client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
        assert response.status_code == 201, response.text


def define(client: TestClient, name: str, cpu: str, **body: Any) -> Any:
    """Define a guest through the service (kvm, QEMU 10.0 unless ``body`` says otherwise)."""
    request = {"definition": guest(name, cpu), "qemu": "10.0", "accel": "kvm", **body}
    response = client.post("/api/guests", json=request, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def test_defined_guest_is_201_with_the_shape_get_returns(client: TestClient) -> None:
    created = define(client, "web1", "Haswell-v2")
    assert created["pin"]["name"] == "Haswell-v2"
    assert (created["state"], created["generation"]) == ("shutoff", 1)
    assert client.get("/api/guests/web1").json() == created
    assert [g["name"] for g in client.get("/api/guests").json()] == ["web1"]


def test_guest_defined_from_libvirt_xml_pins_its_model_and_features(client: TestClient) -> None:
    xml = """<domain type='kvm'><name>web1</name>
      <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>
      <cpu mode='custom' match='exact'><model fallback='forbid'>Haswell</model>
        <feature policy='disable' name='hle'/></cpu></domain>"""
    body = {"definition": xml, "qemu": "10.0", "accel": "tcg"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    pin = response.json()["pin"]
    assert (pin["model"], pin["machine"]) == ("Haswell", "pc-q35-10.0")
    assert "hle" in pin["features"]["off"]


def test_guest_defined_from_toml_when_the_format_says_so(client: TestClient) -> None:
    body = {"definition": 'name = "web1"\ncpu = "Haswell-v1"\n', "format": "toml",
            "qemu": "10.0", "accel": "kvm"}  # fmt: skip
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["pin"]["name"] == "Haswell-v1"


def test_version_best_for_a_host_snapshot_is_what_that_host_runs(client: TestClient) -> None:
    created = define(client, "web1", "Cooperlake,version=best", host=snapshot("hv1", capable()))
    assert created["pin"]["name"] == "Cooperlake-v2"


def test_version_best_for_a_pool_is_what_every_host_of_it_runs(client: TestClient) -> None:
    add_rack3(client)
    body = {"definition": guest("web1", "Cooperlake,version=best"), "pool": "rack3",
            "qemu": "10.0"}  # fmt: skip
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 409  # hv3 has no TSX, every Cooperlake version needs it
    assert response.json()["blockers"]["Cooperlake-v2"] == ["hle", "rtm"]
    assert client.get("/api/guests").json() == []


def test_defining_a_taken_name_is_409_and_the_first_guest_stays(client: TestClient) -> None:
    first = define(client, "web1", "Haswell-v2")
    body = {"definition": guest("web1", "Haswell-v4"), "qemu": "10.0", "accel": "kvm"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 409
    assert response.json() == {"error": "a guest named 'web1' already exists"}
    assert client.get("/api/guests/web1").json() == first


def test_define_without_token_header_is_401(client: TestClient) -> None:
    response = client.post("/api/guests", json={"definition": guest("web1", "Haswell-v2")})
    assert response.status_code == 401
    assert client.get("/api/guests").json() == []


def test_define_is_403_when_the_server_has_no_token(db_url: str) -> None:
    client = TestClient(create_app(db_url, None))
    body = {"definition": guest("web1", "Haswell-v2")}
    assert client.post("/api/guests", json=body, headers=AUTH).status_code == 403


def test_define_without_a_definition_is_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/guests", json={"qemu": "10.0"}, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"error": "body.definition: Field required"}


def test_define_for_a_pool_and_a_host_at_once_is_422(client: TestClient) -> None:
    body = {
        "definition": guest("web1", "Haswell"),
        "pool": "rack3",
        "host": snapshot("hv1", capable()),
    }
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 422
    assert "pool or host" in response.json()["error"]


def test_define_of_an_unknown_format_is_422(client: TestClient) -> None:
    body = {"definition": guest("web1", "Haswell"), "format": "yaml"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.format:")


def test_bad_spec_inside_a_definition_is_400_naming_the_position(client: TestClient) -> None:
    body = {"definition": guest("web1", "Haswell,,+avx"), "accel": "tcg"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "definition: cpu: empty item (at position 8 of 'Haswell,,+avx')"
    assert (data["spec"], data["position"]) == ("Haswell,,+avx", 8)


def test_malformed_definition_text_is_400_saying_where(client: TestClient) -> None:
    body = {"definition": '{"name": "web1", "cpu": ', "format": "json"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"].startswith("definition.json: line 1, column 25: malformed JSON")


def test_define_for_an_unknown_pool_is_404(client: TestClient) -> None:
    body = {"definition": guest("web1", "Haswell,version=best"), "pool": "rack9"}
    response = client.post("/api/guests", json=body, headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "no pool named 'rack9'"}


def test_targets_are_the_hosts_of_the_pool_that_run_the_pin(client: TestClient) -> None:
    add_rack3(client)
    define(client, "web1", "Haswell-v3")  # needs TSX: hv3 has none
    response = client.get("/api/guests/web1/targets", params={"pool": "rack3"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "guest": "web1",
        "targets": ["hv1"],
        "blocked": {"hv3": ["hle", "rtm"]},
        "pending": None,
    }


def test_targets_of_an_unknown_guest_are_404(client: TestClient) -> None:
    response = client.get("/api/guests/web9/targets")
    assert response.status_code == 404
    assert response.json() == {"error": "no guest named 'web9'"}


def test_update_cpu_of_a_shut_off_guest_applies_at_once(client: TestClient) -> None:
    define(client, "web1", "Cooperlake-v1")
    body = {"to": "v2", "qemu": "10.0"}
    response = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["changes"][0] == "Cooperlake-v1 -> Cooperlake-v2"
    assert (data["applied"], data["pending"]) == (True, False)
    assert data["guest"] == client.get("/api/guests/web1").json()
    assert (data["guest"]["pin"]["name"], data["guest"]["generation"]) == ("Cooperlake-v2", 2)


def test_update_cpu_dry_run_shows_the_changes_and_keeps_the_pin(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    body = {"to": "latest", "qemu": "10.0", "dry_run": True}
    response = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    data = response.json()
    assert "Haswell-v3 -> Haswell-v4" in data["changes"]
    assert (data["applied"], data["identity_changed"]) == (False, True)
    assert client.get("/api/guests/web1").json()["pin"]["name"] == "Haswell-v3"


def test_update_cpu_changing_the_identity_needs_it_accepted(client: TestClient) -> None:
    define(client, "web1", "Haswell-v3")
    refused = client.post(
        "/api/guests/web1/update-cpu", json={"to": "latest", "qemu": "10.0"}, headers=AUTH
    )
    assert refused.status_code == 409  # refused until accepted, as the CLI's exit 3
    assert "accept the signature change" in refused.json()["error"]
    body = {"to": "latest", "qemu": "10.0", "accept_signature_change": True}
    accepted = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["guest"]["pin"]["name"] == "Haswell-v4"


def test_update_cpu_to_best_for_a_pool_is_what_every_host_runs(client: TestClient) -> None:
    add_rack3(client)
    define(client, "web1", "Cooperlake-v1", host=snapshot("hv1", capable()))
    body = {"to": "best", "pool": "rack3", "qemu": "10.0"}
    response = client.post("/api/guests/web1/update-cpu", json=body, headers=AUTH)
    assert response.status_code == 409
    assert response.json()["blockers"]["Cooperlake-v2"] == ["hle", "rtm"]


def test_update_cpu_while_an_update_is_pending_is_409(client: TestClient, db_url: str) -> None:
    define(client, "web1", "Cooperlake-v1")
    with open_store(db_url) as store:  # the guest runs: its update waits for a cold boot
        guest_transition(store, "web1", "start", host=HostCapabilities("hv1", {"kvm": capable()}))
    first = client.post(
        "/api/guests/web1/update-cpu", json={"to": "v2", "qemu": "10.0"}, headers=AUTH
    )
    assert first.status_code == 200, first.text
    assert first.json()["pending"] is True
    again = client.post(
        "/api/guests/web1/update-cpu", json={"to": "v2", "qemu": "10.0"}, headers=AUTH
    )
    assert again.status_code == 409
    assert "already has a pending CPU update to Cooperlake-v2" in again.json()["error"]


def test_update_cpu_without_token_header_is_401(client: TestClient) -> None:
    define(client, "web1", "Haswell-v1")
    response = client.post("/api/guests/web1/update-cpu", json={"to": "v2"})
    assert response.status_code == 401
    assert client.get("/api/guests/web1").json()["pin"]["name"] == "Haswell-v1"


def test_update_cpu_without_a_target_version_is_422(client: TestClient) -> None:
    define(client, "web1", "Haswell-v1")
    response = client.post("/api/guests/web1/update-cpu", json={}, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"error": "body.to: Field required"}


def test_update_cpu_of_an_unknown_guest_is_404(client: TestClient) -> None:
    response = client.post("/api/guests/web9/update-cpu", json={"to": "v2"}, headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "no guest named 'web9'"}


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
        "/api/pools/{pool}/baseline",
        "/api/pools/{pool}/what-if",
        "/api/hosts/{name}",
        "/api/guests",
        "/api/guests/{name}",
        "/api/guests/{name}/targets",
        "/api/guests/{name}/update-cpu",
        "/api/guests/{name}/cancel-update",
        "/api/guests/{name}/check",
        "/healthz",
        "/readyz",
    }


# -- baseline, what-if, host removal --------------------------------------------------------------


@pytest.fixture
def rack3(client: TestClient) -> TestClient:
    """Pool rack3: hv1 runs every Haswell version, hv3 lacks TSX."""
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        response = client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
        assert response.status_code == 201, response.text
    return client


def test_pool_baseline_gives_each_familys_best_for_the_pool(rack3: TestClient) -> None:
    data = rack3.get("/api/pools/rack3/baseline").json()
    assert data["hosts"] == ["hv1", "hv3"]
    assert data["best"]["Haswell"] == "Haswell-v4"
    assert data["best"]["Cooperlake"] is None


def test_what_if_dropping_tsx_names_the_changed_answers(rack3: TestClient) -> None:
    rack3.post("/api/hosts", json=snapshot("hv1", capable()), params={"pool": "gold"}, headers=AUTH)
    body = {"drop": ["hle", "rtm"]}
    data = rack3.post("/api/pools/gold/what-if", json=body).json()
    assert {"model": "Cooperlake", "before": "Cooperlake-v2", "after": None,
            "hosts": ["hv1"]} in data["answers"]  # fmt: skip
    assert (data["drop"], data["add"], data["hosts"]) == (["hle", "rtm"], [], None)


def test_what_if_with_no_change_is_422(rack3: TestClient) -> None:
    response = rack3.post("/api/pools/rack3/what-if", json={})
    assert response.status_code == 422
    assert "drop and/or add" in response.json()["error"]


def test_what_if_with_an_unknown_feature_is_400_naming_it(rack3: TestClient) -> None:
    response = rack3.post("/api/pools/rack3/what-if", json={"drop": ["hlee"]})
    assert response.status_code == 400
    assert "hlee" in response.json()["error"]


def test_removing_a_host_needs_the_token(rack3: TestClient) -> None:
    assert rack3.delete("/api/hosts/hv3").status_code == 401
    assert [h["host"] for h in rack3.get("/api/hosts").json()] == ["hv1", "hv3"]


def test_removing_a_host_forgets_it(rack3: TestClient) -> None:
    assert rack3.delete("/api/hosts/hv3", headers=AUTH).status_code == 204
    assert [h["host"] for h in rack3.get("/api/hosts").json()] == ["hv1"]
    assert rack3.get("/api/pools/rack3/baseline").json()["best"]["Haswell"] == "Haswell-v4"


def test_removing_an_unknown_host_is_404(client: TestClient) -> None:
    response = client.delete("/api/hosts/nope", headers=AUTH)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


# -- cpuver serve + cpuver host push, as processes ------------------------------------------------


def test_host_push_posts_a_snapshot_to_cpuver_serve(
    tmp_path: Path, db_url: str, serve: Serve
) -> None:
    [server] = serve(db_url, 1)
    token_file = tmp_path / "push-token"
    token_file.write_text(TOKEN + "\n")
    snapshot_file = tmp_path / "hv1.json"
    snapshot_file.write_text(json.dumps(snapshot("hv1", capable())))
    push = [cpuver_script(), "host", "push", server.base, "--snapshot", str(snapshot_file)]
    pushed = subprocess.run(
        [*push, "--pool", "rack3", "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=60, env=without_token_env(),
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed hv1" in pushed.stdout
    refused = subprocess.run(
        push, capture_output=True, text=True, timeout=60, env=without_token_env()
    )
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr
    listed = server.client.get("/api/hosts").json()
    assert [(h["host"], h["pools"]) for h in listed] == [("hv1", ["rack3"])]
