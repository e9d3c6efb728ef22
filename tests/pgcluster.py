"""A throw-away PostgreSQL cluster from Debian's packages, for tests and bench/hq_load.py.

initdb and the server run as the ``postgres`` OS user (``runuser``; the
server refuses to run as root) in a fresh temp directory, on a free port on
127.0.0.1 with its socket in that directory.  Each test gets its own
database.  Without root or without the packages, the tests that need it are
skipped with the reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return found[-1] if found else shutil.which(name)


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
        return "PostgreSQL is not installed (./bin/setup --test installs Debian's postgresql when run as root)"
    if os.geteuid() != 0:
        return "PostgreSQL tests start a private cluster as the postgres OS user, which needs root (run ./bin/test as root)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' OS user to run the PostgreSQL server as (install Debian's postgresql package)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    return None


@dataclass
class PgServer:
    root: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        psql = _pg_bin("psql")
        if psql is None:
            raise RuntimeError("psql is missing")
        r = self._run(psql, "-h", str(self.socket_dir), "-p", str(self.port), "-d", "postgres", "-q", "-c", f'CREATE DATABASE "{name}"')
        if r.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {r.stderr.strip()}")
        return self.url(name)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "stop", "-D", str(self.root / "data"), "-m", "fast", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(extra_conf: str = "") -> PgServer:
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    assert initdb and pg_ctl
    # not under pytest's tmp dirs: those are root-only (0700) and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="mo-pg-"))
    pw = pwd.getpwnam("postgres")
    (root / "sock").mkdir()
    for p in (root, root / "sock"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    server = PgServer(root, free_port())
    r = server._run(initdb, "-D", str(root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed: {r.stderr.strip()[-500:]}")
    with open(root / "data" / "postgresql.conf", "a") as f:
        # durability stays at PostgreSQL's defaults (fsync, synchronous_commit on): the bench measures the real thing
        f.write(f"listen_addresses = '127.0.0.1'\nport = {server.port}\nunix_socket_directories = '{root / 'sock'}'\n"
                f"max_connections = 50\nshared_buffers = 64MB\n{extra_conf}")
    r = server._run(pg_ctl, "start", "-D", str(root / "data"), "-w", "-t", "60", "-l", str(root / "server.log"))
    if r.returncode != 0:
        log = (root / "server.log").read_text(errors="replace")[-800:] if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {log}")
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PgServer) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_server.create_database()
