"""Names close to a misspelt one (a pool, host, guest or model that does not exist), for pages
and messages that suggest what was meant: one rule, :func:`cpuver.names.closest`, for all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from cpuver.catalog import Catalog, NameKind
from cpuver.names import closest

if TYPE_CHECKING:
    from cpuver.store import GuestStore, HostStore

SUGGEST_AROUND = 500
"""Stored names compared on each side of the misspelt one in sort order: a store of up to twice
as many names is searched whole, a bigger one (100,000 guests) around the name, so a suggestion
costs two small indexed reads and at most a thousand comparisons, never a scan of every name."""

Kind = Literal["pool", "host", "guest", "model"]


def similar_names(
    kind: Kind,
    name: str,
    hosts: HostStore | None = None,
    guests: GuestStore | None = None,
    catalog: Catalog | None = None,
) -> list[str]:
    """The names of ``kind`` most like ``name``, best first (none close enough: empty): stored
    pools and hosts from ``hosts``, guests from ``guests``, model names (families and alias
    names, as the catalog suggests them) from ``catalog``."""
    known: list[str]
    if kind == "model":
        assert catalog is not None
        known = [ref.name for ref in catalog.names() if ref.kind is not NameKind.VERSIONED]
    elif kind == "guest":
        assert guests is not None
        known = guests.names_near(name, SUGGEST_AROUND)
    else:
        assert hosts is not None
        known = hosts.names_near(kind, name, SUGGEST_AROUND)
    return closest(name, known)
