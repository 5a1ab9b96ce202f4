"""Progress of long work on stderr: one line rewritten in place on a terminal, else a line each.

A log (CI, a pipe) keeps every step; a person at a terminal sees one line with the count, the
share done and the rate, refreshed at most ten times a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REFRESH_SECONDS = 0.1


class Progress:
    """Reports ``verb done/total item`` for each step of a job of ``total`` steps."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._started = time.monotonic()
        self._shown = 0.0
        self._width = 0

    def step(self, verb: str, done: int, total: int, item: str) -> None:
        if not self.live:
            print(f"{verb} {done}/{total} {item}", file=self.stream, flush=True)
            return
        now = time.monotonic()
        if done < total and now - self._shown < REFRESH_SECONDS:
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-9)
        line = f"{verb} {done}/{total} ({100 * done // max(total, 1)}%, {rate:,.0f}/s) {item}"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        if done == total:
            self.stream.write("\n")
            self._started, self._width = time.monotonic(), 0
        self.stream.flush()
