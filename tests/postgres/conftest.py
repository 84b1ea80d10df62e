"""A real, throwaway PostgreSQL cluster for the plant-data tests.

One cluster per test session: ``initdb`` (as the ``postgres`` user when the tests run as root, since
initdb refuses root) into a temporary folder, started with ``pg_ctl`` on a free loopback port with
password (SCRAM) authentication over TCP, stopped and deleted at the end. Each test gets its own
database, dropped afterwards. Debian's ``postgresql`` package is installed by scripts/install-data.sh.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_helpers import free_port  # noqa: E402

PASSWORD = "loupe-test-secret"


def _bindir() -> Path | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists():
            return Path(d)
    w = shutil.which("initdb")
    return Path(w).parent if w else None


@dataclass
class PgServer:
    bindir: Path
    data: Path
    port: int
    log: Path
    user_cmd: list[str]

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.user_cmd, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c full_page_writes=off -c synchronous_commit=off -c max_connections=60")
        self.ctl("-o", opts, "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def conninfo(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres password={PASSWORD} dbname={db}"


@pytest.fixture(scope="session")
def pg_server():
    bindir = _bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: run scripts/install-data.sh (Debian package 'postgresql')")
    base = Path(tempfile.mkdtemp(prefix="loupe-pg-"))
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    user_cmd: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        user_cmd = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*user_cmd, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    srv = PgServer(bindir, data, free_port(), base / "server.log", user_cmd)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(pg_server):
    """A fresh database; yields (spec, env) where env carries the password the libpq way (PGPASSWORD)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    spec = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    yield spec, {"PGPASSWORD": PASSWORD}
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_connect(pg_server):
    """``pg_connect(spec)`` -> a psycopg connection (autocommit) to that test database."""
    import psycopg

    conns = []

    def connect(spec: str):
        db = spec.rsplit("/", 1)[1].split("?")[0]
        c = psycopg.connect(pg_server.conninfo(db), autocommit=True)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()
