"""The dashboard pages of cpuver.web over HTTP (FastAPI's TestClient), on a temporary SQLite store.

Pool rack3: hv1 offers (under KVM, QEMU 10.0) everything Haswell-v3 and Cooperlake-v2 need; hv3
the same without TSX (hle, rtm), as after a microcode update. Guest web1 is pinned to Haswell-v3
(needs TSX), so hv1 is a migration target and hv3 is not. Host hv5 (fixture ``hv5``) was probed
twice: with TSX, then after a microcode update without it.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cpuver import api
from cpuver.api import suggestions
from cpuver.host.capabilities import HostCapabilities
from cpuver.store import HostStore, StoreUnavailable
from cpuver.store.repository import GuestStore
from cpuver.web import dashboard
from fleet_hosts import TSX, capable, probed, snapshot
from servers import AUTH, TOKEN

PAGES = ("/", "/pools/rack3", "/models", "/models/Haswell", "/guests", "/guests/web1", "/hosts/hv1")
STORED_PAGES = ("/", "/pools/rack3", "/guests", "/guests/web1", "/hosts/hv1")
HOSTILE = {
    "brand": "<script>alert('brand')</script>",
    "kernel": '6.1"><img src=x onerror=alert(1)>',
    "microcode": "0x1<b>",
    "vulnerabilities": {"mds": "<i>Mitigation</i> & more"},
}


class Elements(HTMLParser):
    """Every start tag with its attributes (data-* are what the pages promise to tests), and the
    text of every element with a data-* attribute named in ``texts``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {key: value or "" for key, value in attrs}))

    def having(self, attribute: str) -> list[dict[str, str]]:
        return [attrs for _tag, attrs in self.found if attribute in attrs]

    def tags(self, name: str) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.found if tag == name]


def push(client: TestClient, document: dict[str, object], pool: str = "rack3") -> None:
    response = client.post("/api/hosts", json=document, params={"pool": pool}, headers=AUTH)
    assert response.status_code == 201, response.text


@pytest.fixture
def rack3(client: TestClient) -> TestClient:
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        push(client, snapshot(name, offers))
    return client


@pytest.fixture
def web1(rack3: TestClient, db_url: str, tmp_path: Path) -> TestClient:
    define(db_url, tmp_path, "web1", "Haswell-v3")
    return rack3


@pytest.fixture
def hv5(client: TestClient) -> TestClient:
    """hv5 in pool rack5: probed with TSX (microcode 0x1), then without it (microcode 0x2)."""
    push(client, probed("hv5", capable(), microcode="0x1"), "rack5")
    push(client, probed("hv5", capable() - TSX, microcode="0x2"), "rack5")
    return client


def define(db_url: str, tmp_path: Path, name: str, cpu: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu}))
    host = HostCapabilities("hv1", {"kvm": capable()})
    api.define_guest(api.open_store(db_url), path, api.open_catalog("10.0"), "kvm", host)


def with_pending_update(db_url: str, tmp_path: Path, name: str) -> None:
    """Guest ``name`` pinned to Haswell-v2 (runs on hv1 and hv3), running on hv1, with a pending
    update to Haswell-v3 (needs TSX: hv3 cannot run it)."""
    define(db_url, tmp_path, name, "Haswell-v2")
    store, hv1 = api.open_store(db_url), HostCapabilities("hv1", {"kvm": capable()})
    api.guest_transition(store, name, "start", host=hv1)
    catalog = api.open_catalog("10.0")
    api.update_guest_cpu(store, name, catalog, "v3", hv1, True, False)
    assert api.get_guest(store, name).pending is not None


