"""Bad input and faults through the ``cpuver`` command, as a user (or an attacker) meets it: every
run ends with one line on stderr and exit code 1, never a traceback, and stores nothing.

Names are names (never paths, never control characters) on SQLite and PostgreSQL alike; files
that are not UTF-8 are read as their format reads them; broken snapshots are refused before
anything is stored; a QEMU that hangs is given up on within the timeout and ended; ``fleet add``
stores all of its snapshots or none, even when killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cpuver.store import GuestStore, HostStore
from fakes import hanging_qemu, processes_running
from fleet_hosts import capable, snapshot
from postgres import url_fixture  # noqa: F401  (the url fixture)
from servers import cpuver_script

Run = Callable[..., subprocess.CompletedProcess[str]]
QEMU_TIMEOUT_S = 2


@pytest.fixture
def cpuver(tmp_path: Path) -> Run:
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "CPUVER_QEMU_TIMEOUT": str(QEMU_TIMEOUT_S),
    }

    def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [cpuver_script(), *argv], input=stdin.decode("latin-1") if stdin else None,
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one-line error of a refused command, checked to name ``words``."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.rstrip().splitlines()
    progress, last = lines[:-1], lines[-1]
    assert last.startswith("cpuver: error: "), done.stderr
    # the lines before it are progress ("  asking QEMU ...", "read 1/2 hv2"), never an error
    assert not [line for line in progress if "error" in line], done.stderr
    for word in words:
        assert word in last, last
    return last


def guest_file(tmp_path: Path, name: str, suffix: str = "json") -> Path:
    path = tmp_path / f"guest.{suffix}"
    path.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": "Haswell-v2"}))
    return path


# -- 1. names are names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/srv/data", "../x", "a/b", ".", "..", "x" * 2_000_000, "a\0b", "web\n1", "\x1b[31mred"],
    ids=["absolute", "parent", "slash", "dot", "dotdot", "2MB", "nul", "newline", "ansi"],
)
def test_domain_define_refuses_a_name_that_is_not_a_name(
    cpuver: Run, tmp_path: Path, url: str, name: str
) -> None:
    path = tmp_path / "guest.json"
    path.write_text(json.dumps({"name": name, "machine": "pc-q35-10.0", "cpu": "Haswell-v2"}))
    line = refused(cpuver("domain", "define", str(path), "--accel", "tcg", "--db", url), "name")
    assert len(line) < 400  # a 2 MB name is not echoed back
    assert "\x1b" not in line and "\0" not in line  # nor reaches the terminal raw
    with GuestStore(url) as store:
        assert store.list() == []


def test_libvirt_xml_with_a_path_as_its_name_is_refused(cpuver: Run, tmp_path: Path) -> None:
    path = tmp_path / "web1.xml"
    path.write_text("<domain><name>../../etc</name><cpu><model>Haswell-v2</model></cpu></domain>")
    refused(cpuver("domain", "define", str(path), "--accel", "tcg"), "domain/name", "'../../etc'")


@pytest.mark.parametrize("pool", ["a/b", "", "p\x1b", "x" * 129])
def test_fleet_add_refuses_a_pool_name_that_is_not_a_name(
    cpuver: Run, tmp_path: Path, url: str, pool: str
) -> None:
    host = tmp_path / "hv1.json"
    host.write_text(json.dumps(snapshot("hv1", capable())))
    refused(cpuver("fleet", "add", str(host), "--pool", pool, "--db", url), "pool name")
    with HostStore(url) as store:
        assert store.list() == []


def test_looking_up_a_name_with_a_tab_is_an_error_without_sql(cpuver: Run, url: str) -> None:
    line = refused(cpuver("domain", "dumpxml", "a\tb", "--db", url), "guest name")
    assert "SELECT" not in line and "sqlalchemy" not in line


def test_shutdown_never_removes_a_directory_cpuver_did_not_make(
    cpuver: Run, tmp_path: Path
) -> None:
    defined = cpuver("domain", "define", str(guest_file(tmp_path, "web1")), "--accel", "tcg")
    assert defined.returncode == 0, defined.stderr
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    url = f"sqlite:///{tmp_path / 'data' / 'cpuver' / 'cpuver.db'}"
    store_key = hashlib.sha256(url.encode()).hexdigest()[:12]
    # a record changed by hand (or by another program) that points outside cpuver's directory
    run_dir = tmp_path / "state" / "cpuver" / "run" / store_key / "web1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(
        json.dumps({"pid": os.getpid(), "binary": "/bin/true", "socket": "/nonexistent",
                    "workdir": str(precious)})
    )  # fmt: skip
    cpuver("domain", "shutdown", "web1")
    assert (precious / "data").read_text() == "keep me"


# -- 3. no traceback on any file ------------------------------------------------------------------


def test_latin1_xml_with_its_encoding_declared_is_read_as_xml_reads_it(
    cpuver: Run, tmp_path: Path
) -> None:
    path = tmp_path / "web1.xml"
    path.write_bytes(
        '<?xml version="1.0" encoding="ISO-8859-1"?><domain><name>web1</name>'
        "<description>caf\u00e9 \u00e0 l'\u00e9tage</description>"
        "<cpu><model>Haswell-v2</model></cpu></domain>".encode("latin-1")
    )
    done = cpuver("domain", "define", str(path), "--accel", "tcg")
    assert done.returncode == 0, done.stderr
    assert "defined web1: Haswell-v2" in done.stdout


def test_utf16_json_guest_is_read_as_json_reads_it(cpuver: Run, tmp_path: Path) -> None:
    path = tmp_path / "web1.json"
    path.write_bytes(json.dumps({"name": "web1", "cpu": "Haswell-v2"}).encode("utf-16"))
    done = cpuver("domain", "define", str(path), "--accel", "tcg")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("domain", "define", "{file}", "--accel", "tcg"),
        ("resolve", "Haswell", "--host", "{file}"),
        ("fleet", "add", "{file}", "--pool", "p"),
        ("host", "show", "{file}"),
    ],
    ids=["define", "--host", "fleet-add", "host-show"],
)
def test_a_file_of_bad_bytes_is_one_error_naming_the_offset(
    cpuver: Run, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"name": "web\xff1"}')
    refused(cpuver(*(a.format(file=path) for a in argv)), "bad.json", "0xff", "offset 13")


def snapshot_with(**changes: object) -> dict[str, object]:
    """A valid v2 snapshot of hv1 with ``changes`` made to its top-level fields."""
    data: dict[str, object] = {
        "schema": "cpuver-host/2", "host": "hv1", "cpu": {"vendor": "GenuineIntel"},
        "releases": {"10.0": {"kvm": {"features": sorted(capable()),
                                      "provenance": {"method": "kvm"}}}},
    }  # fmt: skip
    return {**data, **changes}


BROKEN_SNAPSHOTS = {
    "nested": "[" * 100_000,
    "superscript-schema": json.dumps({"schema": "cpuver-host/\u00b2", "host": "hv1"}),
    "5000-digit-schema": json.dumps({"schema": "cpuver-host/" + "9" * 5000, "host": "hv1"}),
    "5000-digit-family": json.dumps(snapshot_with(cpu={"vendor": "x"})).replace(
        '"vendor": "x"', '"vendor": "x", "family": ' + "9" * 5000
    ),
    "huge-family": json.dumps(snapshot_with(cpu={"vendor": "x", "family": 10**40})),
    "release-abc": json.dumps(
        snapshot_with(releases={"abc": {"kvm": {"features": [], "provenance": {"method": "kvm"}}}})
    ),
    "accelerator-foo": json.dumps(
        snapshot_with(releases={"10.0": {"foo": {"features": [], "provenance": {"method": "kvm"}}}})
    ),
    "model-name-list": json.dumps({"return": {"model": {"name": ["host"], "props": {}}}}),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_SNAPSHOTS))
def test_fleet_add_refuses_a_broken_snapshot_and_stores_nothing(
    cpuver: Run, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.json"
    path.write_text(BROKEN_SNAPSHOTS[kind])
    good = tmp_path / "hv2.json"
    good.write_text(json.dumps(snapshot("hv2", capable())))
    db = f"sqlite:///{tmp_path / 'cpuver.db'}"
    refused(cpuver("fleet", "add", str(good), str(path), "--pool", "p", "--db", db), f"{kind}.json")
    with HostStore(db) as store:
        assert store.list() == []


@pytest.mark.parametrize("kind", ["nested", "release-abc", "5000-digit-family", "accelerator-foo"])
def test_host_show_of_a_broken_snapshot_is_one_error(
    cpuver: Run, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.json"
    path.write_text(BROKEN_SNAPSHOTS[kind])
    refused(cpuver("host", "show", str(path)), f"{kind}.json")


def test_a_nested_or_huge_guest_file_is_one_error(cpuver: Run, tmp_path: Path) -> None:
    for text in ("[" * 100_000, '{"name": ' + "9" * 5000 + "}", "a = " + "[" * 100_000):
        path = tmp_path / ("guest.toml" if text.startswith("a") else "guest.json")
        path.write_text(text)
        refused(cpuver("domain", "define", str(path), "--accel", "tcg"), path.name)


# -- 4. a QEMU that hangs -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["version", "greeting", "command"])
def test_host_probe_gives_up_on_a_hanging_qemu_and_ends_it(
    cpuver: Run, tmp_path: Path, mode: str
) -> None:
    fake = hanging_qemu(tmp_path, mode)
    started = time.monotonic()
    done = cpuver("host", "probe", "--via", "qemu", "--qemu", str(fake))
    took = time.monotonic() - started
    said = {"version": "-version did not answer", "greeting": "did not greet on QMP",
            "command": "did not answer QMP"}[mode]  # fmt: skip
    refused(done, said, f"{QEMU_TIMEOUT_S} s")
    assert took < 4 * QEMU_TIMEOUT_S + 10
    time.sleep(0.2)
    assert processes_running(str(fake)) == []


# -- 6. database URLs ----------------------------------------------------------------------------


def test_a_password_in_the_db_url_is_never_printed(cpuver: Run) -> None:
    url = "postgresql+psycopg://cpuver:hunter2@127.0.0.1:9/cpuver"
    line = refused(cpuver("domain", "list", "--db", url), "database unavailable")
    assert "hunter2" not in line and "127.0.0.1" not in line


# -- 7. fleet add: all or nothing, no duplicate history ------------------------------------------


def snapshot_files(directory: Path, count: int) -> list[str]:
    offers = sorted(capable())
    files = []
    for n in range(count):
        path = directory / f"hv{n}.json"
        data = {"schema": "cpuver-host/1", "host": f"hv{n}",
                "accelerators": {"kvm": {"features": offers}}}  # fmt: skip
        path.write_text(json.dumps(data))
        files.append(str(path))
    return files


def test_fleet_add_killed_while_storing_stores_all_or_nothing(tmp_path: Path, cpuver: Run) -> None:
    files = snapshot_files(tmp_path, 1000)
    for round_ in range(2):
        db = f"sqlite:///{tmp_path / f'fleet{round_}.db'}"
        process = subprocess.Popen(
            [cpuver_script(), "fleet", "add", *files, "--pool", "rack", "--db", db],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        for line in iter(process.stderr.readline, ""):  # one line per file: not a terminal
            if line.startswith(f"added {200 + 600 * round_}/"):
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=120)
        with HostStore(db) as store:
            assert len(store.list()) in (0, len(files))


def test_adding_the_same_snapshot_again_adds_no_history_row(cpuver: Run, tmp_path: Path) -> None:
    [path] = snapshot_files(tmp_path, 1)
    db = f"sqlite:///{tmp_path / 'cpuver.db'}"
    for _ in range(2):
        assert cpuver("fleet", "add", path, "--pool", "rack", "--db", db).returncode == 0
    with HostStore(db) as store:
        [listed] = store.list()
        assert listed.snapshots == 1
        assert len(store.history("hv0")) == 1
