"""A request to end cpuver (SIGTERM) is honoured at once, except while cpuver is in the middle
of an exchange with QEMU: then it takes effect the moment that exchange is over.

The QMP client runs an asyncio loop for each exchange; an exception raised into that loop from
a signal handler leaves it broken, so the cleanup that ends the QEMU being launched (which needs
the loop again) failed and left the QEMU running, with a traceback. Deferring to the end of the
exchange (each is bounded by its timeout) keeps every cleanup intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_depth = 0
_pending: list[Callable[[], None]] = []


def request(end: Callable[[], None]) -> None:
    """Call ``end`` (which raises, e.g. SystemExit) now, or when the exchange under way is over."""
    if _depth:
        _pending.append(end)
    else:
        end()


@contextmanager
def exchange() -> Iterator[None]:
    """An exchange with QEMU that a termination request must not cut in half."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            end = _pending[0]
            _pending.clear()
            end()
