"""Server processes start once: a managed server and the run command never run twice."""

import socket
import sys
from pathlib import Path

import pytest

from aind_assets.cli import _only_instance, main
from aind_assets.servers import ManagedServer, free_port, port_open

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


@pytest.fixture
def dev_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("AIND_DATA_DIR", str(tmp_path / "data"))
    return home


def test_dev_refuses_a_second_platform_on_one_home(dev_env: Path) -> None:
    dev_env.mkdir(parents=True)
    with (
        _only_instance(dev_env, "127.0.0.1", free_port()),
        pytest.raises(SystemExit, match=f"already running with DAGSTER_HOME={dev_env}"),
    ):
        main(["dev", "--port", str(free_port()), "--no-seed"])
    # once the first one is gone the home is free again, and the new holder refuses others
    with (
        _only_instance(dev_env, "127.0.0.1", free_port()),
        pytest.raises(SystemExit, match="already running"),
        _only_instance(dev_env, "127.0.0.1", free_port()),
    ):
        pass


def test_dev_refuses_a_port_in_use(dev_env: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is already in use"):
            main(["dev", "--port", str(port), "--no-seed"])
