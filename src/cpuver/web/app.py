"""The FastAPI application: routes, error mapping and the bearer-token check for writes.

Routes only translate HTTP to :mod:`cpuver.api` calls and back; every answer has the shape of the
matching ``cpuver ... --json`` output. Errors a client causes become a 4xx with
``{"error": "<one line>"}``: unknown names (model, guest, pool, host ...) 404, bad specs 400 with
the position, malformed bodies 422, other cpuver errors 400.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from cpuver import api
from cpuver.errors import CpuverError, InvalidSpec, NotRunnable
from cpuver.host.capabilities import HostCapabilities, from_json
from cpuver.resolve import Resolver

Accel = Literal["kvm", "tcg"]
NO_TOKEN = (
    "writes are disabled: the server has no token configured "
    "(start it with --token-file FILE or CPUVER_TOKEN set)"
)


class ResolveRequest(BaseModel):
    specs: list[str] = Field(min_length=1, description="CPU specs, e.g. Haswell,version=best")
    qemu: str | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: str | None = Field(None, description="machine type (default: newest pc-q35)")
    accel: Accel | None = Field(None, description="default: the host's only one, else kvm/tcg")
    host: dict[str, Any] | None = Field(None, description="a host snapshot (cpuver host probe)")


class ApiError(CpuverError):
    """An error with its own HTTP status (authentication, authorization)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _cpuver_error(_request: Request, err: Exception) -> JSONResponse:
    if isinstance(err, ApiError):
        return _error(err.status, str(err))
    if isinstance(err, InvalidSpec):
        message = f"{err.message} (at position {err.start} of {err.text!r})"
        return _error(400, message, spec=err.text, position=err.start, end=err.end)
    if isinstance(err, NotRunnable):
        blockers = {name: list(missing) for name, missing in err.blockers.items()}
        message = f"no version of {err.spec!r} can run on this host"
        return _error(409, message, blockers=blockers)
    if isinstance(err, LookupError):
        return _error(404, _one_line(str(err)))
    return _error(400, _one_line(str(err)))


def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    problems = []
    for item in err.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        if item.get("type") == "json_invalid":
            loc = item.get("loc", ())
            at = f" at position {loc[-1]}" if len(loc) > 1 and isinstance(loc[-1], int) else ""
            context = item.get("ctx", {}).get("error", "")
            problems.append(
                f"request body is not valid JSON{at}" + (f": {context}" if context else "")
            )
        else:
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return _error(422, "; ".join(problems) or "invalid request")


def _http_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    return _error(err.status_code, _one_line(str(err.detail)))


def _read_host(data: dict[str, Any] | None, source: str) -> HostCapabilities | None:
    return from_json(data, source) if data is not None else None


def _resolver(
    qemu: str | None, machine: str | None, accel: str | None, host: HostCapabilities | None
) -> Resolver:
    catalog = api.open_catalog(qemu)
    return Resolver(catalog, machine, api.pick_accel(accel, host), host)


def _host_row(record: Any) -> dict[str, Any]:
    """One stored host, as ``cpuver fleet ls --json`` shows it."""
    host = api.stored_host(record)
    return {
        "host": record.name,
        "pools": list(record.pools),
        "vendor": host.facts.vendor if host.facts else host.vendor,
        "accelerators": sorted(host.offers),
        "releases": sorted(host.releases) if host.releases else [],
        "snapshots": record.snapshots,
        "updated": record.updated.isoformat(timespec="seconds"),
    }


