"""The FastAPI application: routes, error mapping and the bearer-token check for writes.

Routes only translate HTTP to :mod:`cpuver.api` calls and back; every answer has the shape of the
matching ``cpuver ... --json`` output. Errors a client causes become a 4xx with
``{"error": "<one line>"}``: unknown names (model, guest, pool, host ...) 404, bad specs 400 with
the position, malformed bodies 422, writes that lose to another writer (a guest name taken, a
guest changed since it was read, a CPU update already pending) 409, other cpuver errors 400.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from cpuver import api
from cpuver.catalog import Catalog
from cpuver.domain import IllegalTransition, UpdateConflict
from cpuver.errors import CpuverError, InvalidSpec, NotRunnable, UnknownFeature
from cpuver.host.capabilities import HostCapabilities, from_json
from cpuver.resolve import Resolver
from cpuver.store import ConcurrentUpdate, GuestExists
from cpuver.web.dashboard import add_dashboard

Accel = Literal["kvm", "tcg"]
RESOLVERS_KEPT = 256
"""Resolvers kept for resolve requests (per QEMU release, machine, accelerator, host snapshot)."""
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


class WhatIfRequest(BaseModel):
    drop: list[str] = Field([], description="features the hosts lose, e.g. [\"hle\", \"rtm\"]")
    add: list[str] = Field([], description="features the hosts gain")
    hosts: list[str] | None = Field(None, description="only these hosts of the pool")
    qemu: str | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: str | None = Field(None, description="machine type (default: newest pc-q35)")
    accel: Accel = Field("kvm", description="accelerator (default: kvm)")

    @model_validator(mode="after")
    def _some_change(self) -> WhatIfRequest:
        if not self.drop and not self.add:
            raise ValueError("give features to drop and/or add")
        return self


class DefineGuestRequest(BaseModel):
    definition: str = Field(
        min_length=1,
        description='libvirt domain XML, or guest JSON/TOML: {"name", "machine", "cpu"}',
    )
    format: Literal["xml", "json", "toml"] | None = Field(
        None, description="how to read the definition (default: told from the text)"
    )
    pool: str | None = Field(
        None, description="resolve version=best for every host of this pool (migration-safe)"
    )
    host: dict[str, Any] | None = Field(
        None, description="resolve version=best for this host snapshot (cpuver host probe)"
    )
    qemu: str | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: str | None = Field(None, description="machine type (default: the definition's)")
    accel: Accel | None = Field(None, description="default: the host's only one, else kvm/tcg")

    @model_validator(mode="after")
    def _one_target(self) -> DefineGuestRequest:
        if self.pool is not None and self.host is not None:
            raise ValueError("give pool or host for version=best, not both")
        return self


class UpdateCpuRequest(BaseModel):
    to: str = Field(min_length=1, description="best, latest or a version (v4)")
    pool: str | None = Field(
        None, description="resolve version=best for every host of this pool (migration-safe)"
    )
    host: dict[str, Any] | None = Field(
        None, description="resolve version=best for this host snapshot (cpuver host probe)"
    )
    qemu: str | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    accept_signature_change: bool = Field(
        False, description="allow a change of vendor, family, model, stepping or model-id"
    )
    dry_run: bool = Field(False, description="only show what would change")

    @model_validator(mode="after")
    def _one_target(self) -> UpdateCpuRequest:
        if self.pool is not None and self.host is not None:
            raise ValueError("give pool or host for version=best, not both")
        return self


# A write that lost to another writer, or that the guest's current state refuses: retrying after
# reading the guest again may succeed, so the client is told it is a conflict, not a bad request.
CONFLICTS = (GuestExists, ConcurrentUpdate, UpdateConflict, IllegalTransition)


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
    # a bad spec, given directly or inside a guest definition (then the error names where)
    bad_spec = err if isinstance(err, InvalidSpec) else err.__cause__
    if isinstance(bad_spec, InvalidSpec):
        where = f"{bad_spec.message} (at position {bad_spec.start} of {bad_spec.text!r})"
        message = str(err).replace(str(bad_spec), where)
        return _error(400, message, spec=bad_spec.text, position=bad_spec.start, end=bad_spec.end)
    if isinstance(err, CONFLICTS):
        return _error(409, _one_line(str(err)))
    if isinstance(err, NotRunnable):
        blockers = {name: list(missing) for name, missing in err.blockers.items()}
        message = f"no version of {err.spec!r} can run on {err.where}"
        return _error(409, message, blockers=blockers)
    if isinstance(err, LookupError) and not isinstance(err, UnknownFeature):
        # unknown names in the path (model, pool, host, guest); a feature is request content
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


def _definition_source(text: str, given: str | None) -> str:
    """A name for the definition whose suffix tells :func:`api.define_guest_text` how to read
    it (XML is recognised here: only the XML reader maps libvirt's model names)."""
    kind = given or ("xml" if text.lstrip().startswith("<") else None)
    return f"definition.{kind}" if kind else "definition"


def _resolver(
    qemu: str | None, machine: str | None, accel: str | None, host: HostCapabilities | None
) -> Resolver:
    catalog = api.open_catalog(qemu)
    return Resolver(catalog, machine, api.pick_accel(accel, host), host)


class _Snapshot:
    """A request's host snapshot that hashes and compares as its canonical JSON (sorted keys),
    so identical snapshots find one cache entry, and keeps the data to read on a miss."""

    __slots__ = ("data", "key")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        try:
            self.key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # integers beyond 64 bits: the slower encoder takes them
            self.key = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Snapshot) and other.key == self.key


