"""The dashboard pages of cpuver.web over HTTP (FastAPI's TestClient), on a temporary SQLite store.

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 and Cooperlake-v2 need; hv3
the same without TSX (hle, rtm), as after a microcode update. Guest web1 is pinned to Haswell-v3
(needs TSX), so hv1 is a migration target and hv3 is not.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cpuver import api
from cpuver.host.capabilities import HostCapabilities
from fleet_hosts import TSX, capable, snapshot
from servers import AUTH, TOKEN


class Elements(HTMLParser):
    """Every start tag with its attributes (data-* are what the pages promise to tests)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {key: value or "" for key, value in attrs}))

    def having(self, attribute: str) -> list[dict[str, str]]:
        return [attrs for _tag, attrs in self.found if attribute in attrs]


@pytest.fixture
def rack3(client: TestClient) -> TestClient:
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        response = client.post(
            "/api/hosts",
            json=snapshot(name, offers),
            params={"pool": "rack3"},
            headers=AUTH,
        )
        assert response.status_code == 201, response.text
    return client


@pytest.fixture
def web1(rack3: TestClient, db_url: str, tmp_path: Path) -> TestClient:
    path = tmp_path / "web1.json"
    path.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Haswell-v3"}))
    host = HostCapabilities("hv1", {"kvm": capable()})
    api.define_guest(api.open_store(db_url), path, api.open_catalog("10.0"), "kvm", host)
    return rack3


