"""The web dashboard: server-rendered HTML pages over the stores the REST routes use.

Pages only render what :mod:`cpuver.api` and :class:`cpuver.fleet.Fleet` answer, so the
dashboard, the REST routes and the CLI agree. There is no template engine and no front-end
framework: a page is a few f-strings (every stored or user-given value goes through :func:`_e`),
one CSS file and a little JavaScript (tooltips, the family filter) served from ``/static``.
Unknown names (pool, model, QEMU release ...) give a 404 page, other cpuver errors a 400 page.
Long lists are paged (``?limit=&after=``, a "Next page" link): the guests and a pool's heatmap
rows.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from cpuver import api
from cpuver.errors import CpuverError
from cpuver.names import NAME_MAX
from cpuver.store import StoreUnavailable

if TYPE_CHECKING:
    from cpuver.fleet import Fleet
    from cpuver.store import GuestStore, HostStore

STATIC_DIR = Path(__file__).with_name("static")
NAV = (("/", "Overview"), ("/models", "Models"), ("/guests", "Guests"))
MEMBERS_SHOWN = 8
"""Host names listed per pool on the overview (a pool of hundreds would drown the page)."""
FINGERPRINT_SHOWN = 12
GZIP_FROM_BYTES = 32_768
PAGE_DEFAULT = 100
PAGE_MAX = 1000
RETRY_AFTER_S = 5


def _e(value: object) -> str:
    """``value`` as HTML text or attribute value: everything from the store or the URL passes
    here, so a host called ``<script>`` stays text."""
    return escape(str(value), quote=True)


def _attrs(attrs: Mapping[str, object | None]) -> str:
    return "".join(f' {key}="{_e(value)}"' for key, value in attrs.items() if value is not None)


def _url(path: str, **query: str | None) -> str:
    """``path`` with the query parameters that are set (an empty form field means the default)."""
    given = {key: value for key, value in query.items() if value}
    return f"{path}?{urlencode(given)}" if given else path


def _segment(name: str) -> str:
    return quote(name, safe="")


def _page(title: str, body: str, current: str = "") -> str:
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if href == current else ""}>{label}</a>'
        for href, label in NAV
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · cpuver</title>"
        # No favicon request: a 404 for it would be the only console error of every page.
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        f'<body><header class="top"><a class="brand" href="/">cpuver</a><nav>{links}</nav>'
        f"</header><main>{body}</main></body></html>"
    )


def _rendered(
    request: Request, render: Callable[[], tuple[str, str]], current: str = ""
) -> Response:
    """The page ``render`` returns as (title, body); a cpuver error becomes an error page.

    A big page is gzipped when the browser takes it: the heatmap of a pool of 200 hosts is
    3 MB of HTML (every blocked cell names what its host lacks) and 0.2 MB compressed. Only
    the dashboard does this; the JSON routes stay as they are."""
    status = 200
    headers = {"Vary": "Accept-Encoding"}
    try:
        title, body = render()
    except CpuverError as err:
        status, title = (404, "Not found") if isinstance(err, LookupError) else (400, "Error")
        if isinstance(err, StoreUnavailable):
            status, title = 503, "Unavailable"
            headers["Retry-After"] = str(RETRY_AFTER_S)
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        body = (
            f'<h1>{title}</h1><p class="error" role="alert">{_e(message)}</p>'
            '<p><a href="/">Back to the overview</a></p>'
        )
    page = _page(title, body, current if status == 200 else "").encode()
    if len(page) >= GZIP_FROM_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        page = gzip.compress(page, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(page, status, headers, media_type="text/html; charset=utf-8")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _chips(names: Iterable[str], css: str, sign: str = "") -> str:
    """One chip per name; ``sign`` is HTML put before each (``+``, ``&minus;``)."""
    return "".join(f'<span class="chip {css}">{sign}{_e(name)}</span>' for name in names)


# -- overview -------------------------------------------------------------------------------------


def _overview(host_store: HostStore, guest_store: GuestStore, qemu: str | None) -> tuple[str, str]:
    catalog = api.open_catalog(qemu)
    pools = host_store.pools()
    host_count = host_store.count()
    guest_count = guest_store.count()
    stats = (
        ("#pools", len(pools), "pools"),
        ("#pools", host_count, "hosts"),
        ("/guests", guest_count, "guests"),
        (
            _url("/models", qemu=qemu),
            len(catalog.models),
            f"model families (QEMU {catalog.release})",
        ),
    )
    cards = "".join(
        f'<a class="stat" href="{_e(href)}" data-stat="{label.split()[0]}">'
        f'<span class="n">{count}</span>{_e(label)}</a>'
        for href, count, label in stats
    )
    rows = []
    for pool in pools:
        shown = ", ".join(pool.hosts[:MEMBERS_SHOWN])
        more = len(pool.hosts) - MEMBERS_SHOWN
        members = _e(shown) + (f' <span class="muted">and {more} more</span>' if more > 0 else "")
        rows.append(
            f'<tr data-pool="{_e(pool.name)}">'
            f'<td><a href="{_e(_url("/pools/" + _segment(pool.name), qemu=qemu))}">'
            f"{_e(pool.name)}</a></td>"
            f'<td class="num">{len(pool.hosts)}</td><td>{members}</td></tr>'
        )
    pool_table = (
        '<div class="table-wrap"><table class="list"><thead><tr><th>Pool</th>'
        '<th class="num">Hosts</th><th>Members</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else '<p class="empty">No pools yet: add hosts with '
        "<code>cpuver fleet add SNAPSHOT --pool NAME</code> or "
        "<code>cpuver host push URL --pool NAME</code>.</p>"
    )
    families = "".join(
        f'<a class="chip link" href="{_e(_url("/models/" + _segment(name), qemu=qemu))}">'
        f"{_e(name)}</a>"
        for name in catalog.models
    )
    body = (
        f'<h1>Overview</h1><section class="stats">{cards}</section>'
        f'<h2 id="pools">Pools</h2>{pool_table}'
        f'<h2>Model families</h2><div class="chips">{families}</div>'
    )
    return "Overview", body


# -- pool heatmap ---------------------------------------------------------------------------------


def _next_page(path: str, last: str | None, limit: int, **query: str | None) -> str:
    """A "Next page" link after ``last`` (None: this is the last page)."""
    if last is None:
        return ""
    href = _url(path, **query, after=last, limit=str(limit))
    return f'<p class="pager"><a rel="next" href="{_e(href)}">Next page</a></p>'


def _pool_page(
    host_store: HostStore,
    pool: str,
    qemu: str | None,
    machine: str | None,
    accel: str,
    page: tuple[int, str | None] = (PAGE_DEFAULT, None),
) -> tuple[str, str]:
    catalog = api.open_catalog(qemu)
    _generation, fleet = api.kept_pool_fleet(host_store, pool, catalog, accel, machine)
    families = fleet.models()
    best = fleet.baseline()
    form = _params_form(qemu, machine, fleet.accel)
    summary = (
        f'<p class="meta">{_count(len(fleet.hosts), "host")} · QEMU {_e(catalog.release)} · '
        f"machine {_e(fleet.machine)} · accelerator {_e(fleet.accel)}</p>"
    )
    body = (
        f"<h1>Pool {_e(pool)}</h1>{summary}{form}"
        '<input id="family-filter" class="filter" type="search" autocomplete="off" '
        'placeholder="Filter model families, e.g. haswell" aria-label="Filter model families">'
        f"{_best_list(families, best, qemu)}{_heatmap(fleet, families, best, qemu, page)}"
    )
    return f"Pool {pool}", body


def _params_form(qemu: str | None, machine: str | None, accel: str) -> str:
    options = "".join(
        f"<option{' selected' if name == accel else ''}>{name}</option>" for name in ("kvm", "tcg")
    )
    return (
        '<form class="params" method="get">'
        f'<label>QEMU <input name="qemu" value="{_e(qemu or "")}" placeholder="newest"></label>'
        f'<label>Machine <input name="machine" value="{_e(machine or "")}" '
        'placeholder="default"></label>'
        f'<label>Accelerator <select name="accel">{options}</select></label>'
        "<button>Show</button></form>"
    )


def _best_list(families: tuple[str, ...], best: Mapping[str, str | None], qemu: str | None) -> str:
    items = []
    for column, family in enumerate(families):
        answer = best[family]
        shown = (
            f"<b>{_e(answer)}</b>"
            if answer
            else '<span class="none" title="no version runs on every host">none</span>'
        )
        items.append(
            f'<li class="f{column}"{_attrs({"data-family": family, "data-best": answer or ""})}>'
            f'<a href="{_e(_url("/models/" + _segment(family), qemu=qemu))}">{_e(family)}</a>'
            f"{shown}</li>"
        )
    return (
        '<h2>Best version per family</h2><p class="hint">The newest version every host of the '
        "pool runs: a guest pinned to it can start on and migrate to any of them.</p>"
        f'<ul class="best-list">{"".join(items)}</ul>'
    )


def _heatmap(
    fleet: Fleet,
    families: tuple[str, ...],
    best: Mapping[str, str | None],
    qemu: str | None,
    page: tuple[int, str | None] = (PAGE_DEFAULT, None),
) -> str:
    """Hosts x versions (a page of hosts); columns grouped by family. Cells of family ``i``
    carry class ``f<i>``, so the filter hides a family with one CSS rule instead of touching
    every cell."""
    limit, after = page
    shown_hosts = sorted(h for h in fleet.hosts if after is None or h > after)
    more = shown_hosts[limit - 1] if len(shown_hosts) > limit else None
    shown_hosts = shown_hosts[:limit]
    row_of = {host: row for row, host in enumerate(fleet.hosts)}
    runs = fleet.matrix()
    column_of = {version: i for i, version in enumerate(fleet.versions)}
    family_row = ['<th class="corner" rowspan="2" scope="col">Host</th>']
    version_row = []
    columns: list[tuple[str, int]] = []
    for index, family in enumerate(families):
        versions = fleet.model_versions(family)
        href = _e(_url("/models/" + _segment(family), qemu=qemu))
        family_row.append(
            f'<th class="fam f{index}" colspan="{len(versions)}" scope="colgroup"'
            f"{_attrs({'data-family': family, 'data-col': f'f{index}'})}>"
            f'<a href="{href}">{_e(family)}</a></th>'
        )
        for version in versions:
            is_best = version == best[family]
            label = version.removeprefix(f"{family}-")
            title = f"{version} (best for the pool)" if is_best else version
            version_row.append(
                f'<th class="ver f{index}{" best" if is_best else ""}" scope="col"'
                f"{_attrs({'data-version': version, 'title': title})}>{_e(label)}</th>"
            )
            columns.append((version, index))
    rows = []
    for host in shown_hosts:
        row = row_of[host]
        cells = [f'<th class="host" scope="row">{_e(host)}</th>']
        for version, index in columns:
            where = {"data-host": host, "data-version": version}
            if runs[row, column_of[version]]:
                cells.append(
                    f'<td class="ok f{index}"{_attrs(where)} data-state="runs" data-missing="">'
                    "✓</td>"
                )
            else:
                # No title: the tooltip script builds it from these attributes, which keeps a
                # pool of hundreds of hosts from sending every missing feature twice.
                lacks = fleet.missing(host, version)
                cells.append(
                    f'<td class="no f{index}"{_attrs(where)} data-state="blocked"'
                    f' data-missing="{_e(" ".join(lacks))}">{len(lacks)}</td>'
                )
        rows.append(f'<tr data-host="{_e(host)}">{"".join(cells)}</tr>')
    legend = (
        '<p class="legend"><span class="swatch ok">✓</span> runs '
        '<span class="swatch no">2</span> blocked (number of features the host lacks; hover for '
        'them) <span class="swatch best-mark">v4</span> best for the pool</p>'
    )
    body = "".join(rows) or f'<tr><td colspan="{len(columns) + 1}">No hosts.</td></tr>'
    return (
        f'<h2>Hosts &times; versions</h2>{legend}<div class="table-wrap heatmap-wrap">'
        f'<table class="heatmap" id="heatmap"><thead><tr>{"".join(family_row)}</tr>'
        f"<tr>{''.join(version_row)}</tr></thead><tbody>{body}</tbody></table></div>"
        f"{_next_page('', more, limit, qemu=qemu)}"
    )


# -- models ---------------------------------------------------------------------------------------


def _models_page(qemu: str | None) -> tuple[str, str]:
    catalog = api.open_catalog(qemu)
    rows = []
    for index, model in enumerate(catalog.models.values()):
        href = _url("/models/" + _segment(model.name), qemu=qemu)
        versions = "".join(
            f'<a class="chip link" href="{_e(href)}#{_e(v.name)}">{_e(v.name)}</a>'
            for v in model.versions
        )
        deprecated = ' <span class="badge warn">deprecated</span>' if model.deprecated else ""
        rows.append(
            f'<tr class="f{index}"{_attrs({"data-family": model.name, "data-col": f"f{index}"})}>'
            f'<td><a href="{_e(href)}">{_e(model.name)}</a>{deprecated}</td>'
            f'<td class="num">{len(model.versions)}</td>'
            f'<td><div class="chips">{versions}</div></td></tr>'
        )
    body = (
        f'<h1>Model families</h1><p class="meta">QEMU {_e(catalog.release)} · '
        f"{len(catalog.models)} families</p>"
        '<input id="family-filter" class="filter" type="search" autocomplete="off" '
        'placeholder="Filter model families, e.g. epyc" aria-label="Filter model families">'
        '<div class="table-wrap"><table class="list"><thead><tr><th>Family</th>'
        '<th class="num">Versions</th><th>Versioned names</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    return "Models", body


def _model_page(name: str, qemu: str | None) -> tuple[str, str]:
    catalog = api.open_catalog(qemu)
    model = catalog.model(name)
    items = "".join(_timeline_item(row) for row in api.history(catalog, model.name))
    revisions = api.revisions(catalog, model.name)
    before = ""
    if revisions:
        lines = "".join(
            f"<li>up to <code>{_e(machine)}</code>, then {_e(change)}</li>"
            for machine, change in revisions
        )
        before = (
            "<h2>Before versions</h2><p class=hint>What the bare name meant under older machine "
            f"types (changed after each one listed):</p><ul class=revisions>{lines}</ul>"
        )
    deprecated = ' <span class="badge warn">deprecated</span>' if model.deprecated else ""
    body = (
        f'<p class="crumbs"><a href="{_e(_url("/models", qemu=qemu))}">Models</a> /</p>'
        f"<h1>{_e(model.name)}{deprecated}</h1>"
        f'<p class="meta">{_count(len(model.versions), "version")} · catalog of '
        f"{_e(catalog.build)}</p>"
        f'<ol class="timeline">{items}</ol>{before}'
    )
    return model.name, body


def _timeline_item(row: Mapping[str, Any]) -> str:
    """One row of :func:`cpuver.api.history`: the first version with all its features, later
    ones with what changed."""
    version, aliases = row["version"], row["aliases"]
    heading = f"<h3>{_e(version)}"
    if aliases:
        heading += f' <span class="muted">alias {_e(", ".join(aliases))}</span>'
    heading += "</h3>"
    since = f"QEMU {row['since']}" if row["since"] else "release unknown"
    note = f'<p class="note">{_e(row["note"])}</p>' if row["note"] else ""
    if "features" in row:
        changes = (
            f"<details><summary>{len(row['features'])} features</summary>"
            f'<div class="chips">{_chips(row["features"], "")}</div></details>'
        )
    else:
        changes = _chips(row["added"], "add", "+") + _chips(row["removed"], "del", "&minus;")
        changes += "".join(
            f'<span class="chip sig">{_e(key)} = {_e(api.signature_text(key, value))}</span>'
            for key, value in row["signature"].items()
        )
        changes = changes or '<span class="muted">no guest-visible change</span>'
        changes = f'<div class="chips">{changes}</div>'
    return (
        f'<li class="version" id="{_e(version)}" data-version="{_e(version)}">'
        f'<div class="since">{_e(since)}</div><div class="what">{heading}{note}{changes}</div></li>'
    )


# -- guests ---------------------------------------------------------------------------------------


def _guests_page(
    host_store: HostStore,
    guest_store: GuestStore,
    limit: int = PAGE_DEFAULT,
    after: str | None = None,
) -> tuple[str, str]:
    rows = []
    listed = api.every_guest_targets(host_store, guest_store, limit=limit, after=after)
    last = listed[-1][0].name if len(listed) == limit else None
    for guest, found in listed:
        pin = guest.pin
        targets = _targets(guest.name, found)
        pending = _e(guest.pending.name) if guest.pending else '<span class="muted">—</span>'
        model_href = _e("/models/" + _segment(pin.model) + "#" + pin.version)
        rows.append(
            f'<tr data-guest="{_e(guest.name)}">'
            f"<td><b>{_e(guest.name)}</b></td>"
            f'<td><span class="badge state-{_e(guest.state)}">{_e(guest.state)}</span></td>'
            f"<td>{_e(guest.host) if guest.host else '<span class=muted>—</span>'}</td>"
            f'<td data-cpu="{_e(pin.name)}"><a href="{model_href}">{_e(pin.name)}</a></td>'
            f"<td>{_e(pin.machine)}</td><td>{_e(pin.accel)}</td>"
            f'<td><code title="{_e(pin.fingerprint)}">{_e(pin.fingerprint[:FINGERPRINT_SHOWN])}'
            f"</code></td><td>{pending}</td><td>{targets}</td></tr>"
        )
    table = (
        '<div class="table-wrap"><table class="list"><thead><tr><th>Guest</th><th>State</th>'
        "<th>Host</th><th>Pinned CPU</th><th>Machine</th><th>Accel</th><th>Fingerprint</th>"
        "<th>Pending update</th><th>Migration targets</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else '<p class="empty">No guests yet: define one with '
        "<code>cpuver domain define GUEST.json</code>.</p>"
    )
    total = guest_store.count()
    counted = _count(total, "guest") + (f" (showing {len(rows)})" if len(rows) < total else "")
    body = (
        f'<h1>Guests</h1><p class="meta">{counted} · a migration target is a '
        "stored host offering every pinned feature (hover a struck-out host for what it lacks)</p>"
        f"{table}{_next_page('/guests', last, limit)}"
    )
    return "Guests", body


def _targets(guest: str, hosts: list[tuple[str, tuple[str, ...]]]) -> str:
    if not hosts:
        return '<span class="muted">no hosts stored</span>'
    chips = []
    for host, missing in hosts:
        where = {"data-guest": guest, "data-host": host, "data-missing": " ".join(missing)}
        if missing:
            where["title"] = f"{guest} cannot run on {host}\nlacks: {' '.join(missing)}"
        state = "blocked" if missing else "target"
        chips.append(
            f'<span class="chip {state}" data-state="{state}"{_attrs(where)}>{_e(host)}</span>'
        )
    return f'<div class="chips">{"".join(chips)}</div>'


# -- routes ---------------------------------------------------------------------------------------


def add_dashboard(
    app: FastAPI, hosts: Callable[[], HostStore], guests: Callable[[], GuestStore]
) -> None:
    """Serve the dashboard pages (kept out of the OpenAPI schema: they are for people) and their
    static files from ``app``; ``hosts`` and ``guests`` open the app's stores on first use."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request, qemu: str | None = None) -> Response:
        return _rendered(request, lambda: _overview(hosts(), guests(), qemu or None), "/")

    @app.get("/pools/{pool}", response_class=HTMLResponse, include_in_schema=False)
    def pool_page(
        request: Request,
        pool: str,
        qemu: Annotated[str | None, Query(max_length=16)] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
        accel: Annotated[str, Query(max_length=8)] = "kvm",
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
        after: Annotated[str | None, Query(max_length=NAME_MAX)] = None,
    ) -> Response:
        return _rendered(
            request,
            lambda: _pool_page(
                hosts(), pool, qemu or None, machine or None, accel or "kvm", (limit, after)
            ),
        )

    @app.get("/models", response_class=HTMLResponse, include_in_schema=False)
    def models_page(request: Request, qemu: str | None = None) -> Response:
        return _rendered(request, lambda: _models_page(qemu or None), "/models")

    @app.get("/models/{name}", response_class=HTMLResponse, include_in_schema=False)
    def model_page(request: Request, name: str, qemu: str | None = None) -> Response:
        return _rendered(request, lambda: _model_page(name, qemu or None), "/models")

    @app.get("/guests", response_class=HTMLResponse, include_in_schema=False)
    def guests_page(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
        after: Annotated[str | None, Query(max_length=NAME_MAX)] = None,
    ) -> Response:
        return _rendered(request, lambda: _guests_page(hosts(), guests(), limit, after), "/guests")