@lru_cache(maxsize=RESOLVERS_KEPT)
def _request_resolver(
    qemu: str | None, machine: str | None, accel: str | None, snapshot: _Snapshot | None
) -> Resolver:
    """The resolver for a resolve request, kept per snapshot: reading a probed host's snapshot
    and setting up a resolver cost more than resolving, and clients send the same few
    snapshots again and again. Only an identical snapshot hits."""
    host = _read_host(snapshot.data, "request host") if snapshot is not None else None
    return _resolver(qemu, machine, accel, host)


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

    add_dashboard(app, hosts, guests)

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise ApiError(403, NO_TOKEN)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "this write needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "wrong token")

    def best_for(
        snapshot: dict[str, Any] | None, pool: str | None, catalog: Catalog, accel: str
    ) -> HostCapabilities | None:
        """What version=best is resolved for: every host of ``pool`` at once, else the snapshot
        given, else nothing (the catalog's own answer)."""
        if pool is not None:
            return api.pool_host(hosts(), pool, catalog, accel)
        return _read_host(snapshot, "request host")

    @app.get("/api/models", tags=["catalog"])
    def models(
        qemu: str | None = None, machine: str | None = None, accel: Accel | None = None
    ) -> list[dict[str, Any]]:
        """Every CPU model name, shaped like QEMU's ``query-cpu-definitions``."""
        return api.definitions_json(_resolver(qemu, machine, accel, None))

    @app.post("/api/resolve", tags=["catalog"], response_model=list[dict[str, Any]])
    async def resolve(request: ResolveRequest) -> Response:
        """Each spec resolved to an exact definition, in the order given."""
        # async and answered as ready JSON: resolving takes microseconds, so a worker thread
        # and FastAPI's re-encoding of the answer would cost more than the work itself
        snapshot = _Snapshot(request.host) if request.host is not None else None
        resolver = _request_resolver(request.qemu, request.machine, request.accel, snapshot)
        answer = [api.resolution_json(resolver.resolve(spec)) for spec in request.specs]
        return Response(orjson.dumps(answer), media_type="application/json")

    @app.get("/api/hosts", tags=["fleet"])
    def list_hosts(pool: str | None = None) -> list[dict[str, Any]]:
        """Stored hosts (of ``pool``, when given) and their pools."""
        return [api.host_json(record) for record in hosts().list(pool)]

    @app.delete(
        "/api/hosts/{name}", status_code=204, tags=["fleet"], dependencies=[Depends(writer)]
    )
    def remove_host(name: str) -> Response:
        """Forget a host, its snapshot history and its pool memberships (as ``cpuver fleet rm``);
        a pool left without hosts goes too. Needs the bearer token."""
        hosts().remove(name)
        return Response(status_code=204)

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
        return api.host_json(record)

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
        return api.pool_best_json(pool, api.pool_best(fleet, spec))

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

    @app.get("/api/pools/{pool}/baseline", tags=["fleet"])
    def pool_baseline(
        pool: str, qemu: str | None = None, machine: str | None = None, accel: Accel = "kvm"
    ) -> dict[str, Any]:
        """Per model family, the newest version every host of the pool runs (as ``cpuver pool
        baseline --json``)."""
        fleet = api.pool_fleet(hosts(), pool, api.open_catalog(qemu), accel, machine)
        return {"pool": pool, "hosts": list(fleet.hosts), "best": fleet.baseline()}

    @app.post("/api/pools/{pool}/what-if", tags=["fleet"])
    def pool_what_if(pool: str, request: WhatIfRequest) -> dict[str, Any]:
        """Which pool answers change and which stored guests lose a host if the pool's hosts
        (only ``hosts``, when given) lose ``drop`` and gain ``add`` (as ``cpuver fleet what-if
        --json``). Changes nothing."""
        drop, add = api.canonical_features(request.drop), api.canonical_features(request.add)
        outcome = api.fleet_what_if(
            hosts(), guests(), pool, api.open_catalog(request.qemu), drop, add, request.hosts,
            request.accel, request.machine,
        )  # fmt: skip
        return api.what_if_json(pool, drop, add, request.hosts, outcome)

    @app.get("/api/guests", tags=["guests"])
    def list_guests() -> list[dict[str, Any]]:
        """Every stored guest with its pinned CPU."""
        return [
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
            for guest in api.list_guests(guests())
        ]

    @app.get("/api/guests/{name}", tags=["guests"])
    def get_guest(name: str) -> dict[str, Any]:
        """One guest: state, host, the full pin (and a pending CPU update)."""
        return api.get_guest(guests(), name).to_json()

    @app.post("/api/guests", status_code=201, tags=["guests"], dependencies=[Depends(writer)])
    def define_guest(request: DefineGuestRequest) -> dict[str, Any]:
        """Resolve a guest definition's CPU once and store the pinned guest (as ``cpuver domain
        define``); the answer is the guest as ``GET /api/guests/{name}`` shows it. A taken name
        is 409. Needs the bearer token."""
        catalog = api.open_catalog(request.qemu)
        host = best_for(request.host, request.pool, catalog, request.accel or "kvm")
        guest = api.define_guest_text(
            guests(), request.definition, _definition_source(request.definition, request.format),
            catalog, api.pick_accel(request.accel, host), host, request.machine,
        )  # fmt: skip
        return guest.to_json()

    @app.get("/api/guests/{name}/targets", tags=["guests"])
    def guest_targets(name: str, pool: str | None = None) -> dict[str, Any]:
        """Hosts (of ``pool``, when given) the guest's pinned CPU runs on, and what each other
        host lacks (as ``cpuver fleet targets --json``)."""
        return api.targets_json(*api.guest_targets(hosts(), guests(), name, pool))

    @app.post("/api/guests/{name}/update-cpu", tags=["guests"], dependencies=[Depends(writer)])
    def update_guest_cpu(name: str, request: UpdateCpuRequest) -> dict[str, Any]:
        """Move the guest's pin to another version of its model (as ``cpuver domain
        update-cpu``): at once when shut off, else pending until its next cold boot. A guest
        changed by someone else meanwhile, or with an update pending already, is 409. Needs the
        bearer token."""
        catalog = api.open_catalog(request.qemu)
        accel = api.get_guest(guests(), name).pin.accel
        host = best_for(request.host, request.pool, catalog, accel)
        # a dry run shows the diff even when applying it would need accept_signature_change
        accept = request.accept_signature_change or request.dry_run
        guest, diff = api.update_guest_cpu(
            guests(), name, catalog, request.to, host, accept, request.dry_run
        )
        return {
            "guest": guest.to_json(),
            "changes": diff.lines(),
            "applied": diff.applied,
            "pending": diff.pending,
            "identity_changed": diff.identity_changed,
            "dry_run": request.dry_run,
        }

    return app
