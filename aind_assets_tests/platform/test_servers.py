"""Server processes start once: a managed server and the run command never run twice; two S3
servers share a machine."""

import contextlib
import socket
import sys
from pathlib import Path

import psutil
import pytest

from aind_assets.cli import main, only_instance
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import (
    ManagedServer,
    embedded_docdb,
    free_port,
    port_open,
    seaweedfs_server,
)
from aind_assets.settings import Settings

# weed mini's defaults for the services it must not start or must not put on a fixed port
WEED_DEFAULT_PORTS = {6060, 7333, 8181, 8333, 8888, 9101, 9333, 9340, 23646, 33646}

pytestmark = pytest.mark.servers  # starts server processes (and the dev command) itself


def test_managed_server_starts_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedServer(
        "http",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        port,
        tmp_path / "http.log",
    )
    with server.start(timeout=30):
        pid = server.proc.pid
        assert port_open(port)
        with pytest.raises(RuntimeError, match=r"http is already running \(pid \d+\)"):
            server.start()
        with server:  # entering a started server does not start another one
            assert server.proc.pid == pid
    assert not server.running


def test_embedded_docdb_starts_only_when_needed_and_absent(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings.from_env(
        {"AIND_DATA_DIR": str(tmp_path / "data"), "AIND_EMBEDDED_DOCDB_PORT": str(port)}
    )
    with embedded_docdb(settings, needed=False) as none:
        assert none is None and not port_open(port)
    with embedded_docdb(settings) as server:
        assert server is not None and port_open(port)
        with embedded_docdb(settings) as again:  # the one already serving the port is used
            assert again is None
        assert server.running
    assert not server.running and settings.embedded_docdb_path.exists()


@pytest.fixture
def dev_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("AIND_DATA_DIR", str(tmp_path / "data"))
    return home


def test_dev_refuses_a_second_platform_on_one_home(dev_env: Path) -> None:
    dev_env.mkdir(parents=True)
    with (
        only_instance(dev_env, "127.0.0.1", free_port()),
        pytest.raises(SystemExit, match=f"already running with DAGSTER_HOME={dev_env}"),
    ):
        main(["dev", "--port", str(free_port()), "--no-seed"])
    # once the first one is gone the home is free again, and the new holder refuses others
    with (
        only_instance(dev_env, "127.0.0.1", free_port()),
        pytest.raises(SystemExit, match="already running"),
        only_instance(dev_env, "127.0.0.1", free_port()),
    ):
        pass


def test_dev_refuses_a_port_in_use(dev_env: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is already in use"):
            main(["dev", "--port", str(port), "--no-seed"])


def _listening_ports(pid: int) -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def test_two_seaweedfs_servers_run_side_by_side(tmp_path: Path) -> None:
    """Every port weed opens is one chosen free, so test suites and benchmarks can overlap."""
    servers = [
        seaweedfs_server(tmp_path / name, tmp_path / f"{name}.log", "key", "secret")
        for name in ("one", "two")
    ]
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server.start(timeout=120))
        ports = [_listening_ports(server.proc.pid) for server in servers]
        for server, opened in zip(servers, ports, strict=True):
            assert server.port in opened
            assert not opened & WEED_DEFAULT_PORTS, f"fixed ports open; see {server.log_path}"
            # every listener is on a port given on the command line: nothing else is started
            assert opened <= {int(a.rpartition("=")[2]) for a in server.args if ".port" in a}
        assert not ports[0] & ports[1]
        for i, server in enumerate(servers):
            store = ObjectStoreResource(
                root=f"s3://side-by-side-{i}",
                endpoint_url=f"http://127.0.0.1:{server.port}",
                access_key_id="key",
                secret_access_key="secret",
            )
            store.ensure_root()
            store.put_bytes(store.url("hello.txt"), f"server {i}".encode())
            assert store.get_bytes(store.url("hello.txt")) == f"server {i}".encode()
    assert not any(server.running for server in servers)
