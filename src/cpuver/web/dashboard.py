"""The web dashboard: server-rendered HTML pages over what :mod:`cpuver.api` answers.

Pages only show what the api's use cases (and the :class:`cpuver.fleet.Fleet` of a pool) answer,
so the dashboard, the REST routes and the CLI agree. Each page is a Jinja2 template
(``templates/``, autoescaped: every value from the store, a snapshot or the URL is escaped)
rendered with FastAPI's :class:`~fastapi.templating.Jinja2Templates`, from a context this module
builds; one CSS file and a little JavaScript (tooltips, the family filter and toggle) come from
``/static``, and nothing is inline, so the pages keep to ``default-src 'self'``. Big pages are
compressed by the app's GZip middleware.

An unknown pool, host, guest or model is a 404 page suggesting the nearest names
(:func:`cpuver.api.similar_names`), other cpuver errors a 400 page, a database that cannot be
used right now a 503 page. Long lists are paged (``?limit=&after=``, a "Next page" link): the
guests, a pool's heatmap rows, a guest's hosts and a host's snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.staticfiles import StaticFiles

from cpuver import api
from cpuver.errors import CpuverError, UnknownModel, UnknownName, UnknownVersion
from cpuver.names import NAME_MAX
from cpuver.store import GuestNotFound, HostNotFound, PoolNotFound, StoreUnavailable

if TYPE_CHECKING:
    from cpuver.api.suggestions import Kind
    from cpuver.domain.lifecycle import Guest
    from cpuver.host.capabilities import HostCapabilities
    from cpuver.store import GuestStore, HostStore

STATIC_DIR = Path(__file__).with_name("static")
TEMPLATES_DIR = Path(__file__).with_name("templates")
NAV = (("/", "Overview"), ("/models", "Models"), ("/guests", "Guests"))
MEMBERS_SHOWN = 8
"""Host names listed per pool on the overview (a pool of hundreds would drown the page)."""
FINGERPRINT_SHOWN = 12
TARGETS_SHOWN = 24
"""Hosts listed in a guest's row when opened (all of them on the guest's page)."""
PAGE_DEFAULT = 100
PAGE_MAX = 1000
SNAPSHOTS_PAGE = 20
"""Snapshots per page of a host (each is compared with the one before it)."""
RETRY_AFTER_S = 5

Context = dict[str, Any]
T = TypeVar("T")


def _url(path: str, **query: str | None) -> str:
    """``path`` with the query parameters that are set (an empty form field means the default)."""
    given = {key: value for key, value in query.items() if value}
    return f"{path}?{urlencode(given)}" if given else path


def _segment(name: str) -> str:
    """``name`` as one path segment."""
    return quote(name, safe="")


templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
)
templates.env.globals.update(url=_url, nav=NAV)
templates.env.filters["segment"] = _segment

_NOT_FOUND: tuple[tuple[type[CpuverError], Kind, str], ...] = (
    (PoolNotFound, "pool", "/pools/"),
    (HostNotFound, "host", "/hosts/"),
    (GuestNotFound, "guest", "/guests/"),
    (UnknownModel, "model", "/models/"),
    (UnknownVersion, "model", "/models/"),
)
"""The errors of a name that does not exist, which kind of name it is and where its page is."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _paged(
    items: Sequence[T], key: Callable[[T], str], limit: int, after: str | None
) -> tuple[list[T], str | None]:
    """The items after ``after`` (by ``key``; items are sorted by it), at most ``limit``, and the
    key of the last one when more follow (None: this is the last page)."""
    left = [item for item in items if after is None or key(item) > after]
    more = key(left[limit - 1]) if len(left) > limit else None
    return left[:limit], more


def _next_href(path: str, last: str | None, limit: int, **query: str | None) -> str | None:
    """The "Next page" link after ``last`` (None: there is no next page)."""
    return None if last is None else _url(path, **query, after=last, limit=str(limit))


# -- overview -------------------------------------------------------------------------------------


