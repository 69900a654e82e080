"""Out-of-process analyses through Dagster Pipes, on the real servers and a real environment.

``old_numpy_stats`` needs numpy 1.x (the platform runs numpy 2) and Python 3.12: its
environment is built once per session with uv from its requirements file, then every test
reuses it. One run holds four jobs: one succeeds (results + record), one raises, one exceeds
its memory limit and one exits hard; each failure is its own clear error with the analysis'
traceback, and nothing of them is written.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import numpy

from aind_assets.analysis import paging
from aind_assets.analysis.assets import build_assets
from aind_assets.analysis.environments import ensure_environment
from aind_assets.analysis.keys import job_name
from aind_assets.analysis.launchers import PipesLaunchSettings
from aind_assets.analysis.models import load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.analysis.wrapper import METADATA_FILE, claims_collection
from aind_assets_tests.analysis.conftest import RESULTS, World
from aind_assets_tests.analysis.external import registration

CONFIG_FILE = Path(registration.__file__).with_name("dispatch.yaml")
MODULE = registration.__name__
NAME_PREFIX = f"{registration.NAME}-"


def _assets(config_file: Path = CONFIG_FILE):
    registry = load_analyses([MODULE])
    config = load_dispatch_config(config_file, known_analyses=registry.names())
    definition = registry.get(registration.NAME)
    dispatch, analysis = build_assets(config, [definition])
    sensor = build_discovery_sensor(
        config["old_numpy_units"],
        job_name("old_numpy_units"),
        minimum_interval_seconds=30,
        running=False,
    )
    return dispatch, analysis, sensor


def _register_partitions(world: World, instance: dg.DagsterInstance, sensor, resources) -> str:
    with dg.build_sensor_context(
        instance=instance, resources={"analysis": resources["analysis"]}
    ) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    ecephys = [r for r in world.records if r["name"].startswith("ecephys_")]
    return paging.partition_key_for(ecephys[0]["name"])


def test_environment_is_built_once_and_reused(envs_dir):
    settings = PipesLaunchSettings(environments_dir=str(envs_dir))
    first = ensure_environment(
        registration.NAME, registration.ENVIRONMENT, cache_dir=envs_dir, uv=settings.uv_binary()
    )
    again = ensure_environment(
        registration.NAME, registration.ENVIRONMENT, cache_dir=envs_dir, uv=settings.uv_binary()
    )
    assert again.reused and again.path == first.path and again.key == first.key
    assert again.python_version.startswith("3.12")
    assert "numpy==1." in (first.path / "requirements.lock").read_text()
    # one environment of this analysis (the cache is shared with the examples' test)
    ours = [p.name for p in envs_dir.iterdir() if p.is_dir() and p.name.startswith(NAME_PREFIX)]
    assert ours == [first.path.name]


def test_conflicting_numpy_runs_through_pipes_and_failures_are_clean(world, instance, envs_dir):
    assert int(numpy.__version__.split(".")[0]) >= 2  # the platform's numpy: the conflict
    world.seed()
    dispatch, analysis, sensor = _assets()
    resources = world.resources(
        dispatch_config=str(CONFIG_FILE),
        analysis_modules=[MODULE],
        pipes={"environments_dir": str(envs_dir)},
    )
    key = _register_partitions(world, instance, sensor, resources)

    result = dg.materialize(
        [dispatch, analysis],
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success  # three of the four jobs fail: the step fails, naming each
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.event_specific_data.error.to_string()
    assert "4 old_numpy_stats" not in message and "3 old_numpy_stats job(s) failed" in message
    assert "ValueError: bad input for" in message and "Traceback of the analysis" in message
    assert 'old_numpy.py", line' in message  # the analysis' own traceback
    assert f"exceeded its memory limit ({registration.MEMORY_LIMIT_MB} MiB)" in message
    assert "MemoryError" in message
    assert "exited with status 7" in message
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("old numpy 1." in m for m in logs)  # the analysis' log, over Pipes
    assert any("Traceback" in m and "bad input" in m for m in logs)

    records = list(world.docdb.find(RESULTS, {}))
    assert len(records) == 1  # only the job that succeeded
    record = records[0]
    process = record["processing"]["data_processes"][0]
    code = process["code"]
    assert code["parameters"]["mode"] == "ok" and code["language_version"].startswith("3.12")
    assert code["container"]["container_type"] == "virtualenv"
    assert code["container"]["tag"].startswith("sha256:")
    assert code["run_script"] == "old_numpy.py"
    assert process["output_parameters"]["numpy_version"].startswith("1.")
    files = {o.url.rsplit("/", 1)[-1] for o in world.store.list_objects(record["location"])}
    assert files == {"summary.json", METADATA_FILE}
    assert b'"numpy": "1.' in world.store.get_bytes(f"{record['location']}/summary.json")
    # nothing half-written: one results folder, no claim left, no staging
    folders = {
        o.url.rsplit("/", 2)[-2]
        for o in world.store.list_objects(world.store.url("analysis-results"))
    }
    assert folders == {record["_id"]}
    assert list(world.docdb.find(claims_collection(RESULTS), {})) == []

    # Again: the successful job is skipped by its hash, the environment is reused.
    again = dg.materialize(
        [dispatch, analysis],
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        selection=[analysis.key],
    )
    logs = [e.message for e in instance.all_logs(again.run_id) if e.message]
    assert any("reused" in m and "environment" in m for m in logs)
    assert any("exists: skipping" in m for m in logs)
    assert len(list(world.docdb.find(RESULTS, {}))) == 1


TIMEOUT_S = 10.0


def test_a_job_over_its_time_limit_is_killed_and_the_next_runs(world, instance, envs_dir, tmp_path):
    config_file = tmp_path / "dispatch.yaml"
    config_file.write_text(
        CONFIG_FILE.read_text().split("      distributed_parameters:")[0]
        + "      distributed_parameters:\n        - mode: sleep\n        - mode: ok\n"
    )
    world.seed()
    dispatch, analysis, sensor = _assets(config_file)
    resources = world.resources(
        dispatch_config=str(config_file),
        analysis_modules=[MODULE],
        pipes={"environments_dir": str(envs_dir), "job_timeout_s": TIMEOUT_S},
    )
    key = _register_partitions(world, instance, sensor, resources)
    started = time.monotonic()
    result = dg.materialize(
        [dispatch, analysis],
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started
    assert not result.success and elapsed < 300  # the 600 s sleep was cut short
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.event_specific_data.error.to_string()
    assert "1 old_numpy_stats job(s) failed" in message
    assert f"job {registration.NAME} on s3://" in message  # names the job (its input)
    assert f"exceeded its time limit of {TIMEOUT_S:g} s and was killed" in message
    records = list(world.docdb.find(RESULTS, {}))
    assert [
        r["processing"]["data_processes"][0]["code"]["parameters"]["mode"] for r in records
    ] == ["ok"]  # the job after it ran in a fresh process
