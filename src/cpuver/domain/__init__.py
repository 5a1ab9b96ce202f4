"""Guests: pin a resolved CPU at define time and keep it exact for the guest's whole life.

A pure core layer (no I/O): :mod:`.pinning` freezes a resolution into a :class:`~.pinning.Pin`,
:mod:`.lifecycle` is the guest state machine (the only ways a pin moves are ``update_cpu`` and a
pending update applied at cold boot), :mod:`.xml` reads and writes libvirt domain XML and cpuver's
small guest files.

The errors live here (``cpuver.errors`` is shared with other packages): every one derives from
:class:`DomainError`, itself a :class:`~cpuver.errors.CpuverError`.
"""

from __future__ import annotations

from cpuver.errors import CpuverError

TYPE_CHECKING = False  # not typing's: cpuver's libvirt hook imports this and starts fast
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class DomainError(CpuverError):
    """A guest, pin or guest definition is invalid, or an operation on a guest is refused."""


class IllegalTransition(DomainError):
    """The operation is not allowed in the guest's current state (``migrate`` a shut-off guest)."""


class UpdateConflict(DomainError):
    """Optimistic concurrency: the guest changed since it was read (generation mismatch)."""

    def __init__(self, guest: str, expected: int, actual: int) -> None:
        self.guest = guest
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"guest {guest!r} was changed concurrently: expected generation {expected}, "
            f"found {actual}; read it again and retry"
        )


class HostLacksFeatures(DomainError):
    """The guest's pinned CPU cannot run on a host: ``missing`` are its blockers there."""

    def __init__(self, guest: str, host: str, action: str, missing: Sequence[str]) -> None:
        self.guest = guest
        self.host = host
        self.action = action
        self.missing = tuple(missing)
        super().__init__(
            f"cannot {action} guest {guest!r} on host {host!r}: the host lacks pinned "
            f"feature(s) {', '.join(self.missing)}"
        )


class UpdateNotRunnable(DomainError):
    """An update would pin a CPU that some host the guest must run on cannot run."""

    def __init__(self, guest: str, version: str, blocked: Mapping[str, Sequence[str]]) -> None:
        self.guest = guest
        self.version = version
        self.blocked = {host: tuple(missing) for host, missing in blocked.items()}
        where = "; ".join(f"{host} lacks {', '.join(m)}" for host, m in self.blocked.items())
        super().__init__(
            f"cannot update the CPU of guest {guest!r} to {version}: {where} "
            "(--force updates it anyway)"
        )


class IdentityChangeRefused(DomainError):
    """``update_cpu`` would change the CPU's identity and that was not accepted."""

    def __init__(self, guest: str, changes: Sequence[str]) -> None:
        self.guest = guest
        self.changes = tuple(changes)
        super().__init__(
            f"updating the CPU of guest {guest!r} changes its identity ({'; '.join(self.changes)})"
            ": guests like Windows may re-activate; accept the signature change to proceed"
        )


__all__ = [
    "DomainError",
    "HostLacksFeatures",
    "IdentityChangeRefused",
    "IllegalTransition",
    "UpdateConflict",
    "UpdateNotRunnable",
]