def _overview(host_store: HostStore, guest_store: GuestStore, qemu: str | None) -> Context:
    catalog = api.open_catalog(qemu)
    pools = host_store.pools()
    stats = (
        ("#pools", len(pools), "pools", "pools"),
        ("#pools", host_store.count(), "hosts", "hosts"),
        ("/guests", guest_store.count(), "guests", "guests"),
        (
            _url("/models", qemu=qemu),
            len(catalog.models),
            f"model families (QEMU {catalog.release})",
            "model",
        ),
    )
    return {
        "title": "Overview",
        "qemu": qemu,
        "stats": stats,
        "pools": pools,
        "members_shown": MEMBERS_SHOWN,
        "families": list(catalog.models),
    }


# -- pool heatmap ---------------------------------------------------------------------------------


def _pool_page(
    host_store: HostStore,
    pool: str,
    qemu: str | None,
    machine: str | None,
    accel: str,
    limit: int = PAGE_DEFAULT,
    after: str | None = None,
) -> Context:
    """Hosts x versions (a page of hosts), columns grouped by family. Every element of family
    ``i`` (its best-list item, headers and cells) has class ``f<i>``, so the filter and the
    toggle hide a family with one CSS rule instead of touching every cell."""
    catalog = api.open_catalog(qemu)
    _generation, fleet = api.kept_pool_fleet(host_store, pool, catalog, accel, machine)
    best = fleet.baseline()
    runs = fleet.matrix()
    column_of = {version: i for i, version in enumerate(fleet.versions)}
    families: list[Context] = []
    for index, family in enumerate(fleet.models()):
        versions = fleet.model_versions(family)
        own = [column_of[v] for v in versions]
        families.append(
            {
                "index": index,
                "name": family,
                "best": best[family],
                "runs": bool(runs[:, own].any()),
                "versions": [
                    (v, v.removeprefix(f"{family}-"), v == best[family]) for v in versions
                ],
            }
        )
    row_of = {host: row for row, host in enumerate(fleet.hosts)}
    shown, last = _paged(sorted(fleet.hosts), str, limit, after)
    columns: list[tuple[int, str, int]] = [
        (f["index"], v, column_of[v]) for f in families for v, _label, _best in f["versions"]
    ]
    rows = []
    for host in shown:
        usable = runs[row_of[host]]
        cells = []
        for family_index, version, column in columns:
            # A cell is (family index, version, what the host lacks as text or None, how much):
            # the pool's biggest page has tens of thousands, so the template only prints them.
            lacks = () if usable[column] else fleet.missing(host, version)
            text = " ".join(lacks) if lacks else None
            cells.append((family_index, version, text, len(lacks)))
        rows.append((host, cells))
    return {
        "title": f"Pool {pool}",
        "pool": pool,
        "qemu": qemu,
        "machine_asked": machine,
        "machine": fleet.machine,
        "accel": fleet.accel,
        "release": catalog.release,
        "hosts_counted": _count(len(fleet.hosts), "host"),
        "families": families,
        "idle": sum(not f["runs"] for f in families),
        "columns": len(fleet.versions),
        "rows": rows,
        "next_href": _next_href("", last, limit, qemu=qemu, machine=machine, accel=accel),
    }


# -- models ---------------------------------------------------------------------------------------


def _models_page(qemu: str | None) -> Context:
    catalog = api.open_catalog(qemu)
    return {
        "title": "Models",
        "qemu": qemu,
        "release": catalog.release,
        "models": list(catalog.models.values()),
    }


def _model_page(name: str, qemu: str | None) -> Context:
    catalog = api.open_catalog(qemu)
    model = catalog.model(name)
    timeline = []
    for row in api.history(catalog, model.name):
        if "signature" in row:
            shown = [(k, api.signature_text(k, v)) for k, v in row["signature"].items()]
            row = {**row, "signature": shown}
        timeline.append(row)
    return {
        "title": model.name,
        "qemu": qemu,
        "model": model,
        "versions_counted": _count(len(model.versions), "version"),
        "build": catalog.build,
        "timeline": timeline,
        "revisions": api.revisions(catalog, model.name),
    }


# -- guests ---------------------------------------------------------------------------------------


