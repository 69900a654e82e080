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
    # every job resolves (asset graph wiring, partitions, checks); the flows' jobs are partitioned
    jobs = {job.name: job for job in repo.get_all_jobs()}
    # one partition set per dispatch spec, shared by that spec's job and assets only
    for spec in ("ephys_units", "foraging_by_subject"):
        own = dg.DynamicPartitionsDefinition(name=spec)
        assert jobs[f"analysis_{spec}"].partitions_def == own
        assert jobs[f"analysis_{spec}"].description
    graph = defs.resolve_asset_graph()
    analysis_keys = [k for k in graph.get_all_asset_keys() if k.path[0] == "analysis"]
    assert len(analysis_keys) == 7, analysis_keys  # 2 sources, 2 dispatches, 3 analyses
    for key in analysis_keys:
        node = graph.get(key)
        assert node.partitions_def == dg.DynamicPartitionsDefinition(name=key.path[1]), key
        if node.is_materializable:
            assert node.code_version and node.owners and node.description, key
            assert {"python"} <= node.kinds, key
    releases = dg.DynamicPartitionsDefinition(name="hbcd_releases")
    assert jobs["hbcd_release"].partitions_def == releases
    # both flows' assets are defined, and every schedule runs one of the jobs
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {
        "analysis/ephys_units/data_assets",
        "analysis/ephys_units/dispatch",
        "analysis/ephys_units/unit_quality",
        "analysis/foraging_by_subject/behavior_performance",
        "hbcd/deidentified_session",
        "hbcd/release_staging",
    } <= keys, sorted(keys)
    assert repo.schedule_defs and {s.job_name for s in repo.schedule_defs} <= set(jobs)


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
