"""The FastAPI application: routes, error mapping and the bearer-token check for writes.

Routes only translate HTTP to :mod:`cpuver.api` calls and back; every answer has the shape of the
matching ``cpuver ... --json`` output. Errors a client causes become a 4xx with
``{"error": "<one line>"}``: unknown names (model, guest, pool, host ...) 404, bad specs 400 with
the position, malformed bodies 422, writes that lose to another writer (a guest name taken, a
guest changed since it was read, a CPU update already pending) 409, other cpuver errors 400, a
body over the limit 413, a database that cannot be used right now 503 with ``Retry-After``.

Every request is bounded (body size, list lengths, text lengths: the limit is named in the 413
or 422), work that may take long runs off the event loop, and caches are bounded in bytes.
Every list is paged: ``?limit=&after=`` (names sort the list; the next page starts after the
last name of this one, given in the ``Link: <...>; rel="next"`` header while there is more).
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from cachetools import LRUCache
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from cpuver import api
from cpuver.catalog import Catalog
from cpuver.errors import (
    CpuverError,
    HostNeeded,
    InvalidSpec,
    NotRunnable,
    UnknownFeature,
    shown,
)
from cpuver.host.capabilities import HostCapabilities
from cpuver.names import NAME_MAX
from cpuver.resolve import Resolver
from cpuver.store import StoreUnavailable
from cpuver.web.dashboard import add_dashboard
from cpuver.web.docs import add_docs
from cpuver.web.guards import BodyLimit, BrowserHeaders, HostCheck

Accel = Literal["kvm", "tcg"]
RESOLVER_CACHE_BYTES = 64 << 20
"""Memory the kept resolvers may take (estimated from their snapshots), per worker."""
RESOLVER_BASE_BYTES = 256 << 10
"""Estimated memory of a resolver beyond its snapshot (memoized answers per name)."""
SPECS_MAX = 100
"""Specs per resolve request."""
SPEC_MAX_CHARS = 4096
RELEASE_MAX_CHARS = 16
MACHINE_MAX_CHARS = 64
DEFINITION_MAX_CHARS = 256 << 10
FEATURES_MAX = 512
"""Features per what-if list (QEMU knows about 400)."""
HOSTS_MAX = 10_000
"""Host names per what-if request and pools per host push."""
PAGE_DEFAULT = 100
PAGE_MAX = 1000
INLINE_SPECS = 8
"""A resolve request of at most this many specs is answered on the event loop when its resolver
is kept or its snapshot small (microseconds; under a millisecond); anything more runs in a worker
thread, so it never stalls other requests."""
INLINE_SNAPSHOT_BYTES = 16_384
"""A new snapshot up to this size (canonical JSON; a probe of every imported release is ~10 KB)
is read on the event loop: reading it costs about what the hop to a worker thread costs, and
the hop halved the throughput of new snapshots on two cores (benchmark g)."""
RETRY_AFTER_S = 5

Spec = Annotated[str, StringConstraints(min_length=1, max_length=SPEC_MAX_CHARS)]
Release = Annotated[str, StringConstraints(max_length=RELEASE_MAX_CHARS)]
Machine = Annotated[str, StringConstraints(max_length=MACHINE_MAX_CHARS)]
Name = Annotated[str, StringConstraints(max_length=NAME_MAX)]
Feature = Annotated[str, StringConstraints(max_length=64)]
NO_TOKEN = (
    "writes are disabled: the server has no token configured "
    "(start it with --token-file FILE or CPUVER_TOKEN set)"
)


class ResolveRequest(BaseModel):
    specs: list[Spec] = Field(
        min_length=1, max_length=SPECS_MAX, description="CPU specs, e.g. Haswell,version=best"
    )
    qemu: Release | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: Machine | None = Field(None, description="machine type (default: newest pc-q35)")
    accel: Accel | None = Field(None, description="default: the host's only one, else kvm/tcg")
    host: dict[str, Any] | None = Field(None, description="a host snapshot (cpuver host probe)")


class WhatIfRequest(BaseModel):
    drop: list[Feature] = Field(
        [], max_length=FEATURES_MAX, description='features the hosts lose, e.g. ["hle", "rtm"]'
    )
    add: list[Feature] = Field([], max_length=FEATURES_MAX, description="features the hosts gain")
    hosts: list[Name] | None = Field(
        None, max_length=HOSTS_MAX, description="only these hosts of the pool"
    )
    qemu: Release | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: Machine | None = Field(None, description="machine type (default: newest pc-q35)")
    accel: Accel = Field("kvm", description="accelerator (default: kvm)")

    @model_validator(mode="after")
    def _some_change(self) -> WhatIfRequest:
        if not self.drop and not self.add:
            raise ValueError("give features to drop and/or add")
        return self


class DefineGuestRequest(BaseModel):
    definition: str = Field(
        min_length=1,
        max_length=DEFINITION_MAX_CHARS,
        description='libvirt domain XML, or guest JSON/TOML: {"name", "machine", "cpu"}',
    )
    format: Literal["xml", "json", "toml"] | None = Field(
        None, description="how to read the definition (default: told from the text)"
    )
    pool: Name | None = Field(
        None, description="resolve version=best for every host of this pool (migration-safe)"
    )
    host: dict[str, Any] | None = Field(
        None, description="resolve version=best for this host snapshot (cpuver host probe)"
    )
    qemu: Release | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    machine: Machine | None = Field(None, description="machine type (default: the definition's)")
    accel: Accel | None = Field(None, description="default: the host's only one, else kvm/tcg")

    @model_validator(mode="after")
    def _one_target(self) -> DefineGuestRequest:
        if self.pool is not None and self.host is not None:
            raise ValueError("give pool or host for version=best, not both")
        return self


class UpdateCpuRequest(BaseModel):
    to: str = Field(min_length=1, max_length=64, description="best, latest or a version (v4)")
    pool: Name | None = Field(
        None, description="resolve version=best for every host of this pool (migration-safe)"
    )
    host: dict[str, Any] | None = Field(
        None, description="resolve version=best for this host snapshot (cpuver host probe)"
    )
    qemu: Release | None = Field(None, description="QEMU release X.Y (default: the newest bundled)")
    accept_signature_change: bool = Field(
        False, description="allow a change of vendor, family, model, stepping or model-id"
    )
    force: bool = Field(
        False, description="update even if the host, the pool or the stored hosts cannot run it"
    )
    dry_run: bool = Field(False, description="only show what would change")

    @model_validator(mode="after")
    def _one_target(self) -> UpdateCpuRequest:
        if self.pool is not None and self.host is not None:
            raise ValueError("give pool or host for version=best, not both")
        return self


HOST_NEEDED_HINT = ' (send a host snapshot as "host", or name a "pool" of stored hosts)'
"""How a request gives what a host offers, where the CLI says ``--host``."""


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
    if isinstance(err, StoreUnavailable):
        response = _error(503, _one_line(str(err)))
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    # a bad spec, given directly or inside a guest definition (then the error names where)
    bad_spec = err if isinstance(err, InvalidSpec) else err.__cause__
    if isinstance(bad_spec, InvalidSpec):
        where = f"{bad_spec.message} (at position {bad_spec.start} of {shown(bad_spec.text)})"
        message = _one_line(str(err).replace(str(bad_spec), where))
        text, _start, _end = bad_spec.excerpt()
        return _error(400, message, spec=text, position=bad_spec.start, end=bad_spec.end)
    if isinstance(err, NotRunnable):
        blockers = {name: list(missing) for name, missing in err.blockers.items()}
        message = f"no version of {err.spec!r} can run on {err.where}"
        return _error(409, message, blockers=blockers)
    if api.is_refusal(err):
        # the state says no (a host lacks a pinned feature, the guest changed meanwhile, a
        # name is taken ...): retrying may succeed, so it is a conflict, not a bad request
        return _error(409, _one_line(str(err)))
    if isinstance(err, HostNeeded):
        return _error(400, _one_line(str(err)) + HOST_NEEDED_HINT)
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
            problems.append(f"{shown(where, 80)[1:-1]}: {item.get('msg', 'invalid')}")
        if len(problems) == 5 and len(err.errors()) > 5:  # one line, however many
            problems.append(f"and {len(err.errors()) - 5} more")
            break
    return _error(422, "; ".join(problems) or "invalid request")


def _http_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    return _error(err.status_code, _one_line(str(err.detail)))


def _read_host(data: dict[str, Any] | None, source: str) -> HostCapabilities | None:
    return api.host_from_data(data, source) if data is not None else None


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


ResolverKey = tuple[str | None, str | None, str | None, _Snapshot | None]


def _resolver_size(key: ResolverKey) -> int:
    snapshot = key[3]
    return RESOLVER_BASE_BYTES + (4 * len(snapshot.key) if snapshot is not None else 0)


class _Resolvers:
    """The resolver for a resolve request, kept per snapshot: reading a probed host's snapshot
    and setting up a resolver cost more than resolving, and clients send the same few
    snapshots again and again. Only an identical snapshot hits. Bounded in (estimated) bytes:
    many big distinct snapshots evict each other instead of growing the worker."""

    def __init__(self, limit: int = RESOLVER_CACHE_BYTES) -> None:
        self._lock = threading.Lock()
        self._kept: LRUCache[ResolverKey, tuple[Resolver, int]] = LRUCache(
            maxsize=limit, getsizeof=lambda entry: entry[1]
        )

    def kept(self, key: ResolverKey) -> Resolver | None:
        with self._lock:
            found = self._kept.get(key)
        return found[0] if found is not None else None

    def make(self, key: ResolverKey) -> Resolver:
        qemu, machine, accel, snapshot = key
        host = _read_host(snapshot.data, "request host") if snapshot is not None else None
        resolver = _resolver(qemu, machine, accel, host)
        with self._lock:
            self._kept[key] = (resolver, _resolver_size(key))
        return resolver


_resolvers = _Resolvers()


def _page_headers(request: Request, items: Sequence[str], limit: int) -> dict[str, str]:
    """``Link: <...?after=LAST&limit=N>; rel="next"`` when the page is full (there may be more)."""
    if len(items) < limit or not items:
        return {}
    query = {key: value for key, value in request.query_params.items() if key != "after"}
    query.update(after=items[-1], limit=str(limit))
    return {"Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description=f"page size (at most {PAGE_MAX})")]
After = Annotated[
    str | None, Query(max_length=NAME_MAX, description="only names after this one (next page)")
]
ReleaseQuery = Annotated[
    str | None, Query(max_length=RELEASE_MAX_CHARS, description="QEMU release X.Y")
]
MachineQuery = Annotated[
    str | None, Query(max_length=MACHINE_MAX_CHARS, description="machine type")
]


def create_app(
    db_url: str | None, token: str | None, allowed_hosts: Sequence[str] | None = None
) -> FastAPI:
    """The service on the store at ``db_url`` (default: the SQLite file); ``token`` guards
    writes (None: every write is refused with 403); ``allowed_hosts`` are the names a request's
    ``Host`` header may give (None: not checked, for a proxy in front that checks it)."""
    app = FastAPI(
        title="cpuver",
        summary="Versioned QEMU x86 CPU models: resolve specs, hosts in pools, pinned guests",
        version="0.1.0",
        docs_url=None,  # served by cpuver.web.docs without a CDN
        redoc_url=None,
    )
    app.add_middleware(BodyLimit)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts)
    app.add_middleware(BrowserHeaders)
    app.add_middleware(GZipMiddleware, minimum_size=32_768, compresslevel=5)  # a pool heatmap
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
    add_docs(app)

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

    @app.get("/api/models", tags=["catalog"], response_model=list[dict[str, Any]])
    def models(
        request: Request,
        qemu: ReleaseQuery = None,
        machine: MachineQuery = None,
        accel: Accel | None = None,
        limit: Limit = PAGE_MAX,
        after: After = None,
    ) -> Response:
        """Every CPU model name, shaped like QEMU's ``query-cpu-definitions`` (paged by name)."""
        entries = api.definitions_json(_resolver(qemu, machine, accel, None))
        page = sorted(
            (e for e in entries if after is None or e["name"] > after), key=lambda e: e["name"]
        )[:limit]
        return _json(page, _page_headers(request, [e["name"] for e in page], limit))

    @app.post("/api/resolve", tags=["catalog"], response_model=list[dict[str, Any]])
    async def resolve(request: ResolveRequest) -> Response:
        """Each spec resolved to an exact definition, in the order given."""
        # answered as ready JSON; a small request with a kept resolver on the event loop
        # (microseconds: a worker thread would cost more than the work), anything bigger in a
        # worker thread, so no request stalls the others
        snapshot = _Snapshot(request.host) if request.host is not None else None
        key = (request.qemu, request.machine, request.accel, snapshot)
        resolver = _resolvers.kept(key)

        def answer(resolver: Resolver | None) -> bytes:
            chosen = resolver or _resolvers.make(key)
            catalog = chosen.catalog
            answer = [api.resolution_json(chosen.resolve(s), catalog) for s in request.specs]
            return orjson.dumps(answer)

        small = snapshot is None or len(snapshot.key) <= INLINE_SNAPSHOT_BYTES
        if (resolver is not None or small) and len(request.specs) <= INLINE_SPECS:
            return Response(answer(resolver), media_type="application/json")
        return Response(await run_in_threadpool(answer, resolver), media_type="application/json")

    @app.get("/api/hosts", tags=["fleet"], response_model=list[dict[str, Any]])
    def list_hosts(
        request: Request, pool: Name | None = None, limit: Limit = PAGE_DEFAULT, after: After = None
    ) -> Response:
        """Stored hosts (of ``pool``, when given) and their pools, by name (paged)."""
        page = [api.host_json(record) for record in hosts().list(pool, limit, after)]
        return _json(page, _page_headers(request, [h["host"] for h in page], limit))

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
        pool: Annotated[
            list[Name] | None, Query(max_length=HOSTS_MAX, description="pool(s) for the host")
        ] = None,
    ) -> dict[str, Any]:
        """Store a host snapshot (a known host is refreshed) in the pools of ``?pool=`` and of
        the body's ``pools`` field. Needs the bearer token."""
        data = dict(snapshot)
        extra = data.pop("pools", [])
        if not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
            raise CpuverError("pools: expected a list of pool names")
        if len(extra) > HOSTS_MAX:
            raise CpuverError(f"pools: at most {HOSTS_MAX} pools per host")
        host = api.host_from_data(data, "request body")
        record = api.add_host(hosts(), host, list(dict.fromkeys([*(pool or []), *extra])))
        return api.host_json(record)

    @app.get("/api/pools", tags=["fleet"], response_model=list[dict[str, Any]])
    def list_pools(request: Request, limit: Limit = PAGE_DEFAULT, after: After = None) -> Response:
        """Every pool with its hosts, by name (paged)."""
        page = [{"pool": p.name, "hosts": list(p.hosts)} for p in hosts().pools(limit, after)]
        return _json(page, _page_headers(request, [p["pool"] for p in page], limit))

    # SQLite answers the change counter from a local file in microseconds: a kept answer is
    # then sent from the event loop; a database server is asked from a worker thread
    local_store = db_url is None or db_url.startswith("sqlite")

    async def kept(
        pool: str,
        qemu: str | None,
        machine: str | None,
        accel: str,
        question: tuple[object, ...],
        answer: Callable[[Any], Any],
    ) -> Response:
        """A pool answer as ready JSON, kept in memory until the pool changes."""
        catalog = api.open_catalog(qemu)
        args = (hosts(), pool, catalog, accel, machine, question)
        body = api.fresh_answer(*args) if local_store else None
        if body is None:
            body = await run_in_threadpool(
                api.kept_answer, *args, lambda fleet: orjson.dumps(answer(fleet))
            )
        return Response(body, media_type="application/json")

    @app.get("/api/pools/{pool}/best", tags=["fleet"], response_model=dict[str, Any])
    async def pool_best(
        pool: str,
        spec: Annotated[str, Query(min_length=1, max_length=SPEC_MAX_CHARS)],
        qemu: ReleaseQuery = None,
        machine: MachineQuery = None,
        accel: Accel = "kvm",
    ) -> Response:
        """The newest version of the spec's model every host of the pool runs (as
        ``cpuver pool best --json``)."""
        return await kept(
            pool, qemu, machine, accel, ("best", spec),
            lambda fleet: api.pool_best_json(pool, api.pool_best(fleet, spec)),
        )  # fmt: skip

    @app.get("/api/pools/{pool}/matrix", tags=["fleet"], response_model=dict[str, Any])
    async def pool_matrix(
        pool: str, qemu: ReleaseQuery = None, machine: MachineQuery = None, accel: Accel = "kvm"
    ) -> Response:
        """Hosts x model versions: which runs where (as ``cpuver pool matrix --json``)."""
        return await kept(
            pool, qemu, machine, accel, ("matrix",),
            lambda fleet: {
                "pool": pool,
                "hosts": list(fleet.hosts),
                "versions": list(fleet.versions),
                "runs": [[bool(x) for x in row] for row in fleet.matrix().tolist()],
            },
        )  # fmt: skip

    @app.get("/api/pools/{pool}/baseline", tags=["fleet"], response_model=dict[str, Any])
    async def pool_baseline(
        pool: str, qemu: ReleaseQuery = None, machine: MachineQuery = None, accel: Accel = "kvm"
    ) -> Response:
        """Per model family, the newest version every host of the pool runs (as ``cpuver pool
        baseline --json``)."""
        return await kept(
            pool, qemu, machine, accel, ("baseline",),
            lambda fleet: {"pool": pool, "hosts": list(fleet.hosts), "best": fleet.baseline()},
        )  # fmt: skip

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

    @app.get("/api/guests", tags=["guests"], response_model=list[dict[str, Any]])
    def list_guests(request: Request, limit: Limit = PAGE_DEFAULT, after: After = None) -> Response:
        """Every stored guest with its pinned CPU, by name (paged)."""
        page = api.guest_rows(guests(), limit, after)
        return _json(page, _page_headers(request, [str(g["name"]) for g in page], limit))

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
    def guest_targets(name: str, pool: Name | None = None) -> dict[str, Any]:
        """Hosts (of ``pool``, when given) the guest's pinned CPU runs on, and what each other
        host lacks (as ``cpuver fleet targets --json``)."""
        guest, found = api.guest_targets(hosts(), guests(), name, pool)
        return api.targets_json(name, found, guest.pending.name if guest.pending else None)

    @app.post("/api/guests/{name}/update-cpu", tags=["guests"], dependencies=[Depends(writer)])
    def update_guest_cpu(name: str, request: UpdateCpuRequest) -> dict[str, Any]:
        """Move the guest's pin to another version of its model (as ``cpuver domain
        update-cpu``): at once when shut off, else pending until its next cold boot. A guest
        changed by someone else meanwhile, or with an update pending already, is 409. Needs the
        bearer token."""
        catalog = api.open_catalog(request.qemu)
        accel = api.get_guest(guests(), name).pin.accel
        host = best_for(request.host, request.pool, catalog, accel)
        run_on = api.update_hosts(hosts(), catalog, accel, host, request.pool)
        # a dry run shows the diff even when applying it would need accept_signature_change
        accept = request.accept_signature_change or request.dry_run
        guest, diff = api.update_guest_cpu(
            guests(), name, catalog, request.to, host, accept, request.dry_run, run_on,
            request.force,
        )  # fmt: skip
        return {
            "guest": guest.to_json(),
            "changes": diff.lines(),
            "applied": diff.applied,
            "pending": diff.pending,
            "identity_changed": diff.identity_changed,
            "dry_run": request.dry_run,
        }

    @app.post("/api/guests/{name}/cancel-update", tags=["guests"], dependencies=[Depends(writer)])
    def cancel_update(name: str) -> dict[str, Any]:
        """Drop the guest's pending CPU update (as ``cpuver domain update-cpu --cancel``): it
        keeps the CPU it has. No pending update is 409. Needs the bearer token."""
        return api.cancel_cpu_update(guests(), name).to_json()

    @app.delete(
        "/api/guests/{name}", status_code=204, tags=["guests"], dependencies=[Depends(writer)]
    )
    def undefine_guest(
        name: str,
        history: Annotated[
            Literal["keep", "delete"], Query(description="its CPU history (kept for audit)")
        ] = "keep",
    ) -> Response:
        """Undefine a shut-off or saved guest (as ``cpuver domain undefine``): the name is free
        again, its CPU history is kept unless ``history=delete``. A guest that runs is 409.
        Needs the bearer token."""
        api.undefine_guest(guests(), name, keep_history=history == "keep")
        return Response(status_code=204)

    @app.get("/api/guests/{name}/check", tags=["guests"])
    def check_step(
        name: str,
        action: Annotated[Literal["start", "migrate", "restore"], Query()],
        host: Annotated[Name, Query(description="a stored host")],
    ) -> dict[str, Any]:
        """Could the guest start on, migrate to or be restored on the stored ``host`` now?
        The checks of the step itself (a start runs a pending CPU update), and nothing is
        changed: ``allowed``, and why not (``reason``, the pinned features it lacks)."""
        return api.step_check_json(api.check_step(guests(), hosts(), name, action, host))

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """The process answers (for a liveness probe; the database is not asked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz() -> dict[str, str]:
        """The database answers too (for a readiness probe): else 503 with ``Retry-After``."""
        guests().count()
        return {"status": "ready"}

    return app
