"""A real PostgreSQL server (Debian's package) for the production profile, on 127.0.0.1.

``initdb`` and ``pg_ctl`` come from ``/usr/lib/postgresql/*/bin`` (or PATH); as root they run as
the ``postgres`` user. The server listens on a free port with password (SCRAM) authentication
and a unix socket in its own temporary directory, and is stopped whatever happens. Without the
binaries the tests are skipped, except in CI (``CI`` true), where ``scripts/install-system`` must
have installed them and the fixture fails instead (``aind_assets_tests.support.missing_tool``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from aind_assets.servers import free_port
from aind_assets_tests.support import missing_tool, require_servers_mark

PG_USER = "dagster"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    socket_dir: Path

    def connect(self, database: str = "postgres"):
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )

    def create_database(self, prefix: str = "dagster") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def env(self, database: str) -> dict[str, str]:
        """The variables the production profile reads for its storage."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": database,
        }


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and pg_ctl, else their dir on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    found = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").exists() and (d / "pg_ctl").exists()
    ]
    if found:
        return max(found, key=version)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_servers_mark("postgres_server")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing_tool("PostgreSQL's initdb/pg_ctl not found in /usr/lib/postgresql/*/bin or on PATH")

    run_as: dict[str, object] = {}
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing_tool("running as root but there is no 'postgres' user (PostgreSQL's package)")
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    root = Path(tempfile.mkdtemp(prefix="aind-pg-"))  # under /tmp: reachable by the postgres user
    data, sock, log = root / "data", root / "sock", root / "server.log"
    password = secrets.token_urlsafe(18)
    pwfile = root / "pwfile"
    sock.mkdir()
    pwfile.write_text(password + "\n")
    if owner is not None:
        for path in (root, sock, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **run_as,  # type: ignore[arg-type]
        )

    port = free_port()
    started = False
    try:
        out = run(
            str(bin_dir / "initdb"),
            "-D", str(data),
            "-U", PG_USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
        options = (
            f"-p {port} -h 127.0.0.1 -k {sock} -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        started = True  # from here on a server may be running: always stop it
        out = run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        if out.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{out.stdout}\n{out.stderr}\n{tail}")
        server = PostgresServer("127.0.0.1", port, PG_USER, password, sock)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.connect().close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        if started:
            _stop(run, bin_dir, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(run, bin_dir: Path, data: Path) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-m",
            "immediate",
            "-w",
            "-t",
            "20",
            "stop",
            timeout=40,
        )
    pid_file = data / "postmaster.pid"
    if pid_file.exists():  # pg_ctl could not stop it: kill the postmaster (its children follow)
        with contextlib.suppress(ValueError, IndexError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
