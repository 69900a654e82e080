"""The ``dg`` command line on this project ([tool.dg] in pyproject.toml), as the docs use it.

``dg check defs`` and ``dg list defs`` load the ``aind_assets`` code location and print no
superseded or preview warning. ``dg launch --assets ... --partition-range`` is exercised on real
servers by aind_assets_tests/analysis/test_cli.py, ``dg dev`` by test_dev_platform.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aind_assets_tests.platform.test_dev_platform import FORBIDDEN

PROJECT = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not DG.exists():
        pytest.fail(f"{DG} is missing: dagster-dg-cli is a dependency (scripts/install)")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIND_", "HBCD_", "AWS_", "DAGSTER_"))
    }
    env |= {"AIND_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [str(DG), *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"dg {args} failed:\n{done.stdout}\n{done.stderr}"
    for word in FORBIDDEN:
        assert word not in done.stdout + done.stderr, f"{word!r} printed by dg {args}"
    return done


def test_dg_check_defs_loads_the_code_location(tmp_path: Path) -> None:
    done = _dg(tmp_path, "check", "defs", "--use-active-venv")
    assert "All definitions loaded successfully" in done.stdout


def test_dg_list_defs_lists_assets_checks_and_sensors(tmp_path: Path) -> None:
    listed = json.loads(_dg(tmp_path, "list", "defs", "--json").stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert "analysis/ephys_units/dispatch" in assets, sorted(assets)
    assert any(k.startswith("hbcd") for k in assets), sorted(assets)
    assert listed["asset_checks"] and listed["sensors"] and listed["jobs"]
