"""Which errors are refusals: a well-formed request that the state of guests, hosts or the store
does not allow (a host lacking a pinned feature, no runnable version, an update the hosts cannot
run, a name taken, a guest changed meanwhile, a step its state forbids, an identity change not
accepted).

Retrying may succeed once the state changes, so the CLI gives them their own exit code and the
service answers 409; every other cpuver error is a bad request or an unknown name.
"""

from __future__ import annotations

from cpuver.domain import (
    HostLacksFeatures,
    IdentityChangeRefused,
    IllegalTransition,
    UpdateConflict,
    UpdateNotRunnable,
)
from cpuver.errors import CpuverError, NotRunnable


def refusal_types() -> tuple[type[CpuverError], ...]:
    """The refusal types (the store's are imported only here: it pulls in SQLAlchemy)."""
    from cpuver.store import ConcurrentUpdate, GuestExists

    return (
        GuestExists,
        ConcurrentUpdate,
        UpdateConflict,
        IllegalTransition,
        HostLacksFeatures,
        IdentityChangeRefused,
        UpdateNotRunnable,
        NotRunnable,
    )


def is_refusal(err: BaseException) -> bool:
    return isinstance(err, refusal_types())
