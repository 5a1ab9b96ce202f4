"""The ``cpuver.api`` package's interface: every name it lists is one it can load (each from the
module that defines it, on first use), and nothing else."""

from __future__ import annotations

import importlib
import subprocess
import sys

import cpuver.api as api


def test_every_listed_name_has_a_home_and_every_home_is_listed() -> None:
    assert sorted(api._HOMES) == sorted(api.__all__)


def test_every_listed_name_loads_from_its_module() -> None:
    for name, home in api._HOMES.items():
        module = importlib.import_module(f"cpuver.api.{home}")
        assert getattr(api, name) is getattr(module, name), name


def test_importing_the_package_loads_no_use_case_module() -> None:
    code = (
        "import sys, cpuver.api; "
        "print(sorted(m for m in sys.modules if m.startswith('cpuver.api.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