def create_app(db_url: str | None, token: str | None) -> FastAPI:
    """The service on the store at ``db_url`` (default: the SQLite file); ``token`` guards
    writes (None: every write is refused with 403)."""
    app = FastAPI(
        title="cpuver",
        summary="Versioned QEMU x86 CPU models: resolve specs, hosts in pools, pinned guests",
        version="0.1.0",
    )
    app.add_exception_handler(CpuverError, _cpuver_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    lock = threading.Lock()
    opened: dict[str, Any] = {}

    def store(kind: str, opener: Callable[[str | None], Any]) -> Any:
        with lock:
            if kind not in opened:
                opened[kind] = opener(db_url)
            return opened[kind]

    def hosts() -> Any:
        return store("hosts", api.open_host_store)

    def guests() -> Any:
        return store("guests", api.open_store)

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise ApiError(403, NO_TOKEN)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "this write needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "wrong token")

    @app.get("/api/models", tags=["catalog"])
    def models(
        qemu: str | None = None, machine: str | None = None, accel: Accel | None = None
    ) -> list[dict[str, Any]]:
        """Every CPU model name, shaped like QEMU's ``query-cpu-definitions``."""
        return api.definitions_json(_resolver(qemu, machine, accel, None))

    @app.post("/api/resolve", tags=["catalog"])
    def resolve(request: ResolveRequest) -> list[dict[str, Any]]:
        """Each spec resolved to an exact definition, in the order given."""
        host = _read_host(request.host, "request host")
        resolver = _resolver(request.qemu, request.machine, request.accel, host)
        return [api.resolution_json(resolver.resolve(spec)) for spec in request.specs]

    @app.get("/api/hosts", tags=["fleet"])
    def list_hosts(pool: str | None = None) -> list[dict[str, Any]]:
        """Stored hosts (of ``pool``, when given) and their pools."""
        return [_host_row(record) for record in hosts().list(pool)]

    @app.post("/api/hosts", status_code=201, tags=["fleet"], dependencies=[Depends(writer)])
    def add_host(
        snapshot: Annotated[dict[str, Any], Body(description="a host snapshot")],
        pool: Annotated[list[str] | None, Query(description="pool(s) for the host")] = None,
    ) -> dict[str, Any]:
        """Store a host snapshot (a known host is refreshed) in the pools of ``?pool=`` and of
        the body's ``pools`` field. Needs the bearer token."""
        data = dict(snapshot)
        extra = data.pop("pools", [])
        if not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
            raise CpuverError("pools: expected a list of pool names")
        host = from_json(data, "request body")
        record = api.add_host(hosts(), host, list(dict.fromkeys([*(pool or []), *extra])))
        return _host_row(record)

    @app.get("/api/pools", tags=["fleet"])
    def list_pools() -> list[dict[str, Any]]:
        """Every pool with its hosts."""
        return [{"pool": p.name, "hosts": list(p.hosts)} for p in hosts().pools()]

    @app.get("/api/pools/{pool}/best", tags=["fleet"])
    def pool_best(
        pool: str,
        spec: str,
        qemu: str | None = None,
        machine: str | None = None,
        accel: Accel = "kvm",
    ) -> dict[str, Any]:
        """The newest version of the spec's model every host of the pool runs (as
        ``cpuver pool best --json``)."""
        fleet = api.pool_fleet(hosts(), pool, api.open_catalog(qemu), accel, machine)
        found = api.pool_best(fleet, spec)
        answer = found.answer
        return {
            "pool": pool,
            "model": answer.model,
            "best": answer.best,
            "hosts": list(answer.hosts),
            "blocked": {v: {h: list(m) for h, m in hs} for v, hs in answer.blocked},
            "held-back": {v: {h: list(m) for h, m in hs} for v, hs in found.held_back},
        }

    @app.get("/api/pools/{pool}/matrix", tags=["fleet"])
    def pool_matrix(
        pool: str, qemu: str | None = None, machine: str | None = None, accel: Accel = "kvm"
    ) -> dict[str, Any]:
        """Hosts x model versions: which runs where (as ``cpuver pool matrix --json``)."""
        fleet = api.pool_fleet(hosts(), pool, api.open_catalog(qemu), accel, machine)
        return {
            "pool": pool,
            "hosts": list(fleet.hosts),
            "versions": list(fleet.versions),
            "runs": [[bool(x) for x in row] for row in fleet.matrix().tolist()],
        }

    @app.get("/api/guests", tags=["guests"])
    def list_guests() -> list[dict[str, Any]]:
        """Every stored guest with its pinned CPU."""
        out = []
        for record in guests().list():
            guest = api.get_guest(guests(), record.name)
            out.append(
                {
                    "name": guest.name,
                    "state": guest.state,
                    "host": guest.host,
                    "cpu": guest.pin.name,
                    "machine": guest.pin.machine,
                    "accel": guest.pin.accel,
                    "pending": guest.pending.name if guest.pending else None,
                    "fingerprint": guest.pin.fingerprint,
                    "generation": guest.generation,
                }
            )
        return out

    @app.get("/api/guests/{name}", tags=["guests"])
    def get_guest(name: str) -> dict[str, Any]:
        """One guest: state, host, the full pin (and a pending CPU update)."""
        return api.get_guest(guests(), name).to_json()

    return app


def serve(host: str, port: int, db_url: str | None, token: str | None) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(db_url, token), host=host, port=port, log_level="info")
