"""Several ``cpuver serve`` processes on one database behave as one service.

Each test starts real servers (the ``serve`` fixture, tests/servers.py) on the same store: a
fresh database of the session's throwaway PostgreSQL cluster (``[postgresql]``; skips without
PostgreSQL, fails when ``CI=true``) or one SQLite file (``[sqlite]``). What one server writes,
every other one reads; two servers racing to write the same guest give one winner and a 409 for
the loser, never a 500 and never a half-written guest; two racing to add the same new host both
succeed.
Servers started at once on an empty database create its schema once (the store migrates under
a lock; each server migrates before it serves).

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell and Cascadelake-Server need; hv3
the same without TSX (hle, rtm).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cpuver.api import guest_transition, open_catalog
from cpuver.host.capabilities import HostCapabilities
from cpuver.store import GuestStore
from fleet_hosts import TSX, capable, snapshot
from postgres import url_fixture  # noqa: F401  (the url fixture)
from servers import AUTH, Serve, cpuver_script, without_token_env

GUESTS = "/api/guests"
HOSTS = "/api/hosts"
ROUNDS = 5
"""Races per concurrency test: each one on a fresh guest (host) both servers write at once."""


def every_version() -> frozenset[str]:
    """Every feature any Haswell or Cascadelake-Server version needs under KVM."""
    catalog = open_catalog("10.0")
    models = ("Haswell", "Cascadelake-Server")
    return capable(*(v.name for m in models for v in catalog.model(m).versions))


def definition(name: str, cpu: str) -> dict[str, Any]:
    """A ``POST /api/guests`` body: a JSON guest definition pinned under KVM, QEMU 10.0."""
    return {
        "definition": json.dumps({"name": name, "cpu": cpu}),
        "qemu": "10.0",
        "accel": "kvm",
    }


def at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run the calls in threads released together; their responses, in the order given."""
    barrier = threading.Barrier(len(calls))
    responses: list[httpx.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        responses[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in responses), "a request did not finish"
    return [r for r in responses if r is not None]


def test_servers_started_at_once_on_an_empty_database_migrate_it_once(
    url: str, serve: Serve
) -> None:
    servers = serve(url, 3)
    migrated = [s for s in servers if "migrated the store's schema" in s.output()]
    assert len(migrated) == 1, [s.output() for s in servers]
    with GuestStore(url) as store:
        assert store.migrate() is False  # at the newest revision already
    for server in servers:
        response = server.client.get("/api/guests")
        assert (response.status_code, response.json()) == (200, [])


def test_host_pushed_through_one_server_is_in_the_pool_answers_of_another(
    url: str, serve: Serve
) -> None:
    a, b = serve(url, 2)
    for name, offers in (("hv1", every_version()), ("hv3", every_version() - TSX)):
        pushed = a.client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
        assert pushed.status_code == 201, pushed.text
    listed = b.client.get("/api/hosts").json()
    assert [(h["host"], h["pools"]) for h in listed] == [("hv1", ["rack3"]), ("hv3", ["rack3"])]
    best = b.client.get("/api/pools/rack3/best", params={"spec": "Haswell", "qemu": "10.0"})
    assert best.status_code == 200, best.text
    assert (best.json()["hosts"], best.json()["best"]) == (["hv1", "hv3"], "Haswell-v4")
    assert best.json()["held-back"]["Haswell-v3"] == {"hv3": ["hle", "rtm"]}


def test_guest_defined_through_one_server_reads_back_through_another(
    url: str, serve: Serve
) -> None:
    a, b = serve(url, 2)
    created = a.client.post("/api/guests", json=definition("web1", "Haswell-v3"), headers=AUTH)
    assert created.status_code == 201, created.text
    assert b.client.get("/api/guests/web1").json() == created.json()
    assert [g["name"] for g in b.client.get("/api/guests").json()] == ["web1"]


def test_guest_defined_for_a_pool_pushed_through_another_server_gets_its_best(
    url: str, serve: Serve
) -> None:
    a, b = serve(url, 2)
    for name, offers in (("hv1", every_version()), ("hv3", every_version() - TSX)):
        a.client.post(
            "/api/hosts", json=snapshot(name, offers), params={"pool": "rack3"}, headers=AUTH
        )
    body = {**definition("web1", "Cascadelake-Server,version=best"), "pool": "rack3"}
    created = b.client.post("/api/guests", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    pin = created.json()["pin"]
    assert not TSX & set(pin["features"]["on"])  # hv3 could not run it otherwise
    targets = a.client.get("/api/guests/web1/targets", params={"pool": "rack3"}).json()
    assert targets == {"guest": "web1", "targets": ["hv1", "hv3"], "blocked": {}, "pending": None}


def test_one_guest_defined_through_two_servers_at_once_has_one_winner(
    url: str, serve: Serve
) -> None:
    a, b = serve(url, 2)
    for round_ in range(ROUNDS):
        name = f"web{round_}"
        answers = at_once(
            partial(a.client.post, GUESTS, json=definition(name, "Haswell-v2"), headers=AUTH),
            partial(b.client.post, GUESTS, json=definition(name, "Haswell-v4"), headers=AUTH),
        )
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
        [winner] = [r for r in answers if r.status_code == 201]
        [loser] = [r for r in answers if r.status_code == 409]
        assert loser.json() == {"error": f"a guest named {name!r} already exists"}
        assert a.client.get(f"/api/guests/{name}").json() == winner.json()
        with GuestStore(url) as store:
            assert len(store.history(name)) == 1  # the winner's definition, nothing else


def test_cpu_updates_through_two_servers_at_once_have_one_winner(url: str, serve: Serve) -> None:
    a, b = serve(url, 2)
    hv1 = HostCapabilities("hv1", {"kvm": every_version()})
    for round_ in range(ROUNDS):
        name = f"db{round_}"
        created = a.client.post(
            "/api/guests", json=definition(name, "Cascadelake-Server-v1"), headers=AUTH
        )
        assert created.status_code == 201, created.text
        with GuestStore(url) as store:  # running: an update waits for its next cold boot
            guest_transition(store, name, "start", host=hv1)
        update = f"/api/guests/{name}/update-cpu"
        answers = at_once(
            partial(a.client.post, update, json={"to": "v2", "qemu": "10.0"}, headers=AUTH),
            partial(b.client.post, update, json={"to": "v3", "qemu": "10.0"}, headers=AUTH),
        )
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        [winner] = [r.json()["guest"] for r in answers if r.status_code == 200]
        [loser] = [r.json() for r in answers if r.status_code == 409]
        # it read the guest before the winner wrote it, or after (the winner's update pending)
        assert "changed concurrently" in loser["error"] or "pending" in loser["error"]
        stored = b.client.get(f"/api/guests/{name}").json()
        assert stored == winner
        assert (stored["generation"], stored["pin"]["name"]) == (3, "Cascadelake-Server-v1")
        assert stored["pending"]["name"] in {"Cascadelake-Server-v2", "Cascadelake-Server-v3"}


def test_one_new_host_pushed_through_two_servers_at_once_lands_in_both_pools(
    url: str, serve: Serve
) -> None:
    a, b = serve(url, 2)
    offers = every_version()
    for round_ in range(ROUNDS):
        name = f"hv{round_}"
        answers = at_once(
            partial(a.client.post, HOSTS, json=snapshot(name, offers), params={"pool": "p1"},
                    headers=AUTH),
            partial(b.client.post, HOSTS, json=snapshot(name, offers - TSX),
                    params={"pool": "p2"}, headers=AUTH),
        )  # fmt: skip
        assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
        [stored] = [h for h in a.client.get(HOSTS).json() if h["host"] == name]
        assert (stored["pools"], stored["snapshots"]) == (["p1", "p2"], 2)


def test_workers_of_one_server_share_its_port_store_and_token(url: str, serve: Serve) -> None:
    [server] = serve(url, 1, "--workers", "2")
    for number in range(8):  # new connections: the workers take turns accepting them
        with httpx.Client(base_url=server.base) as client:
            body = definition(f"web{number}", "Haswell-v2")
            assert client.post(GUESTS, json=body, headers=AUTH).status_code == 201
    assert len(server.client.get(GUESTS).json()) == 8
    assert server.output().count("Started server process") == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_refused_with_a_clear_error(
    tmp_path: Path, serve: Serve, workers: str
) -> None:
    url = f"sqlite:///{tmp_path / 'cpuver.db'}"
    [server] = serve(url, 1, "--workers", "2")
    port = server.base.rsplit(":", 1)[1]
    second = subprocess.run(
        [cpuver_script(), "serve", "--port", port, "--db", url, "--workers", workers],
        capture_output=True, text=True, timeout=60, env=without_token_env(),
    )  # fmt: skip
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr
    assert server.client.get("/api/hosts").status_code == 200
