"""``cpuver serve``: the REST service (FastAPI, OpenAPI at ``/openapi.json``, docs at ``/docs``).

Every answer comes from :mod:`cpuver.api`, so the service and the CLI agree. Reads are open;
writes need ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from cpuver.web.app import create_app
from cpuver.web.server import serve

__all__ = ["create_app", "serve"]
