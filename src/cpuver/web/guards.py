"""What every request passes before a route sees it, and what every answer carries.

* :class:`BodyLimit` refuses a request body over :data:`MAX_BODY_BYTES` with 413 naming the
  limit, before reading more of it (a declared ``Content-Length`` is refused at once, a streamed
  body as soon as it passes the limit).
* :class:`HostCheck` answers 400 to a ``Host`` header that is not one of the server's names, so
  a page of another site that a browser was tricked into sending here (DNS rebinding) cannot
  read even the open routes. Starlette's TrustedHostMiddleware does the same, but answers in
  plain text and cuts ``[::1]:8000`` at its first colon; the service answers JSON on /api.
* :class:`BrowserHeaders` adds the headers that keep a browser from framing the pages,
  guessing content types or loading anything from elsewhere (CSP), the API docs included:
  their Swagger UI is served from this server (:mod:`cpuver.web.docs`).

Pure ASGI middleware: no per-request objects beyond what a refused request needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20
"""The largest request body (1 MiB): a host snapshot is about 10 KB, a guest definition less."""
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_STRICT = [*_COMMON, (b"content-security-policy", CSP.encode())]


async def _refuse(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *_STRICT,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return f"request body larger than the limit of {self.limit:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, 400, "Content-Length is not a number")
                    return
                if declared > self.limit:
                    await _refuse(send, 413, self._message())
                    return
        seen = 0
        started = refused = False

        async def limited() -> Message:
            # past the limit: answer 413 now, and tell the app the client went away (it stops
            # reading; whatever it answers then is dropped)
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    if not started:
                        await _refuse(send, 413, self._message())
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited, watched)


def _host_of(header: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8000`` -> ``::1``, ``web:80`` -> ``web``."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if header.count(":") == 1 else header.lower()


class HostCheck:
    def __init__(self, app: ASGIApp, names: Iterable[str]) -> None:
        self.app = app
        self.names = frozenset(name.lower().strip("[]") for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v for k, v in scope["headers"] if k == b"host"), b"")
            name = _host_of(header.decode("latin-1"))
            if name not in self.names:
                shown = name[:60] + ("..." if len(name) > 60 else "")
                await _refuse(
                    send,
                    400,
                    f"Host {shown!r} is not a name of this server "
                    "(cpuver serve --allowed-host NAME adds one)",
                )
                return
        await self.app(scope, receive, send)


class BrowserHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers += _STRICT
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
