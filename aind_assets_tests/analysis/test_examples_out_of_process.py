"""A packaged example analysis (``unit_quality``) run out of process, end to end on the real
servers, against the same jobs run in process: same outputs, same result files, same job Code
but for the environment it records (``container``, ``language``, ``language_version``).

The environment (``examples/code/requirements.txt``, pinned to the platform's versions, plus
``aind-assets-runtime[nwb,s3]``) is built with uv into the session's environment cache shared
with test_pipes.py; the first build on a machine downloads from PyPI, later ones link from
uv's cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg
from aind_data_schema.components.identifiers import Code

from aind_assets import lineage
from aind_assets.analysis import paging
from aind_assets.analysis.assets import build_assets
from aind_assets.analysis.config import EXAMPLE_DISPATCH_CONFIG
from aind_assets.analysis.examples import environments as example_envs
from aind_assets.analysis.keys import job_name
from aind_assets.analysis.models import load_dispatch_config
from aind_assets.analysis.registry import AnalysisDefinition, load_analyses
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.analysis.wrapper import METADATA_FILE
from aind_assets.settings import examples_out_of_process
from aind_assets_tests.analysis.conftest import World

NAME = "unit_quality"
SPEC = "ephys_units"
ENVIRONMENT_FIELDS = ("container", "language", "language_version")


def _run(
    world: World,
    instance: dg.DagsterInstance,
    definition: AnalysisDefinition,
    suffix: str,
    **overrides: Any,
) -> tuple[dg.ExecuteInJobResult, list[dict[str, Any]], str]:
    config = load_dispatch_config(
        EXAMPLE_DISPATCH_CONFIG, known_analyses=[NAME, "behavior_performance"]
    )
    dispatch, analysis = [a for a in build_assets(config, [definition]) if a.key.path[1] == SPEC]
    sensor = build_discovery_sensor(
        config[SPEC], job_name(SPEC), minimum_interval_seconds=30, running=False
    )
    collection = f"results_{suffix}"
    root = world.store.url(f"results-{suffix}")
    resources = world.resources(results_collection=collection, results_root=root, **overrides)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    ecephys = next(r for r in world.records if r["name"].startswith("ecephys_"))
    run = dg.materialize(
        [dispatch, analysis],
        partition_key=paging.partition_key_for(ecephys["name"]),
        instance=instance,
        resources=resources,
    )
    records = sorted(
        world.docdb.find(collection, {}),
        key=lambda r: r["processing"]["data_processes"][0]["code"]["parameters"][
            "isi_threshold_ms"
        ],
    )
    return run, records, root


def _files(world: World, record: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for info in world.store.list_objects(record["location"]):
        name = info.url.rsplit("/", 1)[-1]
        if name != METADATA_FILE:
            out[name] = world.store.get_bytes(info.url)
    return out


def test_an_example_analysis_gives_the_same_results_out_of_process(world, instance, envs_dir):
    assert not examples_out_of_process({})  # the default: in process
    assert examples_out_of_process({"AIND_EXAMPLES_OUT_OF_PROCESS": "1"})
    world.seed()
    # What the platform registers with AIND_EXAMPLES_OUT_OF_PROCESS=1, then without it (the
    # default, restored for the other tests: the registry is process-wide).
    external = load_analyses(examples_out_of_process=True).get(NAME)
    registered = load_analyses().get(NAME)
    assert registered.environment is None
    assert external.environment == example_envs.environment(NAME)
    assert dataclasses.replace(external, environment=None) == registered

    _, in_process, _ = _run(world, instance, registered, "in")
    run, out_of_process, _ = _run(
        world, instance, external, "out", pipes={"environments_dir": str(envs_dir)}
    )
    assert len(in_process) == len(out_of_process) == 2  # one file, two ISI thresholds
    logs = [e.message for e in instance.all_logs(run.run_id) if e.message]
    assert any(f"{NAME}: environment" in m for m in logs)  # it did run out of process

    for inside, outside in zip(in_process, out_of_process, strict=True):
        p_in = inside["processing"]["data_processes"][0]
        p_out = outside["processing"]["data_processes"][0]
        # the same outputs; output_location names the results folder (the job's hash)
        assert p_out["output_parameters"].pop("output_location").endswith(outside["_id"])
        assert p_in["output_parameters"].pop("output_location").endswith(inside["_id"])
        assert p_out["output_parameters"] == p_in["output_parameters"]
        assert p_in["output_parameters"]["n_units"] > 0
        files = _files(world, outside)
        assert files == _files(world, inside)  # CSV and PNG, byte for byte
        assert set(files) == {"unit_metrics.csv", "unit_quality.png"}
        # The job's Code: equal but for the environment, recorded only out of process.
        code_in, code_out = dict(p_in["code"]), dict(p_out["code"])
        assert code_out["container"]["container_type"] == "virtualenv"
        assert code_out["language_version"]
        assert code_in["container"] is None and code_in.get("language_version") is None
        stripped = {**code_out, **{k: code_in.get(k) for k in ENVIRONMENT_FIELDS}}
        assert stripped == code_in
        assert lineage.record_name(Code.model_validate(stripped)) == inside["_id"]
        assert outside["_id"] != inside["_id"]  # the environment is part of the identity
