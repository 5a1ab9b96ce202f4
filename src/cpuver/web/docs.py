"""The interactive API docs (Swagger UI at ``/docs``), served from this server, never a CDN.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN (blank on a machine without internet)
and starts it with an inline script (refused by the service's Content-Security-Policy). So the
page here is a static document whose scripts are all files of this server: Swagger UI's own
files as the ``fastapi-offline`` package ships them (kept current there, Swagger UI 5, which
reads FastAPI's OpenAPI 3.1), and a two-line starter in ``static/docs.js``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(str(files("fastapi_offline") / "static"))
"""swagger-ui-bundle.js, swagger-ui.css and a favicon."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cpuver API</title>
<link rel="icon" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""


def add_docs(app: FastAPI) -> None:
    app.mount("/docs/assets", StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(PAGE)