def _target_row(guest: Guest, found: api.Targets, shown: int = TARGETS_SHOWN) -> Context:
    """A guest with its hosts split into targets and blocked ones, and the counts; the first
    ``shown`` hosts are listed, blocked ones first (the exceptions are what an operator looks
    for)."""
    targets = [host for host, missing in found if not missing]
    blocked = [(host, missing) for host, missing in found if missing]
    listed_blocked = blocked[:shown]
    listed_targets = targets[: shown - len(listed_blocked)]
    return {
        "guest": guest,
        "targets": listed_targets,
        "blocked": listed_blocked,
        "target_count": len(targets),
        "blocked_count": len(blocked),
        "more": len(found) - len(listed_targets) - len(listed_blocked),
    }


def _guests_page(
    host_store: HostStore,
    guest_store: GuestStore,
    limit: int = PAGE_DEFAULT,
    after: str | None = None,
) -> Context:
    listed = api.every_guest_targets(host_store, guest_store, limit=limit, after=after)
    last = listed[-1][0].name if len(listed) == limit else None
    total = guest_store.count()
    counted = _count(total, "guest") + (f" (showing {len(listed)})" if len(listed) < total else "")
    return {
        "title": "Guests",
        "counted": counted,
        "rows": [_target_row(guest, found) for guest, found in listed],
        "fingerprint_shown": FINGERPRINT_SHOWN,
        "next_href": _next_href("/guests", last, limit),
    }


def _guest_page(
    host_store: HostStore,
    guest_store: GuestStore,
    name: str,
    limit: int = PAGE_DEFAULT,
    after: str | None = None,
) -> Context:
    guest, found = api.guest_targets(host_store, guest_store, name)
    shown, last = _paged(found, lambda target: target[0], limit, after)
    pin, pending = guest.pin, guest.pending
    blocked = sum(1 for _host, missing in found if missing)
    return {
        "title": f"Guest {guest.name}",
        "guest": guest,
        "signature": [(k, api.signature_text(k, v)) for k, v in pin.signature.as_dict().items()],
        "pending_added": sorted(pending.on - pin.on) if pending else [],
        "pending_removed": sorted(pin.on - pending.on) if pending else [],
        "history": api.guest_history(guest_store, guest.name),
        "targets": shown,
        "target_count": len(found) - blocked,
        "blocked_count": blocked,
        "targets_counted": (
            f"{len(found) - blocked} of {_count(len(found), 'stored host')} run the pin"
            + (" and its pending update" if pending else "")
            + (f"; {blocked} cannot" if blocked else "")
        ),
        "blocked_groups": _by_what_they_lack(found),
        "fingerprint_shown": FINGERPRINT_SHOWN,
        "next_href": _next_href(f"/guests/{_segment(guest.name)}", last, limit),
    }