def page(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def cells(client: TestClient, url: str) -> dict[tuple[str, str], dict[str, str]]:
    found = Elements(page(client, url)).having("data-state")
    return {(c["data-host"], c["data-version"]): c for c in found}


def row_of(text: str, attribute: str, value: str) -> str:
    """The HTML of the table row with ``attribute="value"``."""
    return text.split(f'{attribute}="{value}"', 1)[1].split("</tr>", 1)[0]


# -- every page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_page_has_no_inline_script_style_or_handler(web1: TestClient, url: str) -> None:
    elements = Elements(page(web1, url))
    assert elements.tags("style") == []
    assert all(script.get("src", "").startswith("/static/") for script in elements.tags("script"))
    attributes = {key for _tag, attrs in elements.found for key in attrs}
    assert "style" not in attributes
    assert not [key for key in attributes if key.startswith("on")]


@pytest.mark.parametrize("url", STORED_PAGES)
def test_page_of_an_unusable_database_is_503_with_retry_after(
    web1: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("database unavailable: the database is locked by another writer")

    monkeypatch.setattr(GuestStore, "_transaction", unavailable)
    monkeypatch.setattr(GuestStore, "read_one", unavailable)
    response = web1.get(url)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(dashboard.RETRY_AFTER_S)
    assert "database unavailable: the database is locked" in response.text
    assert "<h1>Unavailable</h1>" in response.text


def test_pages_use_the_stylesheet_and_script_the_app_serves(client: TestClient) -> None:
    text = page(client, "/")
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in text
    css, js = client.get("/static/dashboard.css"), client.get("/static/dashboard.js")
    assert css.status_code == 200 and "position: sticky" in css.text
    assert js.status_code == 200 and "family-filter" in js.text and "hide-idle" in js.text


def test_dashboard_pages_stay_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    probes = {"/healthz", "/readyz"}
    assert probes <= set(paths)
    assert all(path.startswith("/api/") for path in set(paths) - probes)


def test_big_pages_are_gzipped_for_browsers_that_take_it(rack3: TestClient) -> None:
    zipped = rack3.get("/pools/rack3", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert 'data-state="blocked"' in zipped.text
    plain = rack3.get("/pools/rack3", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.text == zipped.text


def test_small_pages_are_sent_as_they_are(client: TestClient) -> None:
    response = client.get("/guests", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers


# -- escaping -------------------------------------------------------------------------------------


def test_hostile_snapshot_text_is_escaped_on_the_host_page(client: TestClient) -> None:
    push(client, probed("hv9", capable(), **HOSTILE))  # type: ignore[arg-type]
    text = page(client, "/hosts/hv9")
    for raw in ("<script>alert", "<img src=x", "0x1<b>", "<i>Mitigation"):
        assert raw not in text
    assert "&lt;script&gt;alert(&#39;brand&#39;)&lt;/script&gt;" in text
    assert "6.1&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;i&gt;Mitigation&lt;/i&gt; &amp; more" in text


def test_hostile_actor_is_escaped_in_the_guest_history(
    rack3: TestClient, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "<script>alert('who')</script>")
    define(db_url, tmp_path, "web1", "Haswell-v3")
    text = page(rack3, "/guests/web1")
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#39;who&#39;)&lt;/script&gt;" in text


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


# -- overview -------------------------------------------------------------------------------------


def test_overview_links_each_pool_with_its_host_count(web1: TestClient) -> None:
    text = page(web1, "/")
    [row] = Elements(text).having("data-pool")
    assert row["data-pool"] == "rack3"
    pool_row = row_of(text, "data-pool", "rack3")
    assert '<a href="/pools/rack3">rack3</a>' in pool_row
    assert '<td class="num">2</td>' in pool_row


def test_overview_links_the_pool_members_to_their_host_pages(web1: TestClient) -> None:
    links = Elements(page(web1, "/")).having("data-host-link")
    assert [(a["data-host-link"], a["href"]) for a in links] == [
        ("hv1", "/hosts/hv1"), ("hv3", "/hosts/hv3")
    ]  # fmt: skip


def test_overview_counts_hosts_and_guests(web1: TestClient) -> None:
    text = page(web1, "/")
    assert 'data-stat="hosts"><span class="n">2</span>' in text
    assert 'data-stat="guests"><span class="n">1</span>' in text


def test_overview_on_an_empty_store_says_how_to_add_hosts(client: TestClient) -> None:
    assert "No pools yet" in page(client, "/")


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
    headers = Elements(page(rack3, "/pools/rack3?qemu=10.0")).having("colspan")
    [haswell] = [a for a in headers if a.get("data-family") == "Haswell"]
    assert haswell["colspan"] == "4"


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_heatmap_agrees_with_the_matrix_api(rack3: TestClient, accel: str) -> None:
    params = {"qemu": "10.0", "accel": accel}
    found = cells(rack3, f"/pools/rack3?qemu=10.0&accel={accel}")
    matrix = rack3.get("/api/pools/rack3/matrix", params=params).json()
    for host, row in zip(matrix["hosts"], matrix["runs"], strict=True):
        for version, runs in zip(matrix["versions"], row, strict=True):
            assert found[host, version]["data-state"] == ("runs" if runs else "blocked")


def test_heatmap_rows_link_to_the_host_pages(rack3: TestClient) -> None:
    links = Elements(page(rack3, "/pools/rack3")).having("data-host-link")
    assert {a["data-host-link"]: a["href"] for a in links} == {
        "hv1": "/hosts/hv1", "hv3": "/hosts/hv3"
    }  # fmt: skip


def test_heatmap_rows_are_paged_with_a_next_link(rack3: TestClient) -> None:
    first = page(rack3, "/pools/rack3?limit=1&accel=kvm")
    assert {c["data-host"] for c in Elements(first).having("data-state")} == {"hv1"}
    [link] = [a for a in Elements(first).tags("a") if a.get("rel") == "next"]
    assert link["href"] == "?accel=kvm&after=hv1&limit=1"
    second = page(rack3, "/pools/rack3" + link["href"])
    assert {c["data-host"] for c in Elements(second).having("data-state")} == {"hv3"}
    assert 'rel="next"' not in second


def test_pool_page_names_the_best_version_per_family(rack3: TestClient) -> None:
    text = page(rack3, "/pools/rack3?qemu=10.0")
    best = {a["data-family"]: a["data-best"] for a in Elements(text).having("data-best")}
    assert best["Haswell"] == "Haswell-v4"
    assert best["EPYC-Genoa"] == ""


def test_every_section_of_the_pool_page_tags_a_family_with_one_column_class(
    rack3: TestClient,
) -> None:
    elements = Elements(page(rack3, "/pools/rack3?qemu=10.0"))
    best_items = {a["data-family"]: a["data-col"] for a in elements.having("data-best")}
    headers = {a["data-family"]: a["data-col"] for a in elements.having("colspan")
               if "data-family" in a}  # fmt: skip
    assert best_items == headers
    classes = [a["class"].split() for a in elements.having("class")]
    haswell = headers["Haswell"]
    assert sum(haswell in c for c in classes) == 1 + 1 + 4 + 2 * 4  # best item, headers, cells


def family_columns(elements: Elements) -> dict[str, str]:
    """Versioned name -> family, from the heatmap's two header rows."""
    family_of_col = {a["data-col"]: a["data-family"] for a in elements.having("colspan")
                     if "data-col" in a}  # fmt: skip
    versions = [a for a in elements.tags("th") if "ver" in a.get("class", "").split()]
    return {a["data-version"]: family_of_col[a["class"].split()[1]] for a in versions}


def test_families_no_host_of_the_pool_runs_are_marked_for_the_toggle(rack3: TestClient) -> None:
    text = page(rack3, "/pools/rack3?qemu=10.0")
    family_of = family_columns(Elements(text))
    matrix = rack3.get("/api/pools/rack3/matrix", params={"qemu": "10.0"}).json()
    runs_somewhere = {family_of[v] for row in matrix["runs"]
                      for v, runs in zip(matrix["versions"], row, strict=True) if runs}  # fmt: skip
    marked = {a["data-family"]: a["data-runs"] for a in Elements(text).having("data-runs")}
    assert {f for f, runs in marked.items() if runs == "some"} == runs_somewhere
    idle = {f for f, runs in marked.items() if runs == "none"}
    assert "EPYC-Genoa" in idle
    assert f"Hide families no host of the pool runs ({len(idle)})" in text


def test_pool_page_shows_the_catalog_machine_and_accelerator(rack3: TestClient) -> None:
    text = page(rack3, "/pools/rack3?qemu=7.2&machine=")
    assert "2 hosts · QEMU 7.2" in text
    assert "accelerator kvm" in text


# -- models ---------------------------------------------------------------------------------------


def test_models_page_links_every_family(client: TestClient) -> None:
    text = page(client, "/models")
    families = [a["data-family"] for a in Elements(text).having("data-family")]
    assert "Haswell" in families and "EPYC-Rome" in families
    assert '<a href="/models/Haswell">Haswell</a>' in text


def test_model_page_shows_each_version_with_its_changes_and_release(client: TestClient) -> None:
    text = page(client, "/models/Haswell?qemu=10.0")
    versions = [a["data-version"] for a in Elements(text).having("data-version")]
    assert versions == ["Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4"]
    v2 = text.split('data-version="Haswell-v2"')[1].split("</li>")[0]
    assert "QEMU 4.1.0" in v2
    assert "&minus;hle" in v2 and "&minus;rtm" in v2
    assert "stepping = 1" in v2
    assert "alias Haswell-noTSX" in v2


def test_model_page_lists_the_bare_name_revisions_of_old_machine_types(client: TestClient) -> None:
    text = page(client, "/models/Haswell?qemu=10.0")
    assert "up to <code>pc-i440fx-2.4</code>, then +abm" in text


# -- guests ---------------------------------------------------------------------------------------


def test_guests_page_shows_the_pin_and_its_fingerprint(web1: TestClient, db_url: str) -> None:
    pin = api.get_guest(api.open_store(db_url), "web1").pin
    row = row_of(page(web1, "/guests"), "data-guest", "web1")
    assert 'data-cpu="Haswell-v3"' in row
    assert "<td>pc-q35-10.0</td>\n<td>kvm</td>" in row
    assert f'title="{pin.fingerprint}">{pin.fingerprint[:12]}</code>' in row
    assert "shutoff" in row


def test_guests_page_links_each_guest_to_its_page(web1: TestClient) -> None:
    [link] = Elements(page(web1, "/guests")).having("data-guest-link")
    assert (link["data-guest-link"], link["href"]) == ("web1", "/guests/web1")


def test_guest_row_counts_its_targets_and_blocked_hosts(web1: TestClient) -> None:
    [targets] = Elements(page(web1, "/guests")).having("data-targets")
    assert (targets["data-targets"], targets["data-blocked"]) == ("1", "1")
    assert "1 can run it" in page(web1, "/guests")


def test_guest_row_lists_its_hosts_with_what_blocked_ones_lack(web1: TestClient) -> None:
    chips = Elements(page(web1, "/guests")).having("data-guest")
    by_host = {c["data-host"]: c for c in chips if "data-host" in c}
    assert by_host["hv1"]["data-state"] == "target"
    assert by_host["hv3"]["data-state"] == "blocked"
    assert by_host["hv3"]["data-missing"] == "hle rtm"
    assert "lacks: hle rtm" in by_host["hv3"]["title"]
    assert by_host["hv3"]["href"] == "/hosts/hv3"


def test_guest_row_lists_only_the_first_hosts_and_links_to_the_rest(web1: TestClient) -> None:
    for n in range(10, 40):
        push(web1, snapshot(f"hv{n}", capable()), "wide")
    text = page(web1, "/guests")
    chips = [c for c in Elements(text).having("data-guest") if "data-host" in c]
    assert len(chips) == dashboard.TARGETS_SHOWN
    [targets] = Elements(text).having("data-targets")
    assert (targets["data-targets"], targets["data-blocked"]) == ("31", "1")
    more = [a for a in Elements(text).tags("a") if "more" in a.get("class", "").split()]
    assert [a["href"] for a in more] == ["/guests/web1#targets"]
    assert f"and {32 - dashboard.TARGETS_SHOWN} more" in text


def test_a_pending_update_the_host_cannot_run_makes_it_no_target(
    rack3: TestClient, db_url: str, tmp_path: Path
) -> None:
    with_pending_update(db_url, tmp_path, "web2")
    chips = Elements(page(rack3, "/guests")).having("data-guest")
    by_host = {c["data-host"]: c for c in chips if "data-host" in c}
    assert by_host["hv1"]["data-state"] == "target"
    assert (by_host["hv3"]["data-state"], by_host["hv3"]["data-missing"]) == ("blocked", "hle rtm")


def test_guests_page_on_an_empty_store_says_how_to_define_one(client: TestClient) -> None:
    assert "No guests yet" in page(client, "/guests")


# -- a guest --------------------------------------------------------------------------------------


def test_guest_page_shows_the_whole_pin(web1: TestClient, db_url: str) -> None:
    pin = api.get_guest(api.open_store(db_url), "web1").pin
    text = page(web1, "/guests/web1")
    assert Elements(text).having("data-pin")[0]["data-pin"] == "Haswell-v3"
    assert Elements(text).having("data-fingerprint")[0]["data-fingerprint"] == pin.fingerprint
    assert f"{len(pin.features_on)} on" in text and f"{len(pin.features_off)} off" in text
    assert "<dt>Machine</dt><dd>pc-q35-10.0</dd>" in text
    assert "model-id = Intel Core Processor (Haswell, IBRS)" in text


def test_guest_page_lists_every_cpu_change_oldest_first(
    rack3: TestClient, db_url: str, tmp_path: Path
) -> None:
    define(db_url, tmp_path, "web1", "Haswell-v2")
    hv1 = HostCapabilities("hv1", {"kvm": capable()})
    store, catalog = api.open_store(db_url), api.open_catalog("10.0")
    api.update_guest_cpu(store, "web1", catalog, "v4", hv1, True, False)
    text = page(rack3, "/guests/web1")
    rows = [row_of(text, "data-change", str(n)) for n in (1, 2)]
    assert "define" in rows[0] and "<td>Haswell-v2</td>" in rows[0]
    assert "update-cpu to Haswell-v4" in rows[1]
    assert "<td>Haswell-v2</td>\n<td>Haswell-v4</td>" in rows[1]


def test_guest_page_targets_agree_with_the_targets_api(web1: TestClient) -> None:
    text = page(web1, "/guests/web1")
    shown = {a["data-target"]: a["data-missing"] for a in Elements(text).having("data-target")}
    answer = web1.get("/api/guests/web1/targets").json()
    expected = {host: "" for host in answer["targets"]}
    expected |= {host: " ".join(missing) for host, missing in answer["blocked"].items()}
    assert shown == expected
    assert "1 of 2 stored hosts run the pin; 1 cannot" in text


def test_guest_page_groups_the_hosts_it_cannot_use_by_what_they_lack(web1: TestClient) -> None:
    for name in ("hv4", "hv5"):
        push(web1, snapshot(name, capable() - TSX))
    push(web1, snapshot("hv6", capable() - {"avx2"}))
    groups = Elements(page(web1, "/guests/web1")).having("data-lacking")
    assert [g["data-lacking"] for g in groups] == ["hle rtm", "avx2"]
    text = page(web1, "/guests/web1")
    first = text.split('data-lacking="hle rtm"', 1)[1].split("</li>", 1)[0]
    assert [a["data-host-link"] for a in Elements(first).having("data-host-link")] == [
        "hv3", "hv4", "hv5"
    ]  # fmt: skip


def test_guest_page_shows_the_pending_update_and_counts_it(
    rack3: TestClient, db_url: str, tmp_path: Path
) -> None:
    with_pending_update(db_url, tmp_path, "web2")
    text = page(rack3, "/guests/web2")
    assert Elements(text).having("data-pending")[0]["data-pending"] == "Haswell-v3"
    assert "+hle" in text and "+rtm" in text
    shown = {a["data-target"]: a["data-state"] for a in Elements(text).having("data-target")}
    assert shown == {"hv1": "target", "hv3": "blocked"}
    assert "run the pin and its pending update" in text


def test_guest_page_targets_are_paged(web1: TestClient) -> None:
    first = page(web1, "/guests/web1?limit=1")
    assert [a["data-target"] for a in Elements(first).having("data-target")] == ["hv1"]
    [link] = [a for a in Elements(first).tags("a") if a.get("rel") == "next"]
    second = page(web1, link["href"])
    assert [a["data-target"] for a in Elements(second).having("data-target")] == ["hv3"]
    assert 'rel="next"' not in second


# -- a host ---------------------------------------------------------------------------------------


def test_host_page_shows_its_current_snapshot(hv5: TestClient) -> None:
    text = page(hv5, "/hosts/hv5")
    facts = {a["data-fact"] for a in Elements(text).having("data-fact")}
    assert {"brand", "microcode", "kernel"} <= facts
    assert '<dd data-fact="microcode">0x2</dd>' in text
    assert "Intel(R) Xeon(R) Gold 6338" in text


def test_host_page_links_the_pools_it_is_in(hv5: TestClient) -> None:
    [link] = Elements(page(hv5, "/hosts/hv5")).having("data-pool-link")
    assert (link["data-pool-link"], link["href"]) == ("rack5", "/pools/rack5")


def test_host_page_lists_its_snapshots_newest_first(hv5: TestClient) -> None:
    text = page(hv5, "/hosts/hv5")
    assert [a["data-snapshot"] for a in Elements(text).having("data-snapshot")] == ["2", "1"]
    assert "2 snapshots" in text


def test_host_page_says_what_changed_between_snapshots(hv5: TestClient) -> None:
    text = page(hv5, "/hosts/hv5")
    newest = text.split('data-snapshot="2"', 1)[1].split('data-snapshot="1"', 1)[0]
    assert "microcode: 0x1 -&gt; 0x2" in newest
    assert "kvm (QEMU 10.0): lost hle, rtm (TSX disabled" in newest
    unusable = newest.split('data-change="unusable"', 1)[1].split("</li>", 1)[0]
    versions = {a["data-version"] for a in Elements(unusable).having("data-version")}
    assert {"Haswell-v1", "Haswell-v3", "Cooperlake-v2"} <= versions
    assert "Haswell-v2" not in versions


def test_host_page_says_an_unchanged_snapshot_changed_nothing(client: TestClient) -> None:
    push(client, probed("hv6", capable()))
    again = probed("hv6", capable())
    again["probed"] = "2026-12-02T08:00:00Z"  # probed again: same CPU, same offers
    push(client, again)
    text = page(client, "/hosts/hv6")
    assert [a["data-snapshot"] for a in Elements(text).having("data-snapshot")] == ["2", "1"]
    assert Elements(text).having("data-changes")[0]["data-changes"] == "none"


def test_host_page_runs_list_agrees_with_the_pool_heatmap(rack3: TestClient) -> None:
    heatmap = cells(rack3, "/pools/rack3?qemu=10.0")
    text = page(rack3, "/hosts/hv3?qemu=10.0")
    runs = {c["data-version"]: c for c in Elements(text).having("data-state")}
    assert set(runs) == {version for host, version in heatmap if host == "hv3"}
    for version, chip in runs.items():
        assert chip["data-state"] == heatmap["hv3", version]["data-state"]
        assert chip["data-missing"] == heatmap["hv3", version]["data-missing"]


def test_host_page_marks_the_families_it_runs_nothing_of(rack3: TestClient) -> None:
    text = page(rack3, "/hosts/hv3?qemu=10.0")
    marked = {a["data-family"]: a["data-runs"] for a in Elements(text).having("data-runs")}
    assert (marked["Haswell"], marked["Cooperlake"], marked["EPYC-Genoa"]) == (
        "some", "none", "none"
    )  # fmt: skip


def test_host_page_snapshots_are_paged(hv5: TestClient) -> None:
    first = page(hv5, "/hosts/hv5?limit=1")
    assert [a["data-snapshot"] for a in Elements(first).having("data-snapshot")] == ["2"]
    [link] = [a for a in Elements(first).tags("a") if a.get("rel") == "next"]
    second = page(hv5, link["href"])
    assert [a["data-snapshot"] for a in Elements(second).having("data-snapshot")] == ["1"]
    assert 'rel="next"' not in second


def test_host_page_under_tcg_uses_what_tcg_offers(rack3: TestClient) -> None:
    text = page(rack3, "/hosts/hv1?accel=tcg")
    assert "under tcg" in text
    runs = {c["data-version"]: c["data-state"] for c in Elements(text).having("data-state")}
    assert runs["Westmere-v1"] == "runs" and runs["Haswell-v1"] == "blocked"


# -- not found ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message", "nearest"),
    [
        ("/pools/rack4", "no pool named &#39;rack4&#39;", "/pools/rack3"),
        ("/hosts/hv33", "no host named &#39;hv33&#39;", "/hosts/hv3"),
        ("/guests/webl", "no guest named &#39;webl&#39;", "/guests/web1"),
        ("/models/Haswel", "unknown CPU model &#39;Haswel&#39;", "/models/Haswell"),
        ("/models/Haswell-v9", "unknown CPU model version &#39;Haswell-v9&#39;", "/models/Haswell"),
    ],
)
def test_unknown_name_is_a_404_page_suggesting_the_nearest(
    web1: TestClient, url: str, message: str, nearest: str
) -> None:
    text = page(web1, url, 404)
    assert "<h1>Not found</h1>" in text
    assert message in text
    suggested = [a["href"] for a in Elements(text).having("data-suggestion")]
    assert suggested[0] == nearest
    assert text.count("did you mean") + text.count("Did you mean") == 1


def test_a_name_like_no_other_gets_no_suggestion(web1: TestClient) -> None:
    text = page(web1, "/guests/zzzzzzzz", 404)
    assert Elements(text).having("data-suggestion") == []
    assert "Did you mean" not in text


def test_unknown_qemu_release_is_a_404_html_page(rack3: TestClient) -> None:
    assert "<h1>Not found</h1>" in page(rack3, "/pools/rack3?qemu=1.0", 404)


def test_suggestions_read_only_the_names_around_the_misspelt_one(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = HostStore(db_url)
    for n in range(100, 160):
        hosts.add(json.dumps(snapshot(f"hv{n}", capable())), f"hv{n}", ["big"])
    around = ["hv127", "hv128", "hv129", "hv130", "hv131", "hv132"]
    assert hosts.names_near("host", "hv130", 3) == around
    monkeypatch.setattr(suggestions, "SUGGEST_AROUND", 3)
    assert api.similar_names("host", "hv1300", hosts)[0] == "hv130"
    assert api.similar_names("host", "xhv100", hosts) == []  # hv100 is far from it in name order
    monkeypatch.setattr(suggestions, "SUGGEST_AROUND", 500)
    assert api.similar_names("host", "xhv100", hosts)[0] == "hv100"
    assert api.similar_names("pool", "bigg", hosts) == ["big"]
