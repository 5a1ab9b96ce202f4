"""The API docs in headless Chromium on a machine without internet: Swagger UI comes from the
server itself, lists every route, and nothing is fetched from elsewhere or refused by the CSP.
A screenshot lands in test-artifacts/docs.png.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_browser import ARTIFACTS, HERE, browser_tools

from servers import server_pool


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node, chromium, browser_dir = browser_tools()
    workdir = tmp_path_factory.mktemp("docs")
    with server_pool(workdir) as start:
        [server] = start(f"sqlite:///{workdir / 'cpuver.db'}", 1)
        config = {"base": server.base, "artifacts": str(ARTIFACTS)}
        env = dict(os.environ, CPUVER_CHROMIUM=chromium, CPUVER_BROWSER_DIR=str(browser_dir))
        done = subprocess.run(
            [node, str(HERE / "docs.mjs"), json.dumps(config)],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_docs_render_every_route_of_the_service(seen: dict[str, Any]) -> None:
    assert seen["status"] == 200
    assert seen["title"].startswith("cpuver")
    assert {"/api/resolve", "/api/guests/{name}/check", "/readyz"} <= set(seen["paths"])


def test_docs_fetch_nothing_from_elsewhere(seen: dict[str, Any]) -> None:
    assert seen["elsewhere"] == []


def test_docs_run_under_the_strict_content_security_policy(seen: dict[str, Any]) -> None:
    assert seen["problems"] == []


def test_docs_screenshot_is_kept(seen: dict[str, Any]) -> None:
    assert (Path(ARTIFACTS) / "docs.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
