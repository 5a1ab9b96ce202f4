"""Progress of long CLI work (cpuver.cli.progress): a line per step in a log, one line live."""

from __future__ import annotations

import io

from cpuver.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_step() -> None:
    log = io.StringIO()
    progress = Progress(log)
    progress.step("added", 1, 2, "hv1")
    progress.step("added", 2, 2, "hv2")
    assert log.getvalue().splitlines() == ["added 1/2 hv1", "added 2/2 hv2"]


def test_a_terminal_gets_one_line_rewritten_in_place_and_ended_when_done() -> None:
    screen = Terminal()
    progress = Progress(screen)
    for done in range(1, 1001):
        progress.step("read", done, 1000, f"hv{done}")
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") < 100  # refreshed at most every 0.1 s, not once per step
    assert text.rstrip().rsplit("\r", 1)[-1].startswith("read 1000/1000 (100%,")
