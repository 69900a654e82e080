"""Every definition loads: in Python, and through `dagster definitions validate` on the workspace."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from aind_assets.definitions import defs

PROJECT = Path(__file__).resolve().parents[2]


def test_definitions_load_and_resolve() -> None:
    repo = defs.get_repository_def()
    assert {"docdb", "object_store", "io_manager"} <= set(repo.get_top_level_resources())
    # every job resolves (asset graph wiring, partitions, checks)
    for job in repo.get_all_jobs():
        assert job.name
    assert isinstance(defs, dg.Definitions)


def test_workspace_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "AIND_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr
