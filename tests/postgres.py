"""A throwaway PostgreSQL cluster for the tests that need a real server.

Fixtures
    ``postgres``  one cluster per session (:class:`PostgresCluster`): initdb in a temporary
                  directory, Unix socket only, fsync off; as root it runs as the ``postgres``
                  user. ``cluster.new_database()`` gives the URL of a fresh database.
    ``url``       parametrised store URL: ``[sqlite]`` a file in ``tmp_path``, ``[postgresql]`` a
                  fresh database of the cluster (not global: ``from postgres import url_fixture``
                  where wanted).

Without PostgreSQL server binaries (or psycopg) the tests that need the cluster skip, except
when ``CI=true``: then they fail, so CI never goes green without them. ``postgres`` is
registered for every test by ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import create_engine


def postgres_bindir() -> Path | None:
    """Directory of the newest installed PostgreSQL server binaries (initdb, pg_ctl)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def unavailable(reason: str) -> NoReturn:
    """Skip the test for want of PostgreSQL; fail it instead when ``CI=true``."""
    from conftest import in_ci  # not at the top: conftest imports this module

    if in_ci():
        pytest.fail(f"{reason} [CI=true: PostgreSQL tests fail, never skip]", pytrace=False)
    pytest.skip(reason)


class PostgresCluster:
    def __init__(self, bindir: Path, base: Path, user: str | None) -> None:
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.user = user
        self.counter = itertools.count()

    def run(self, *args: str | Path) -> None:
        subprocess.run(
            [str(a) for a in args],
            check=True,
            capture_output=True,
            cwd=self.base,
            user=self.user,
            timeout=120,
        )

    def start(self) -> None:
        self.run(
            self.bindir / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the (initialised) cluster again, as after a restart of the server."""
        options = f"-k {self.base} -c listen_addresses='' -c fsync=off"
        self.run(
            self.bindir / "pg_ctl", "-D", self.data, "-o", options, "-l", self.base / "log",
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}"

    def new_database(self) -> str:
        name = f"cpuver_test_{next(self.counter)}"
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            engine.dispose()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not installed (./dev setup installs them)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg not installed (pip install -e '.[dev]')")
    user = None
    base = Path(tempfile.mkdtemp(prefix="cpuver-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        user = "postgres"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            shutil.rmtree(base)
            unavailable("running as root and there is no 'postgres' user to run the server")
        os.chown(base, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(bindir, base, user)
    try:
        cluster.start()
    except subprocess.CalledProcessError as err:
        log = base / "log"
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {err.stderr.decode()}{detail}", pytrace=False)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(
    name="url", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cpuver.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()
