"""What the ``cpuver`` command prints and the codes it exits with, the same for every command.

Every command that prints takes ``--json``: then standard output carries exactly one JSON
document of that command's own stable shape, and an error is a JSON object too
(``{"error": ..., "exit": N, ...}``) while standard error keeps its one human-readable line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from cpuver.errors import CpuverError

EXIT_OK = 0
EXIT_ERROR = 1
"""Bad input, an unknown name, a file or service that cannot be read."""
EXIT_USAGE = 2
"""The command line itself is wrong (argparse's code)."""
EXIT_REFUSED = 3
"""A well-formed request the state refuses: a host lacks a pinned feature, no version runs, a
name is taken, the guest changed meanwhile or is in the wrong state. Retrying may succeed."""
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 error (bad input, unknown name, unreadable file); 2 usage error; "
    "3 refused (the state of a guest, host or store says no: a host lacks a pinned feature, no "
    "version runs, a name is taken, the guest changed meanwhile); 130 interrupted"
)


class UsageError(CpuverError):
    """The command line is wrong; ``usage`` is the usage line of the (sub)command."""

    def __init__(self, message: str, usage: str = "") -> None:
        self.usage = usage
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (so ``--json`` can answer it as JSON)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def emit(as_json: bool, data: Any, lines: Callable[[], Iterable[str]]) -> None:
    """Print the answer: ``data`` as JSON, or the text ``lines()`` give."""
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for line in lines():
            print(line)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def fail(err: CpuverError, code: int, as_json: bool, extra: dict[str, Any]) -> int:
    """Report ``err``: one line (spec errors: with their marker) on stderr; with ``--json`` also
    the JSON error on stdout. Returns ``code``."""
    print(f"cpuver: error: {err}", file=sys.stderr)
    if as_json:
        print(json.dumps({**extra, "exit": code}, indent=2))
    return code