def cells(client: TestClient, url: str) -> dict[tuple[str, str], dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    found = Elements(response.text).having("data-state")
    return {(c["data-host"], c["data-version"]): c for c in found}


# -- overview -------------------------------------------------------------------------------------


def test_overview_links_each_pool_with_its_host_count(web1: TestClient) -> None:
    response = web1.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    [row] = Elements(response.text).having("data-pool")
    assert row["data-pool"] == "rack3"
    assert '<a href="/pools/rack3">rack3</a></td><td class="num">2</td>' in response.text


def test_overview_counts_hosts_and_guests(web1: TestClient) -> None:
    text = web1.get("/").text
    assert 'data-stat="hosts"><span class="n">2</span>' in text
    assert 'data-stat="guests"><span class="n">1</span>' in text


def test_overview_on_an_empty_store_says_how_to_add_hosts(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "No pools yet" in response.text


def test_pages_use_the_stylesheet_and_script_the_app_serves(client: TestClient) -> None:
    text = client.get("/").text
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in text
    css, js = client.get("/static/dashboard.css"), client.get("/static/dashboard.js")
    assert css.status_code == 200 and "position: sticky" in css.text
    assert js.status_code == 200 and "family-filter" in js.text


def test_dashboard_pages_stay_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert all(path.startswith("/api/") for path in paths)


# -- pool heatmap ---------------------------------------------------------------------------------


def test_heatmap_blocks_haswell_v1_on_the_host_without_tsx_naming_hle_rtm(
    rack3: TestClient,
) -> None:
    found = cells(rack3, "/pools/rack3?qemu=10.0")
    assert found["hv3", "Haswell-v1"]["data-state"] == "blocked"
    assert found["hv3", "Haswell-v1"]["data-missing"] == "hle rtm"
    assert found["hv3", "Haswell-v3"]["data-missing"] == "hle rtm"


def test_heatmap_runs_haswell_v2_on_both_hosts(rack3: TestClient) -> None:
    found = cells(rack3, "/pools/rack3?qemu=10.0")
    for host in ("hv1", "hv3"):
        assert found[host, "Haswell-v2"]["data-state"] == "runs"
        assert found[host, "Haswell-v2"]["data-missing"] == ""
    assert found["hv1", "Haswell-v1"]["data-state"] == "runs"


def test_heatmap_has_a_cell_for_every_host_and_versioned_name(rack3: TestClient) -> None:
    found = cells(rack3, "/pools/rack3?qemu=10.0")
    matrix = rack3.get("/api/pools/rack3/matrix", params={"qemu": "10.0"}).json()
    assert matrix["hosts"] == ["hv1", "hv3"]
    assert "Haswell-v4" in matrix["versions"] and "Haswell" not in matrix["versions"]
    assert set(found) == {(h, v) for h in matrix["hosts"] for v in matrix["versions"]}


def test_heatmap_groups_versions_under_a_family_header_spanning_them(rack3: TestClient) -> None:
    text = rack3.get("/pools/rack3?qemu=10.0").text
    headers = Elements(text).having("colspan")
    [haswell] = [a for a in headers if a.get("data-family") == "Haswell"]
    assert haswell["colspan"] == "4"


def test_pool_page_names_the_best_version_per_family(rack3: TestClient) -> None:
    text = rack3.get("/pools/rack3?qemu=10.0").text
    best = {a["data-family"]: a["data-best"] for a in Elements(text).having("data-best")}
    assert best["Haswell"] == "Haswell-v4"
    assert best["EPYC-Genoa"] == ""


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_heatmap_agrees_with_the_matrix_api(rack3: TestClient, accel: str) -> None:
    params = {"qemu": "10.0", "accel": accel}
    found = cells(rack3, f"/pools/rack3?qemu=10.0&accel={accel}")
    matrix = rack3.get("/api/pools/rack3/matrix", params=params).json()
    for host, row in zip(matrix["hosts"], matrix["runs"], strict=True):
        for version, runs in zip(matrix["versions"], row, strict=True):
            assert found[host, version]["data-state"] == ("runs" if runs else "blocked")


def test_pool_page_shows_the_catalog_machine_and_accelerator(rack3: TestClient) -> None:
    text = rack3.get("/pools/rack3", params={"qemu": "7.2", "machine": ""}).text
    assert "2 hosts · QEMU 7.2" in text
    assert "accelerator kvm" in text


def test_big_pages_are_gzipped_for_browsers_that_take_it(rack3: TestClient) -> None:
    zipped = rack3.get("/pools/rack3", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert 'data-state="blocked"' in zipped.text
    plain = rack3.get("/pools/rack3", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.text == zipped.text


# -- models ---------------------------------------------------------------------------------------


def test_models_page_links_every_family(client: TestClient) -> None:
    text = client.get("/models").text
    families = [a["data-family"] for a in Elements(text).having("data-family")]
    assert "Haswell" in families and "EPYC-Rome" in families
    assert '<a href="/models/Haswell">Haswell</a>' in text


def test_model_page_shows_each_version_with_its_changes_and_release(client: TestClient) -> None:
    response = client.get("/models/Haswell", params={"qemu": "10.0"})
    assert response.status_code == 200
    versions = [a["data-version"] for a in Elements(response.text).having("data-version")]
    assert versions == ["Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4"]
    v2 = response.text.split('data-version="Haswell-v2"')[1].split("</li>")[0]
    assert "QEMU 4.1.0" in v2
    assert "&minus;hle" in v2 and "&minus;rtm" in v2
    assert "stepping = 1" in v2
    assert "alias Haswell-noTSX" in v2


def test_model_page_lists_the_bare_name_revisions_of_old_machine_types(client: TestClient) -> None:
    text = client.get("/models/Haswell", params={"qemu": "10.0"}).text
    assert "up to <code>pc-i440fx-2.4</code>, then +abm" in text


# -- guests ---------------------------------------------------------------------------------------


def test_guests_page_shows_the_pin_and_its_fingerprint(web1: TestClient, db_url: str) -> None:
    pin = api.get_guest(api.open_store(db_url), "web1").pin
    text = web1.get("/guests").text
    row = text.split('data-guest="web1"')[1].split("</tr>")[0]
    assert 'data-cpu="Haswell-v3"' in row
    assert "<td>pc-q35-10.0</td><td>kvm</td>" in row
    assert f'title="{pin.fingerprint}">{pin.fingerprint[:12]}</code>' in row
    assert "shutoff" in row


def test_guests_page_splits_hosts_into_targets_and_blocked_with_what_they_lack(
    web1: TestClient,
) -> None:
    chips = Elements(web1.get("/guests").text).having("data-guest")
    by_host = {c["data-host"]: c for c in chips if "data-host" in c}
    assert by_host["hv1"]["data-state"] == "target"
    assert by_host["hv3"]["data-state"] == "blocked"
    assert by_host["hv3"]["data-missing"] == "hle rtm"
    assert "lacks: hle rtm" in by_host["hv3"]["title"]


def test_guests_page_on_an_empty_store_says_how_to_define_one(client: TestClient) -> None:
    assert "No guests yet" in client.get("/guests").text


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_pool_is_a_404_html_page_naming_it(client: TestClient) -> None:
    response = client.get("/pools/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "no pool named &#x27;nope&#x27;" in response.text


def test_unknown_model_is_a_404_html_page_naming_it(client: TestClient) -> None:
    response = client.get("/models/Haswel")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Haswel" in response.text and "<h1>Not found</h1>" in response.text


def test_unknown_qemu_release_is_a_404_html_page(rack3: TestClient) -> None:
    response = rack3.get("/pools/rack3", params={"qemu": "1.0"})
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.text


def test_names_with_markup_never_reach_the_store(client: TestClient) -> None:
    snapshot = HostCapabilities("hv9", {"kvm": capable()}).to_json()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bad_host = client.post("/api/hosts", json={**snapshot, "host": "<b>hv9"}, headers=headers)
    bad_pool = client.post("/api/hosts", json=snapshot, params={"pool": "<i>p"}, headers=headers)
    assert (bad_host.status_code, bad_pool.status_code) == (400, 400)
    assert "host name '<b>hv9' is not valid" in bad_host.json()["error"]
    assert "pool name '<i>p' is not valid" in bad_pool.json()["error"]
    assert client.get("/api/hosts").json() == []


def test_text_from_the_url_is_escaped_on_the_page(rack3: TestClient) -> None:
    for url in ("/models/%3Cb%3Ex", "/pools/rack3?machine=%3Cb%3Ex", "/?qemu=%3Cb%3Ex"):
        text = rack3.get(url).text
        assert "<b>x" not in text, url
        assert "&lt;b&gt;x" in text, url
