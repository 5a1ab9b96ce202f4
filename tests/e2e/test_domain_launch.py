"""`cpuver domain start/migrate --launch`: the pinned CPU booted and live-migrated on real QEMU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from qemu_install import QemuInstall

CPUVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cpuver"


def cpuver(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CPUVER), *argv], capture_output=True, text=True, timeout=120, check=False
    )


def test_start_migrate_save_restore_with_launch_verify_the_pin_on_real_qemu(
    qemu100: QemuInstall, tmp_path: Path
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'guests.db'}"]
    guest = tmp_path / "web1.json"
    guest.write_text(
        json.dumps({"name": "web1", "machine": "pc-q35-10.0", "cpu": "Nehalem-v1,-popcnt"})
    )
    host = tmp_path / "tcg.json"
    assert (
        cpuver(
            "host", "probe", "--via", "qemu", "--qemu", str(qemu100.binary), "-o", str(host)
        ).returncode
        == 0
    )
    assert cpuver("domain", "define", str(guest), "--accel", "tcg", *db).returncode == 0
    started = cpuver(
        "domain",
        "start",
        "web1",
        "--host",
        str(host),
        "--launch",
        "--qemu-binary",
        str(qemu100.binary),
        *db,
    )
    assert "booted and verified over QMP: exact" in started.stdout, started.stderr
    other = tmp_path / "tcg2.json"
    data = json.loads(host.read_text())
    data["host"] = "hv2"
    other.write_text(json.dumps(data))
    migrated = cpuver(
        "domain",
        "migrate",
        "web1",
        "--to",
        str(other),
        "--launch",
        "--qemu-binary",
        str(qemu100.binary),
        *db,
    )
    assert "live-migrated between two QEMU processes and verified" in migrated.stdout, (
        migrated.stderr
    )
    saved = tmp_path / "web1.saved"
    save = cpuver(
        "domain", "save", "web1", str(saved), "--launch", "--qemu-binary", str(qemu100.binary), *db
    )
    assert "verified and saved by QEMU" in save.stdout, save.stderr
    restore = cpuver(
        "domain",
        "restore",
        str(saved),
        "--host",
        str(host),
        "--launch",
        "--qemu-binary",
        str(qemu100.binary),
        *db,
    )
    assert "restored in a new process and verified over QMP: exact" in restore.stdout, (
        restore.stderr
    )
