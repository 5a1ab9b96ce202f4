"""The one rule for the names of guests, hosts and pools, and how to show user text in errors.

A name is 1 to 128 ASCII characters: letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or a digit. So a name is never a path (no ``/``, never ``.`` or ``..``), never reaches a
terminal with control characters, fits every database column it is stored in, and is the same on
SQLite and PostgreSQL (neither sees a NUL). Host names as hosts report them (``hv1``,
``hv1.rack3.example.com``) and libvirt-style guest names (``web-01``) fit.

Every entry checks names with :func:`check_name` (CLI arguments, REST paths, bodies and queries,
domain XML, guest JSON/TOML, host snapshots, saved guests), and the store checks again before it
writes, so no file path is ever derived from an unchecked name. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

from cpuver.errors import CpuverError, shown

NAME_MAX = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SUGGESTIONS = 3
SIMILAR = 0.6
"""How alike (difflib's ratio) a known name must be to be suggested, as for model names."""
RULE = f"1 to {NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit"

Kind = Literal["guest", "host", "pool"]


class InvalidName(CpuverError, ValueError):
    """A guest, host or pool name that breaks the rule (:data:`RULE`)."""

    def __init__(self, kind: Kind, name: object, where: str = "") -> None:
        self.kind = kind
        self.name = name
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{kind} name {shown(name)} is not valid: expected {RULE}")


def is_name(name: object) -> bool:
    """True when ``name`` follows the rule."""
    return isinstance(name, str) and 0 < len(name) <= NAME_MAX and _NAME.fullmatch(name) is not None


def check_name(kind: Kind, name: object, where: str = "") -> str:
    """``name`` when it follows the rule, else :class:`InvalidName` (``where`` names the place
    it came from: a file, a field)."""
    if not is_name(name):
        raise InvalidName(kind, name, where)
    assert isinstance(name, str)
    return name


def closest(name: str, known: Iterable[str]) -> list[str]:
    """The known names most like ``name`` (a misspelt one), best first: the close-match rule the
    catalog uses for model names (difflib), for pages that suggest a name."""
    return difflib.get_close_matches(name, list(known), n=SUGGESTIONS, cutoff=SIMILAR)
