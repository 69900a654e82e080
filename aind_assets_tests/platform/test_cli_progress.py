"""The long HBCD commands say on stderr what step they are in (stdout keeps the result)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.support import local_cli_env


def _aind(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aind_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hbcd_discover_and_scan_print_progress(
    local_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path
) -> None:
    env = {
        **local_cli_env(local_store.root, docdb.uri, docdb.database, tmp_path),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    seeded = _aind(env, "demo", "seed", "--subjects", "2", "--assets", "2")
    assert seeded.returncode == 0, seeded.stderr

    found = _aind(env, "hbcd", "discover", "--register")
    assert found.returncode == 0, found.stderr
    steps = [line.split("] ", 1)[1] for line in found.stderr.splitlines() if "] hbcd " in line]
    assert [s.split(":", 1)[1].split()[0] for s in steps] == [
        "loading",
        "listing",
        "writing",
        "registering",
    ], found.stderr
    # 2 subjects with 2 sessions each, and the demo's one subject without a session folder
    assert "4 session(s) of 3 subject(s)" in found.stdout, found.stdout
    assert "registered 4 new bids_sessions partition(s)" in found.stdout
    assert "hbcd discover:" not in found.stdout
    assert "No dagster instance configuration file" not in found.stdout + found.stderr

    scanned = _aind(env, "hbcd", "scan")
    assert "hbcd scan: loading the identity map" in scanned.stderr
    assert "hbcd scan: scanning" in scanned.stderr and "object(s)" in scanned.stderr
    assert "object(s) scanned" in scanned.stdout

    quiet = _aind({**env, "AIND_ASSETS_QUIET": "1"}, "hbcd", "discover")
    assert quiet.returncode == 0 and "hbcd discover:" not in quiet.stderr
