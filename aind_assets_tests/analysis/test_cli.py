"""Command-line backfills through the real CLIs (subprocesses), on the real servers.

``aind-assets partitions sync`` registers partitions without the sensor, ``dg launch --assets
--partition-range`` runs several dynamic partitions in one run, ``dagster job backfill`` (dg 1.13
has no backfill command) queues one run per partition of the ``analysis_ephys_units`` job, and
``aind-assets results`` finds what they produced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from aind_assets.analysis import paging
from aind_assets.io_managers.commit import committed_folder
from aind_assets_tests.analysis.conftest import RESULTS, World
from aind_assets_tests.conftest import S3_KEY, S3_SECRET

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def cli_env(world: World, tmp_path: Path, mongo_server_uri: str, s3_server: str) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Runs launch at once (no queue, so no daemon needed) as subprocesses of the code server.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AIND_DATA_DIR": str(tmp_path / "data"),
        "AIND_DOCDB_URI": mongo_server_uri,
        "AIND_DOCDB_DATABASE": world.docdb.database,
        "AIND_STORE_ROOT": world.store.root,
        "AIND_S3_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AIND_ANALYSIS_PAGE_SIZE": "4",
    }


def run(env: dict, *args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        list(args), env=env, cwd=PROJECT, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def aind(env: dict, *args: str) -> str:
    return run(env, str(BIN / "aind-assets"), *args)


def dagster(env: dict, *args: str) -> str:
    return run(env, str(BIN / "dagster"), *args, "-m", "aind_assets.definitions")


def dg_cli(env: dict, *args: str) -> str:
    """``dg`` in the project folder: the code location of [tool.dg] in pyproject.toml."""
    return run(env, str(BIN / "dg"), *args)


def in_process(env: dict, monkeypatch, capsys, *args: str) -> str:
    """``aind-assets`` in this process (cheap commands; the real CLI runs in subprocesses)."""
    from aind_assets.cli import main

    for name in (
        "DAGSTER_HOME",
        "AIND_DATA_DIR",
        "AIND_DOCDB_URI",
        "AIND_DOCDB_DATABASE",
        "AIND_STORE_ROOT",
        "AIND_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AIND_ANALYSIS_PAGE_SIZE",
    ):
        monkeypatch.setenv(name, env[name])
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_sync_range_materialize_job_backfill_and_results(
    world: World, cli_env: dict, monkeypatch, capsys
) -> None:
    world.seed()
    subject = "741213"
    sync = ["partitions", "sync", "--spec", "ephys_units", "--query"]
    sync.append(json.dumps({"subject.subject_id": subject}))
    expected = [
        paging.partition_key_for(r["name"])
        for r in sorted(world.records, key=lambda r: (r["last_modified"], r["_id"]))
        if r["subject"]["subject_id"] == subject
    ]
    dry = json.loads(in_process(cli_env, monkeypatch, capsys, *sync, "--dry-run", "--json"))
    assert dry["keys"] == expected and len(expected) == 3 and dry["added"] == 0

    # register the partitions without the sensor, saying how far it got on stderr
    done = subprocess.run(
        [sys.executable, "-m", "aind_assets.cli", *sync],
        env=cli_env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "partitions sync: ephys_units: querying DocDB" in done.stderr
    assert "partitions sync: ephys_units: 3 record(s) read" in done.stderr
    assert "ephys_units: 3 record(s) -> 3 partition(s), registered 3 new" in out
    listed = in_process(
        cli_env, monkeypatch, capsys, "partitions", "list", "--spec", "ephys_units", "--json"
    )
    assert json.loads(listed) == expected
    # every spec's own partitions: the grouped spec has none registered yet
    every = in_process(cli_env, monkeypatch, capsys, "partitions", "list", "--json")
    assert json.loads(every) == {"ephys_units": expected, "foraging_by_subject": []}
    again = json.loads(in_process(cli_env, monkeypatch, capsys, *sync, "--json"))
    assert again["added"] == 0  # idempotent

    # several dynamic partitions in one run (single-run backfill policy)
    first, second, third = expected
    dg_cli(
        cli_env,
        "launch",
        "--assets",
        "analysis/ephys_units/dispatch,analysis/ephys_units/unit_quality",
        "--partition-range",
        f"{first}...{second}",
        "--config-json",
        json.dumps({"execution": {"config": {"in_process": {}}}}),
    )
    io_root = world.store.url("dagster-io")
    for key in (first, second):
        output = world.store.upath(f"{io_root}/analysis/ephys_units/unit_quality/{key}")
        assert (committed_folder(output) / "processing.json").exists()
    # the session of `second` has no NWB file: only `first` produced results
    assert world.docdb.count(RESULTS) == 2
    assert {d["input_asset_names"][0] for d in world.docdb.find(RESULTS, {})} == {first}

    # a partitioned job backfill: one run per partition
    dagster(
        cli_env,
        "job",
        "backfill",
        "-j",
        "analysis_ephys_units",
        "--partitions",
        third,
        "--noprompt",
    )
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        deadline = time.monotonic() + 150
        while True:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": third}))
            if runs and all(r.is_finished for r in runs):
                break
            assert time.monotonic() < deadline, [r.status for r in runs]
            time.sleep(1)
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags.get("dagster/backfill")
    # unit_quality (2 parameter sets) and behaviour performance on the third session
    assert world.docdb.count(RESULTS, {"input_asset_names": third}) == 3

    found = in_process(
        cli_env,
        monkeypatch,
        capsys,
        "results",
        "--analysis",
        "unit_quality",
        "--input-asset",
        third,
        "--param",
        "isi_threshold_ms=2.0",
        "--json",
    )
    (record,) = json.loads(found)
    assert (
        record["processing"]["data_processes"][0]["code"]["parameters"]["isi_threshold_ms"] == 2.0
    )
