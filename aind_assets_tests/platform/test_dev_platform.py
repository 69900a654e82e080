"""``aind-assets dev`` (what ``scripts/run`` starts) for real: a quiet start, a prompt Ctrl-C.

The platform starts the documented way (embedded DocDB, demo data, ``dg dev``) on free ports,
prints no superseded/preview/instance-file warning, and on SIGINT (a terminal's Ctrl-C) every
process it started is gone and both ports are free within 5 s, with a stop message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aind_assets.servers import free_port, port_open

pytestmark = pytest.mark.servers

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: The product requirement: Ctrl-C to every process gone and every port free.
STOP_WITHIN = 5.0
#: What a normal start must not print (Dagster's superseded-command and preview warnings, the
#: "dagster.yaml in the current folder will not be used" notice, any other Python warning class).
FORBIDDEN = (
    "SupersessionWarning",
    "PreviewWarning",
    "BetaWarning",
    "DeprecationWarning",
    "will not be used",
    "is superseded",
)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    if not (BIN / "dg").exists():
        pytest.fail(f"{BIN / 'dg'} is missing: dagster-dg-cli is a dependency (scripts/install)")
    ui_port, docdb_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIND_", "HBCD_", "AWS_", "DAGSTER_"))
    }
    env |= {"AIND_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    cmd = [sys.executable, "-m", "aind_assets.cli", "dev", "--port", str(ui_port)]
    cmd += ["--docdb-port", str(docdb_port)]
    with out.open("wb") as o, err.open("wb") as e:
        # its own session, as a shell's foreground job: the SIGINT below reaches only it
        proc = subprocess.Popen(
            cmd, env=env, cwd=PROJECT, stdout=o, stderr=e, start_new_session=True
        )
    info = {"ui_port": ui_port, "docdb_port": docdb_port, "out": out, "err": err}
    try:
        yield proc, info
    finally:
        for p in _alive(_tree(proc.pid)) if proc.poll() is None else []:
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_dev_starts_quietly_and_ctrl_c_stops_everything_within_5_s(started) -> None:
    proc, info = started

    def log() -> str:  # Dagster logs to stdout, Python warnings and our progress to stderr
        return info["out"].read_text(errors="replace") + info["err"].read_text(errors="replace")

    deadline = time.monotonic() + 300
    # up: the UI listens and the daemon has evaluated a sensor (the code location is loaded)
    while not (port_open(info["ui_port"]) and "Checking for new runs for sensor" in log()):
        assert proc.poll() is None, f"aind-assets dev exited:\n{log()[-3000:]}"
        assert time.monotonic() < deadline, f"not up in 300 s:\n{log()[-3000:]}"
        time.sleep(0.5)

    start_log = log()
    start_err = info["err"].read_text(errors="replace")
    for word in FORBIDDEN:
        assert word not in start_log, f"{word!r} printed on a normal start:\n{start_log[-4000:]}"
    assert "demo seed: writing NWB files" in start_log  # progress of the first start's seeding
    assert "dg dev" in start_log

    # the code location is named as the project ([tool.dg] code_location_name), in the UI too
    query = b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"}'
    request = urllib.request.Request(
        f"http://127.0.0.1:{info['ui_port']}/graphql",
        data=query,
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 direct
    with opener.open(request, timeout=30) as response:
        workspace = json.load(response)["data"]["workspaceOrError"]
    assert [e["name"] for e in workspace["locationEntries"]] == ["aind_assets"], workspace

    tree = _tree(proc.pid)
    names = " ".join(" ".join(p.cmdline()) for p in _alive(tree))
    assert "dagster_webserver" in names and "aind_assets.servers" in names, names

    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    while True:
        left = _alive(tree)
        ports = [p for p in (info["ui_port"], info["docdb_port"]) if port_open(p)]
        if not left and not ports:
            break
        assert time.monotonic() - sent < 60, f"still there 60 s after SIGINT: {left} {ports}"
        time.sleep(0.05)
    took = time.monotonic() - sent
    assert proc.wait(timeout=5) == 0
    stop_log = info["err"].read_text(errors="replace")[len(start_err) :]
    assert "aind-assets dev: SIGINT; stopping all processes" in stop_log, stop_log
    assert "stopped Dagster (dg dev" in stop_log and "stopped embedded DocDB" in stop_log
    assert "all stopped in" in stop_log
    print(f"Ctrl-C to all {len(tree)} processes gone and ports free: {took:.2f} s")
    assert took < STOP_WITHIN, f"stopping took {took:.1f} s (> {STOP_WITHIN} s):\n{stop_log}"
