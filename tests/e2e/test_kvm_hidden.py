"""The no-KVM half of the suite runs on every machine, KVM or not.

On a machine where KVM answers, the tests marked ``nokvm`` are deselected from the main run; here
they run in a private mount namespace where ``/dev/kvm`` is ``/dev/null`` (QEMU's ``-accel kvm``
then fails as on a machine without KVM). Needs root (``unshare -m``), as CI runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
NOKVM_TESTS = TESTS / "oracle" / "test_without_kvm.py"


def test_the_nokvm_tests_pass_where_kvm_is_hidden(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("hiding /dev/kvm needs root and unshare (CI runs as root)", pytrace=False)
    script = (
        "set -e; mount --make-rprivate /; "
        "if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm; fi; "
        f'exec "{sys.executable}" -m pytest -q -p no:cacheprovider --rootdir "{TESTS.parent}" '
        f'-o cache_dir="{tmp_path}" "{NOKVM_TESTS}"'
    )
    done = subprocess.run(
        ["unshare", "-m", "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=600, check=False, cwd=TESTS.parent,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "passed" in summary and "skipped" not in summary and "deselected" not in summary, summary
