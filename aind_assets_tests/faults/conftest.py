"""Dedicated S3 and Mongo-wire servers for the fault tests (own ports, own data dirs), which the
tests SIGKILL and restart on the same port and data; a fresh bucket and database per test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest

from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import (
    ManagedServer,
    free_port,
    mongo_uri,
    mongoeco_server,
    seaweedfs_server,
)
from aind_assets_tests.conftest import S3_KEY, S3_SECRET
from aind_assets_tests.faults.flows import Env

PROBE = "probe.txt"


@dataclass
class FaultServers:
    s3: ManagedServer
    mongo: ManagedServer

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3.port}"

    @property
    def uri(self) -> str:
        return mongo_uri(self.mongo.port)

    def server(self, which: str) -> ManagedServer:
        return {"s3": self.s3, "mongo": self.mongo}[which]

    def restart(self, which: str, env: Env | None = None) -> None:
        """Restart a killed server on its port and data, and wait until it serves the data it
        held (SeaweedFS answers before its volumes are back)."""
        self.server(which).restart()
        if which == "s3" and env is not None:
            deadline = time.monotonic() + 120
            while True:
                try:
                    assert env.store.get_bytes(env.store.url(PROBE)) == b"probe"
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def ensure_running(self) -> None:
        for server in (self.s3, self.mongo):
            if not server.running:
                server.restart()


@pytest.fixture(scope="session")
def fault_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServers]:
    root = tmp_path_factory.mktemp("fault-servers")
    s3 = seaweedfs_server(root / "weed", root / "weed.log", S3_KEY, S3_SECRET)
    port = free_port()
    mongo = mongoeco_server(root / "docdb.sqlite", port, root / "mongoeco.log")
    with s3.start(timeout=120), mongo.start(timeout=120):
        yield FaultServers(s3, mongo)


@pytest.fixture
def env(fault_servers: FaultServers) -> Iterator[Env]:
    """A bucket and a database of this test's own; S3 requests are not retried and DocDB
    gives up after 3 s, so a dead server fails a step at once."""
    fault_servers.ensure_running()
    name = f"fault-{uuid.uuid4().hex[:12]}"
    store = ObjectStoreResource(
        root=f"s3://{name}",
        endpoint_url=fault_servers.endpoint,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        max_attempts=1,
    )
    store.ensure_root()
    store.put_bytes(store.url(PROBE), b"probe")
    docdb = DocDBResource(
        uri=fault_servers.uri, database=name.replace("-", "_"), server_selection_timeout_ms=3000
    )
    yield Env(store, docdb)
    docdb.close()
    fault_servers.ensure_running()
    with pymongo.MongoClient(fault_servers.uri, serverSelectionTimeoutMS=5000) as c:
        c.drop_database(docdb.database)


def run_killed(flow: str, step: str, servers: FaultServers, env: Env) -> int:
    """Run ``flow`` in a process of its own that SIGKILLs itself at ``step``; its exit code."""
    bucket = env.store.root.removeprefix("s3://")
    args = [
        flow,
        step,
        servers.endpoint,
        bucket,
        servers.uri,
        env.docdb.database,
        S3_KEY,
        S3_SECRET,
    ]
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-m", "aind_assets_tests.faults.run_flow", *args],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
        },
        capture_output=True,
        timeout=300,
        check=False,
    )
    return proc.returncode