def _by_what_they_lack(found: api.Targets) -> list[tuple[tuple[str, ...], list[str], int]]:
    """The blocked hosts grouped by the features they lack (most hosts first): each group's
    features, its first hosts and how many more it has."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for host, missing in found:
        if missing:
            groups.setdefault(missing, []).append(host)
    ordered = sorted(groups.items(), key=lambda group: (-len(group[1]), group[0]))
    return [
        (missing, hosts[:MEMBERS_SHOWN], len(hosts) - MEMBERS_SHOWN) for missing, hosts in ordered
    ]


# -- hosts ----------------------------------------------------------------------------------------


def _offers(snapshot: HostCapabilities) -> list[tuple[str | None, str, str]]:
    """(release, accelerator, how it was found) of every offer of a snapshot."""
    if snapshot.releases:
        return [
            (release, accel, offer.method + (" (approximate)" if offer.approximate else ""))
            for release, accels in snapshot.releases.items()
            for accel, offer in sorted(accels.items())
        ]
    method = snapshot.provenance.get("method", "")
    return [(None, accel, method) for accel in sorted(snapshot.offers)]


def _summary(snapshot: HostCapabilities) -> str:
    """A snapshot in one line: CPU, microcode, kernel, what was probed."""
    facts = snapshot.facts
    parts = (
        [facts.brand or facts.vendor, f"microcode {facts.microcode or '?'}", facts.kernel or ""]
        if facts
        else [snapshot.vendor or "vendor unknown"]
    )
    probed = ", ".join(f"{r + ' ' if r else ''}{a}" for r, a, _how in _offers(snapshot))
    return " · ".join([p for p in parts if p] + [probed])


def _changes(before: HostCapabilities, after: HostCapabilities) -> list[tuple[str, str, Any]]:
    """What changed from one snapshot to the next, as (kind, sentence, version chips) lines."""
    diff, usability = api.host_diff(before, after)
    lines: list[tuple[str, str, Any]] = [("fact", str(change), ()) for change in diff.facts]
    lines += [("vulnerability", str(change), ()) for change in diff.vulnerabilities]
    for accel in diff.accels:
        where = f"{accel.accel}" + (f" (QEMU {accel.release})" if accel.release else "")
        lines += [("offer", f"{where}: {change}", ()) for change in accel.changes]
    for change in usability:
        where = f"{change.accel}" + (f" (QEMU {change.release})" if change.release else "")
        if change.unusable:
            lines.append(("unusable", f"{where}: no longer runs", change.unusable))
        if change.usable:
            lines.append(("usable", f"{where}: now runs", [(v, ()) for v in change.usable]))
    return lines


def _host_page(
    host_store: HostStore,
    name: str,
    qemu: str | None,
    machine: str | None,
    accel: str | None,
    limit: int = SNAPSHOTS_PAGE,
    after: str | None = None,
) -> Context:
    record = host_store.get(name)
    snapshots = api.host_snapshots(host_store, name)
    current = snapshots[-1][1] if snapshots else api.stored_host(record)
    catalog = api.open_catalog(qemu)
    accel = accel or ("kvm" if "kvm" in current.offers else "tcg")
    runs = api.host_versions(current, catalog, accel, machine)
    families = [
        {
            "family": f.family,
            "runs": any(not missing for _v, missing in f.versions),
            "versions": [(v, v.removeprefix(f"{f.family}-"), m) for v, m in f.versions],
        }
        for f in runs
    ]
    # Snapshots are numbered from 1 (the first) and listed newest first: a page ends at a
    # number (``after``), the next one starts below it.
    newest = min(len(snapshots), int(after) - 1) if after and after.isdigit() else len(snapshots)
    shown = range(newest, max(newest - limit, 0), -1)
    history = []
    for number in shown:
        at, snapshot = snapshots[number - 1]
        entry: Context = {"number": number, "at": at, "summary": _summary(snapshot)}
        entry["changes"], entry["problem"] = [], None
        if number > 1:
            try:
                entry["changes"] = _changes(snapshots[number - 2][1], snapshot)
            except CpuverError as err:  # two snapshots without a release or accelerator in common
                entry["problem"] = str(err)
        history.append(entry)
    runnable = sum(1 for f in runs for _v, missing in f.versions if not missing)
    versions = sum(len(f.versions) for f in runs)
    last = str(shown[-1]) if shown and shown[-1] > 1 else None
    return {
        "title": f"Host {name}",
        "name": name,
        "qemu": qemu,
        "machine_asked": machine,
        "machine": catalog.machine(machine).name,
        "accel": accel,
        "release": catalog.release,
        "pools": record.pools,
        "added": record.added,
        "updated": record.updated,
        "snapshot": current,
        "offers": _offers(current),
        "snapshots_counted": _count(len(snapshots), "snapshot"),
        "runs_counted": f"runs {runnable} of {versions} versions",
        "families": families,
        "idle": sum(not f["runs"] for f in families),
        "history": history,
        "next_href": _next_href(
            f"/hosts/{_segment(name)}", last, limit, qemu=qemu, machine=machine, accel=accel
        ),
    }


# -- errors ---------------------------------------------------------------------------------------


def _error_page(
    request: Request,
    err: CpuverError,
    hosts: Callable[[], HostStore],
    guests: Callable[[], GuestStore],
    qemu: str | None,
) -> Response:
    """A 404 page for a name that does not exist (with the nearest names), 503 for a database
    that cannot be used now, 400 for any other cpuver error."""
    status, title = (404, "Not found") if isinstance(err, LookupError) else (400, "Error")
    headers = {}
    if isinstance(err, StoreUnavailable):
        status, title = 503, "Unavailable"
        headers["Retry-After"] = str(RETRY_AFTER_S)
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    suggested = _suggestions(err, hosts, guests, qemu)
    if suggested and isinstance(err, UnknownName):  # the page's links say it instead
        message = message.split(" (did you mean ", 1)[0]
    context = {"title": title, "current": "", "message": message, "suggestions": suggested}
    return templates.TemplateResponse(
        request, "error.html", context, status_code=status, headers=headers
    )


def _suggestions(
    err: CpuverError,
    hosts: Callable[[], HostStore],
    guests: Callable[[], GuestStore],
    qemu: str | None,
) -> list[tuple[str, str]]:
    """(name, link) of the names nearest to the one ``err`` did not find."""
    for error, kind, prefix in _NOT_FOUND:
        name = getattr(err, "name", None)
        if not isinstance(err, error) or not isinstance(name, str):
            continue
        try:
            found = api.similar_names(
                kind,
                name,
                hosts() if kind in ("pool", "host") else None,
                guests() if kind == "guest" else None,
                api.open_catalog(qemu) if kind == "model" else None,
            )
        except CpuverError:  # no suggestions is better than a second error
            return []
        return [(match, prefix + _segment(match)) for match in found if match != name]
    return []


# -- routes ---------------------------------------------------------------------------------------


Limit = Annotated[int, Query(ge=1, le=PAGE_MAX)]
After = Annotated[str | None, Query(max_length=NAME_MAX)]
Release = Annotated[str | None, Query(max_length=16)]
Machine = Annotated[str | None, Query(max_length=64)]
Accel = Annotated[str | None, Query(max_length=8)]


def add_dashboard(
    app: FastAPI, hosts: Callable[[], HostStore], guests: Callable[[], GuestStore]
) -> None:
    """Serve the dashboard pages (kept out of the OpenAPI schema: they are for people) and their
    static files from ``app``; ``hosts`` and ``guests`` open the app's stores on first use."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def show(
        request: Request,
        template: str,
        build: Callable[[], Context],
        current: str = "",
        qemu: str | None = None,
    ) -> Response:
        try:
            context = {"current": current, **build()}
        except CpuverError as err:
            return _error_page(request, err, hosts, guests, qemu)
        return templates.TemplateResponse(request, template, context)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request, qemu: Release = None) -> Response:
        qemu = qemu or None
        return show(request, "overview.html", lambda: _overview(hosts(), guests(), qemu), "/")

    @app.get("/pools/{pool}", response_class=HTMLResponse, include_in_schema=False)
    def pool_page(
        request: Request,
        pool: str,
        qemu: Release = None,
        machine: Machine = None,
        accel: Accel = None,
        limit: Limit = PAGE_DEFAULT,
        after: After = None,
    ) -> Response:
        def build() -> Context:
            return _pool_page(
                hosts(), pool, qemu or None, machine or None, accel or "kvm", limit, after
            )

        return show(request, "pool.html", build, qemu=qemu or None)

    @app.get("/hosts/{name}", response_class=HTMLResponse, include_in_schema=False)
    def host_page(
        request: Request,
        name: str,
        qemu: Release = None,
        machine: Machine = None,
        accel: Accel = None,
        limit: Limit = SNAPSHOTS_PAGE,
        after: After = None,
    ) -> Response:
        def build() -> Context:
            return _host_page(
                hosts(), name, qemu or None, machine or None, accel or None, limit, after
            )

        return show(request, "host.html", build, qemu=qemu or None)

    @app.get("/models", response_class=HTMLResponse, include_in_schema=False)
    def models_page(request: Request, qemu: Release = None) -> Response:
        return show(request, "models.html", lambda: _models_page(qemu or None), "/models")

    @app.get("/models/{name}", response_class=HTMLResponse, include_in_schema=False)
    def model_page(request: Request, name: str, qemu: Release = None) -> Response:
        build = partial(_model_page, name, qemu or None)
        return show(request, "model.html", build, "/models", qemu or None)

    @app.get("/guests", response_class=HTMLResponse, include_in_schema=False)
    def guests_page(request: Request, limit: Limit = PAGE_DEFAULT, after: After = None) -> Response:
        return show(
            request, "guests.html", lambda: _guests_page(hosts(), guests(), limit, after), "/guests"
        )

    @app.get("/guests/{name}", response_class=HTMLResponse, include_in_schema=False)
    def guest_page(
        request: Request, name: str, limit: Limit = PAGE_DEFAULT, after: After = None
    ) -> Response:
        def build() -> Context:
            return _guest_page(hosts(), guests(), name, limit, after)

        return show(request, "guest.html", build, "/guests")
