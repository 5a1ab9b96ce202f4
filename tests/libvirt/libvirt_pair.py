"""The two daemons of the libvirt tests, and making a daemon's hook answer for another host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons import Daemon

from cpuver.host import hookcache


@dataclass
class Pair:
    a: Daemon
    b: Daemon
    hook_caches: dict[str, Path] = field(default_factory=dict)
    """Each daemon's hook cache (cpuver-hook/1), by daemon name."""
    originals: dict[str, bytes] = field(default_factory=dict)
    """What each hook cache held after its probe, to put back after a test."""

    def __iter__(self) -> Iterator[Daemon]:
        return iter((self.a, self.b))


@contextlib.contextmanager
def hook_answers_for(daemons: Pair, daemon: Daemon, host: Any) -> Iterator[None]:
    """Make ``daemon``'s hook answer from ``host`` (a HostCapabilities) instead of its probe."""
    from cpuver.api.libvirt_domains import hook_data
    from cpuver.host.hookcache import write_snapshot

    write_snapshot(str(daemons.hook_caches[daemon.name]), hook_data(host, "10.0", None))
    yield  # clean() puts the probe back


def this_host_without(daemons: Pair, *features: str) -> Any:
    """This machine as daemon A's hook probed it, but lacking ``features`` (as after a
    microcode or firmware change that took them away)."""
    from cpuver.host.capabilities import HostCapabilities

    probed = hookcache.load(str(daemons.hook_caches["hv-a"]))
    offers = {a: frozenset(f) - set(features) for a, f in probed["offers"].items()}
    return HostCapabilities("hv-b", offers)
