"""The dashboard in headless Chromium: a real `cpuver serve` on a loopback port, driven by
dashboard.mjs (playwright-core on Debian's chromium), which prints what it saw as JSON.

Store (filled through the CLI): pool rack3 with hv1 (everything Haswell-v3 and Cooperlake-v2
need, under KVM, QEMU 10.0) and hv3, probed twice: with TSX (microcode 0x1), then without it
(hle, rtm; microcode 0x2); pool wide with 30 more hosts like hv1; hv-odd in pool odd, whose
snapshot's CPU, kernel, microcode and vulnerability texts are markup. Guest web1 is pinned to
Haswell-v3, so hv3 is no target of it; guest web2 (defined by a user whose name is markup) runs
Haswell-v2 on hv1 with a pending update to Haswell-v3, so hv3 is no target of it either. The
server and one browser run are shared by the module; each test checks one fact of that run.
Screenshots of every page land in test-artifacts/ at the repository root.

Without chromium, node or playwright-core (./dev setup installs them) the tests skip, except
when CI=true: then they fail, so CI never goes green without a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import in_ci
from cpuver.cli import main
from fleet_hosts import TSX, capable, probed, snapshot
from servers import server_pool

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "test-artifacts"
SCRIPT = HERE / "dashboard.mjs"
PAGES = ("overview", "pool", "models", "model", "guests", "guest", "guest-pending", "host",
         "host-hostile")  # fmt: skip
NOT_FOUND = {"pool": "/pools/rack4", "host": "/hosts/hv3x", "guest": "/guests/web1x",
             "model": "/models/Haswel"}  # fmt: skip
SCREENSHOTS = (
    *(f"dashboard-{page}.png" for page in PAGES),
    *(f"dashboard-not-found{'' if kind == 'pool' else '-' + kind}.png" for kind in NOT_FOUND),
    "dashboard-pool-tooltip.png",
    "dashboard-pool-filtered.png",
    "dashboard-pool-toggled.png",
    "dashboard-guests-expanded.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDE = [f"hv{n}" for n in range(10, 40)]
HOSTILE = {
    "brand": "<script>alert('brand')</script>",
    "kernel": '6.1"><img src=x onerror=alert(1)>',
    "microcode": "0x1<b>",
    "vulnerabilities": {"mds": "<i>Mitigation</i> & more"},
}
HOSTILE_USER = "<b>ops</b><script>alert('user')</script>"


def browser_tools() -> tuple[str, str, Path]:
    """node, the chromium binary and the directory holding playwright-core; skips (CI: fails)
    when one is missing."""
    chromium = os.environ.get("CPUVER_CHROMIUM", "/usr/bin/chromium")
    browser_dir = Path(os.environ.get("CPUVER_BROWSER_DIR", HERE))
    node = shutil.which("node")
    problems = []
    if node is None:
        problems.append("node is not installed")
    if not os.access(chromium, os.X_OK):
        problems.append(f"no chromium at {chromium}")
    if not (browser_dir / "node_modules" / "playwright-core").is_dir():
        problems.append(f"no node_modules/playwright-core in {browser_dir} (npm ci)")
    if problems:
        message = "; ".join(problems) + " (./dev setup installs them)"
        if in_ci():
            pytest.fail(f"{message} [CI=true: browser tests fail, never skip]", pytrace=False)
        pytest.skip(message)
    assert node is not None
    return node, chromium, browser_dir


def fill_store(directory: Path, db_url: str) -> None:
    """The store described at the top, through the CLI."""
    db = ["--db", db_url]

    def add(pool: str, *documents: dict[str, Any]) -> None:
        files = []
        for document in documents:
            path = directory / f"{pool}-{len(list(directory.iterdir()))}.json"
            path.write_text(json.dumps(document))
            files.append(str(path))
        assert main(["fleet", "add", *files, "--pool", pool, *db]) == 0

    add("rack3", snapshot("hv1", capable()), probed("hv3", capable(), microcode="0x1"))
    add("rack3", probed("hv3", capable() - TSX, microcode="0x2"))
    add("wide", *(snapshot(name, capable()) for name in WIDE))
    add("odd", probed("hv-odd", capable(), **HOSTILE))  # type: ignore[arg-type]
    for name, cpu, user in (("web1", "Haswell-v3", "ops"), ("web2", "Haswell-v2", HOSTILE_USER)):
        guest = directory / f"{name}.json"
        guest.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": cpu}))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("USER", user)
            define = ["domain", "define", str(guest), "--host", "hv1", "--accel", "kvm", *db]
            assert main(define) == 0
            if name == "web2":
                assert main(["domain", "start", "web2", "--host", "hv1", *db]) == 0
                update = ["domain", "update-cpu", "web2", "--to", "v3", "--host", "hv1"]
                assert main([*update, "--accept-signature-change", *db]) == 0


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """What dashboard.mjs saw on a served store (one server, one browser run per module)."""
    node, chromium, browser_dir = browser_tools()
    directory = tmp_path_factory.mktemp("dashboard")
    db_url = f"sqlite:///{directory / 'cpuver.db'}"
    fill_store(directory, db_url)
    for old in ARTIFACTS.glob("dashboard-*.png"):
        old.unlink()
    with server_pool(directory) as start:
        [server] = start(db_url, 1)
        config = {
            "base": server.base,
            "artifacts": str(ARTIFACTS),
            "pool": "rack3",
            "model": "Haswell",
            "hover": {"host": "hv3", "version": "Haswell-v1"},
            "filter": "haswell",
            "guest": "web1",
            "pendingGuest": "web2",
            "host": "hv3",
            "hostileHost": "hv-odd",
            "missing": NOT_FOUND,
        }
        env = {**os.environ, "CPUVER_CHROMIUM": chromium, "CPUVER_BROWSER_DIR": str(browser_dir)}
        run = subprocess.run(
            [node, str(SCRIPT), json.dumps(config)],
            capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
        assert run.returncode == 0, f"dashboard.mjs failed:\n{run.stderr}"
        yield json.loads(run.stdout)


def cell(seen: dict[str, Any], host: str, version: str) -> dict[str, Any]:
    [found] = [c for c in seen["heatmap"]["cells"] if c["host"] == host and c["version"] == version]
    return found


def family(version: str) -> str:
    """The model family of a versioned name (``Skylake-Client-v4``: ``Skylake-Client``)."""
    return version.rsplit("-v", 1)[0]


def guest_row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [row] = [row for row in rows if row["guest"] == name]
    return row


# -- every page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_its_title_and_no_console_errors(seen: dict[str, Any], page: str) -> None:
    result = seen["pages"][page]
    assert result["status"] == 200
    assert result["title"].endswith(" · cpuver")
    assert result["h1"]
    assert result["errors"] == []


@pytest.mark.parametrize("page", PAGES)
def test_page_is_styled_by_the_served_stylesheet(seen: dict[str, Any], page: str) -> None:
    assert seen["pages"][page]["stylesheetApplied"]


@pytest.mark.parametrize("page", [*PAGES, "not-found"])
def test_page_runs_only_the_served_script(seen: dict[str, Any], page: str) -> None:
    assert seen["pages"][page]["scripts"] == ["/static/dashboard.js"]


def test_no_page_opened_a_dialog(seen: dict[str, Any]) -> None:
    assert seen["dialogs"] == []


@pytest.mark.parametrize("name", SCREENSHOTS)
def test_screenshot_is_a_non_trivial_png(seen: dict[str, Any], name: str) -> None:
    data = (ARTIFACTS / name).read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000


# -- overview and pool ----------------------------------------------------------------------------


def test_overview_lists_the_pools_with_their_host_counts_and_links(seen: dict[str, Any]) -> None:
    assert seen["overview"] == [
        {"pool": "odd", "hosts": 1, "href": "/pools/odd"},
        {"pool": "rack3", "hosts": 2, "href": "/pools/rack3"},
        {"pool": "wide", "hosts": 30, "href": "/pools/wide"},
    ]


def test_heatmap_shows_haswell_v1_blocked_on_the_host_without_tsx(seen: dict[str, Any]) -> None:
    blocked = cell(seen, "hv3", "Haswell-v1")
    assert blocked["state"] == "blocked"
    assert blocked["missing"] == "hle rtm"
    assert blocked["background"] != cell(seen, "hv3", "Haswell-v2")["background"]


def test_heatmap_shows_haswell_v2_running_on_every_host(seen: dict[str, Any]) -> None:
    assert cell(seen, "hv1", "Haswell-v2")["state"] == "runs"
    assert cell(seen, "hv3", "Haswell-v2")["state"] == "runs"
    assert cell(seen, "hv1", "Haswell-v1")["state"] == "runs"


def test_heatmap_header_sticks_while_the_table_scrolls(seen: dict[str, Any]) -> None:
    assert seen["heatmap"]["headerSticky"] == "sticky"


def test_pool_page_names_haswell_v4_as_the_pool_best(seen: dict[str, Any]) -> None:
    assert seen["heatmap"]["best"]["Haswell"] == "Haswell-v4"


def test_hovering_a_blocked_cell_shows_the_missing_features(seen: dict[str, Any]) -> None:
    text = seen["tooltip"]["text"]
    assert "Haswell-v1 on hv3" in text
    assert "lacks: hle rtm" in text


def test_family_filter_narrows_every_section_of_the_pool_page(seen: dict[str, Any]) -> None:
    filtered = seen["filter"]
    assert filtered["bestList"] == ["Haswell"]
    assert filtered["headers"] == ["Haswell"]
    assert filtered["versionHeaders"] == 4
    assert filtered["cells"] == 2 * 4
    total = len(seen["heatmap"]["best"])
    assert filtered["count"] == f"1 of {total} families shown"


def test_clearing_the_filter_shows_every_family_again(seen: dict[str, Any]) -> None:
    shown = seen["unfiltered"]
    assert len(shown["bestList"]) == len(shown["headers"]) == len(seen["heatmap"]["best"])
    assert shown["cells"] == len(seen["heatmap"]["cells"])


def test_toggle_hides_the_families_no_host_of_the_pool_runs(seen: dict[str, Any]) -> None:
    running = {family(c["version"]) for c in seen["heatmap"]["cells"] if c["state"] == "runs"}
    toggled = seen["toggle"]
    assert set(toggled["bestList"]) == set(toggled["headers"]) == running
    assert {f for f, runs in seen["heatmap"]["runs"].items() if runs == "some"} == running
    idle = len(seen["heatmap"]["best"]) - len(running)
    assert idle > 0 and "EPYC-Genoa" not in toggled["headers"]
    assert toggled["label"] == f"Hide families no host of the pool runs ({idle})"


def test_toggle_off_shows_every_family_again(seen: dict[str, Any]) -> None:
    assert seen["untoggled"] == seen["unfiltered"]


def test_a_host_of_the_heatmap_links_to_its_page(seen: dict[str, Any]) -> None:
    followed = seen["pages"]["host-from-pool"]
    assert (followed["status"], followed["url"], followed["h1"]) == (200, "/hosts/hv3", "Host hv3")


# -- models ---------------------------------------------------------------------------------------


def test_model_page_shows_the_timeline_of_every_version(seen: dict[str, Any]) -> None:
    timeline = {entry["version"]: entry for entry in seen["timeline"]}
    assert list(timeline) == ["Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4"]
    assert timeline["Haswell-v2"]["since"] == "QEMU 4.1.0"
    assert {"\u2212hle", "\u2212rtm", "stepping = 1"} <= set(timeline["Haswell-v2"]["changes"])
    assert {"+hle", "+rtm", "+spec-ctrl"} <= set(timeline["Haswell-v3"]["changes"])


def test_models_page_lists_the_families(seen: dict[str, Any]) -> None:
    assert {"Haswell", "Cooperlake", "EPYC-Rome"} <= set(seen["models"])


# -- guests ---------------------------------------------------------------------------------------


def test_guests_page_shows_each_guest_pin(seen: dict[str, Any]) -> None:
    rows = {row["guest"]: row for row in seen["guests"]}
    assert set(rows) == {"web1", "web2"}
    web1, web2 = rows["web1"], rows["web2"]
    assert (web1["state"], web1["cpu"], web1["machine"], web1["accel"]) == (
        "shutoff", "Haswell-v3", "pc-q35-10.0", "kvm"
    )  # fmt: skip
    assert (web2["state"], web2["cpu"], web2["pending"]) == ("running", "Haswell-v2", "Haswell-v3")


def test_a_guest_row_with_many_hosts_stays_one_line(seen: dict[str, Any]) -> None:
    web1 = guest_row(seen["guests"], "web1")
    assert web1["counts"] == [len(WIDE) + 2, 1]  # hv1, hv-odd and the wide pool; hv3
    assert web1["summary"] == f"{len(WIDE) + 2} can run it · 1 cannot"
    assert web1["visibleChips"] == 0
    assert web1["height"] < 2 * web1["lineHeight"]


def test_opening_a_guest_row_lists_its_first_hosts_and_a_link_to_the_rest(
    seen: dict[str, Any],
) -> None:
    web1 = guest_row(seen["guestsOpened"], "web1")
    assert web1["visibleChips"] == 24
    assert web1["blocked"] == {"hv3": "hle rtm"}  # listed first: what it cannot use
    assert web1["targets"][:3] == ["hv-odd", "hv1", "hv10"]
    assert web1["more"] == f"and {len(WIDE) + 3 - 24} more"
    assert web1["height"] > 2 * web1["lineHeight"]


def test_guests_page_shows_what_blocked_hosts_lack(seen: dict[str, Any]) -> None:
    web1 = guest_row(seen["guestsOpened"], "web1")
    assert web1["blocked"] == {"hv3": "hle rtm"}
    assert "web1 cannot run on hv3" in seen["guestTooltip"]
    assert "lacks: hle rtm" in seen["guestTooltip"]


def test_a_pending_update_hv3_cannot_run_makes_it_no_target(seen: dict[str, Any]) -> None:
    web2 = guest_row(seen["guests"], "web2")
    assert web2["counts"] == [len(WIDE) + 2, 1]
    assert web2["blocked"] == {"hv3": "hle rtm"}


# -- a guest --------------------------------------------------------------------------------------


def test_a_guest_of_the_guests_page_links_to_its_page(seen: dict[str, Any]) -> None:
    result = seen["pages"]["guest"]
    assert (result["url"], result["h1"]) == ("/guests/web1", "Guest web1")


def test_guest_page_shows_its_pin(seen: dict[str, Any]) -> None:
    shown = seen["guestPage"]
    assert shown["pin"] == "Haswell-v3"
    assert len(shown["fingerprint"]) == 64
    assert shown["pending"] is None


def test_guest_page_shows_its_cpu_history(seen: dict[str, Any]) -> None:
    [defined] = seen["guestPage"]["history"]
    who, why, old, new = defined[1:5]
    assert (who, old, new) == ("ops", "—", "Haswell-v3")
    assert why.startswith("define from web1.json")


def test_guest_page_shows_where_it_can_start_and_migrate(seen: dict[str, Any]) -> None:
    targets = seen["guestPage"]["targets"]
    assert targets["hv3"] == ["blocked", "hle rtm"]
    assert targets["hv1"] == ["target", ""]
    assert len(targets) == 2 + len(WIDE) + 1


def test_guest_page_shows_the_pending_update_and_counts_it(seen: dict[str, Any]) -> None:
    shown = seen["pendingGuestPage"]
    assert (shown["pin"], shown["pending"]) == ("Haswell-v2", "Haswell-v3")
    assert shown["targets"]["hv3"] == ["blocked", "hle rtm"]
    assert [row[4] for row in shown["history"]] == ["Haswell-v2"]  # pending: not yet its CPU


def test_a_user_name_with_markup_shows_as_text_in_the_history(seen: dict[str, Any]) -> None:
    actors = {row[1] for row in seen["pendingGuestPage"]["history"]}
    assert actors == {HOSTILE_USER}
    assert seen["pages"]["guest-pending"]["scripts"] == ["/static/dashboard.js"]


# -- a host ---------------------------------------------------------------------------------------


def test_host_page_shows_its_current_snapshot(seen: dict[str, Any]) -> None:
    facts = seen["hostPage"]["facts"]
    assert facts["microcode"] == "0x2"
    assert facts["brand"].startswith("Intel(R) Xeon(R) Gold 6338")


def test_host_page_lists_its_snapshots_with_what_changed(seen: dict[str, Any]) -> None:
    newest, oldest = seen["hostPage"]["snapshots"]
    assert (newest["number"], oldest["number"]) == ("2", "1")
    texts = {change["kind"]: change for change in newest["changes"]}
    assert texts["fact"]["text"] == "microcode: 0x1 -> 0x2"
    assert texts["offer"]["text"].startswith("kvm (QEMU 10.0): lost hle, rtm (TSX disabled")
    assert {"Haswell-v1", "Haswell-v3"} <= set(texts["unusable"]["versions"])
    assert oldest["changes"] == []


def test_host_page_shows_which_versions_it_runs_as_the_heatmap_does(seen: dict[str, Any]) -> None:
    runs = seen["hostPage"]["runs"]
    heatmap = {c["version"]: c["state"] for c in seen["heatmap"]["cells"] if c["host"] == "hv3"}
    assert runs == heatmap


def test_host_page_toggle_hides_the_families_it_runs_nothing_of(seen: dict[str, Any]) -> None:
    running = {family(v) for v, state in seen["hostPage"]["runs"].items() if state == "runs"}
    assert set(seen["hostPage"]["toggled"]) == running
    assert "Haswell" in running and "Cooperlake" not in running


def test_snapshot_text_with_markup_shows_as_text(seen: dict[str, Any]) -> None:
    shown = seen["hostileHostPage"]
    assert shown["facts"]["brand"].startswith(HOSTILE["brand"])
    assert shown["facts"]["kernel"] == HOSTILE["kernel"]
    assert shown["facts"]["microcode"] == HOSTILE["microcode"]
    assert shown["vulnerabilities"] == HOSTILE["vulnerabilities"]
    page = seen["pages"]["host-hostile"]
    assert (page["scripts"], page["images"], page["errors"]) == (["/static/dashboard.js"], 0, [])


# -- not found ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message", "nearest"),
    [
        ("pool", "no pool named 'rack4'", ["rack3", "/pools/rack3"]),
        ("host", "no host named 'hv3x'", ["hv3", "/hosts/hv3"]),
        ("guest", "no guest named 'web1x'", ["web1", "/guests/web1"]),
        ("model", "unknown CPU model 'Haswel'", ["Haswell", "/models/Haswell"]),
    ],
)
def test_an_unknown_name_is_a_404_page_suggesting_the_nearest(
    seen: dict[str, Any], kind: str, message: str, nearest: list[str]
) -> None:
    result = seen["notFound"][kind]
    assert (result["status"], result["h1"]) == (404, "Not found")
    assert result["message"].startswith(message)
    assert result["suggestions"][0] == nearest
    assert result["errors"] == []


def test_the_suggested_name_leads_to_its_page(seen: dict[str, Any]) -> None:
    followed = seen["notFound"]["followed"]
    assert (followed["status"], followed["url"], followed["h1"]) == (200, "/pools/rack3",
                                                                     "Pool rack3")  # fmt: skip
