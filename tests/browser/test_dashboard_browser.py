"""The dashboard in headless Chromium: a real `cpuver serve` on a loopback port, driven by
dashboard.mjs (playwright-core on Debian's chromium), which prints what it saw as JSON.

Store: pool rack3 with hv1 (everything Haswell-v3 and Cooperlake-v2 need, under KVM, QEMU 10.0)
and hv3 (the same without TSX: hle, rtm); guest web1 pinned to Haswell-v3, so hv1 is its
migration target and hv3 is not. The server and one browser run are shared by the module; each
test checks one fact of that run. Screenshots land in test-artifacts/ at the repository root.

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
from fleet_hosts import TSX, capable, snapshot
from servers import server_pool

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "test-artifacts"
SCRIPT = HERE / "dashboard.mjs"
PAGES = ("overview", "pool", "models", "model", "guests")
SCREENSHOTS = (
    *(f"dashboard-{page}.png" for page in (*PAGES, "not-found")),
    "dashboard-pool-tooltip.png",
    "dashboard-pool-filtered.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    """Pool rack3 (hv1, hv3 without TSX) and guest web1 pinned to Haswell-v3, through the CLI."""
    files = []
    for name, offers in (("hv1", capable()), ("hv3", capable() - TSX)):
        path = directory / f"{name}.json"
        path.write_text(json.dumps(snapshot(name, offers)))
        files.append(str(path))
    assert main(["fleet", "add", *files, "--pool", "rack3", "--db", db_url]) == 0
    guest = directory / "web1.json"
    guest.write_text(json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Haswell-v3"}))
    define = ["domain", "define", str(guest), "--host", files[0], "--accel", "kvm", "--db", db_url]
    assert main(define) == 0


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """What dashboard.mjs saw on a served store (one server, one browser run per module)."""
    node, chromium, browser_dir = browser_tools()
    directory = tmp_path_factory.mktemp("dashboard")
    db_url = f"sqlite:///{directory / 'cpuver.db'}"
    fill_store(directory, db_url)
    for old in SCREENSHOTS:
        (ARTIFACTS / old).unlink(missing_ok=True)
    with server_pool(directory) as start:
        [server] = start(db_url, 1)
        config = {
            "base": server.base,
            "artifacts": str(ARTIFACTS),
            "pool": "rack3",
            "model": "Haswell",
            "hover": {"host": "hv3", "version": "Haswell-v1"},
            "filter": "haswell",
            "missingPool": "nope",
        }
        env = {**os.environ, "CPUVER_CHROMIUM": chromium, "CPUVER_BROWSER_DIR": str(browser_dir)}
        run = subprocess.run(
            [node, str(SCRIPT), json.dumps(config)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert run.returncode == 0, f"dashboard.mjs failed:\n{run.stderr}"
        yield json.loads(run.stdout)


def cell(seen: dict[str, Any], host: str, version: str) -> dict[str, Any]:
    [found] = [c for c in seen["heatmap"]["cells"] if c["host"] == host and c["version"] == version]
    return found


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


def test_overview_lists_the_pool_with_its_host_count_and_link(seen: dict[str, Any]) -> None:
    assert seen["overview"] == [{"pool": "rack3", "hosts": 2, "href": "/pools/rack3"}]


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


def test_family_filter_leaves_only_the_matching_family(seen: dict[str, Any]) -> None:
    assert seen["filter"]["visibleFamilies"] == ["Haswell"]
    assert seen["filter"]["visibleCells"] == 2 * 4


def test_model_page_shows_the_timeline_of_every_version(seen: dict[str, Any]) -> None:
    timeline = {entry["version"]: entry for entry in seen["timeline"]}
    assert list(timeline) == ["Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4"]
    assert timeline["Haswell-v2"]["since"] == "QEMU 4.1.0"
    assert {"\u2212hle", "\u2212rtm", "stepping = 1"} <= set(timeline["Haswell-v2"]["changes"])
    assert {"+hle", "+rtm", "+spec-ctrl"} <= set(timeline["Haswell-v3"]["changes"])


def test_models_page_lists_the_families(seen: dict[str, Any]) -> None:
    assert {"Haswell", "Cooperlake", "EPYC-Rome"} <= set(seen["models"])


def test_guests_page_shows_the_guest_pin(seen: dict[str, Any]) -> None:
    [guest] = seen["guests"]
    assert guest["guest"] == "web1"
    assert (guest["state"], guest["cpu"], guest["machine"], guest["accel"]) == (
        "shutoff", "Haswell-v3", "pc-q35-10.0", "kvm"
    )  # fmt: skip


def test_guests_page_shows_targets_and_what_blocked_hosts_lack(seen: dict[str, Any]) -> None:
    [guest] = seen["guests"]
    assert guest["targets"] == ["hv1"]
    assert guest["blocked"] == {"hv3": "hle rtm"}
    assert "web1 cannot run on hv3" in seen["guestTooltip"]
    assert "lacks: hle rtm" in seen["guestTooltip"]


def test_unknown_pool_is_a_404_page_naming_it(seen: dict[str, Any]) -> None:
    result = seen["pages"]["not-found"]
    assert result["status"] == 404
    assert result["h1"] == "Not found"
    assert result["message"] == "no pool named 'nope'"


@pytest.mark.parametrize("name", SCREENSHOTS)
def test_screenshot_is_a_non_trivial_png(seen: dict[str, Any], name: str) -> None:
    data = (ARTIFACTS / name).read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
