"""The analysis registry, parameter validation and merge order, the example analyses' numbers,
settings, and results queries (the latter on the real Mongo-wire server)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from aind_assets.analysis.config import AnalysisSettings, AnalysisSettingsError
from aind_assets.analysis.examples.behavior_performance import session_performance
from aind_assets.analysis.examples.unit_quality import (
    UnitQualitySpecification,
    passing,
    unit_metrics,
)
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.analysis.registry import (
    AnalysisParameterError,
    AnalysisRegistry,
    UnknownAnalysisError,
    load_analyses,
)
from aind_assets.analysis.results import build_filter, format_table, parse_parameter, query_results
from aind_assets_tests.analysis.test_wrapper import job, make_task

RESULTS = "analysis_results"


class Spec(AnalysisSpecification):
    threshold: float = Field(0.5, gt=0)
    label: str = "x"


class Outputs(AnalysisOutputs):
    n: int


def fresh(version: str = "1.0") -> AnalysisRegistry:
    registry = AnalysisRegistry()

    @registry.register(
        name="demo", version=version, spec=Spec, outputs=Outputs, defaults={"label": "code"}
    )
    def run(task, params, ctx):
        return Outputs(n=1)

    return registry


def test_packaged_analyses_are_registered():
    registry = load_analyses()
    assert {"unit_quality", "behavior_performance"} <= set(registry.names())
    uq = registry.get("unit_quality")
    assert uq.run_script == "aind_assets/analysis/examples/unit_quality.py"
    assert uq.description.startswith("ISI violations")


def test_code_version_follows_version_and_fixed_parameters():
    a = fresh("1.0").get("demo")
    assert a.code_version({"s": {"threshold": 1}}) == a.code_version({"s": {"threshold": 1}})
    assert a.code_version({"s": {"threshold": 1}}) != a.code_version({"s": {"threshold": 2}})
    assert a.code_version({}) != fresh("1.1").get("demo").code_version({})
    assert a.code_version({}).startswith("1.0-")


def test_parameter_merge_order_code_fixed_run_config_distributed():
    definition = fresh().get("demo")
    task = AnalysisDispatchModel(
        s3_location=["s3://b"],
        asset_name=["b"],
        docdb_record_id=["1"],
        file_location=["s3://b/f.nwb"],
        distributed_parameters={"threshold": 3.0},
    )
    dispatched = definition.dispatch_code(task, {"threshold": 1.0, "label": "fixed"})
    task = task.model_copy(update={"analysis_code": dispatched})
    code = definition.job_code(task, {"threshold": 2.0, "dry_run": True})
    merged = code.parameters.model_dump()
    assert merged == {
        "analysis_name": "demo",
        "label": "fixed",
        "threshold": 3.0,
        "file_location": ["s3://b/f.nwb"],
    }
    params = definition.validate_parameters(merged)
    assert isinstance(params, Spec) and params.threshold == 3.0
    # without later layers, the analysis-code defaults stand
    assert definition.validate_parameters(definition.code_defaults()).label == "code"


def test_invalid_parameter_names_the_field():
    definition = fresh().get("demo")
    with pytest.raises(AnalysisParameterError, match="invalid parameters for analysis") as err:
        definition.validate_parameters({"analysis_name": "demo", "threshold": -1}, where="job 7")
    message = str(err.value)
    assert "'demo'" in message and "job 7" in message
    assert "threshold" in message and "greater than 0" in message and "-1" in message


def test_registry_errors():
    registry = fresh()
    with pytest.raises(UnknownAnalysisError, match="registered: demo"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):

        @registry.register(name="demo", version="2", spec=Spec, outputs=Outputs)
        def other(task, params, ctx):
            return {}

    with pytest.raises(ValueError, match="must start with a letter"):
        registry.register(name="bad-name", version="1", spec=Spec, outputs=Outputs)(lambda *a: {})
    with pytest.raises(TypeError, match="subclass of AnalysisSpecification"):
        registry.register(name="x", version="1", spec=Outputs, outputs=Outputs)(lambda *a: {})


def test_job_code_keeps_the_merge_order_unvalidated_as_the_package():
    definition = fresh().get("demo")
    task = AnalysisDispatchModel(
        s3_location=["s3://b/a"],
        asset_name=["a"],
        docdb_record_id=["1"],
        file_location=["s3://b/a/x.nwb"],
        distributed_parameters={"threshold": 3, "extra": 1},
    )
    dispatched = definition.dispatch_code(task, {"label": "y", "dry_run": True, "threshold": 1})
    assert list(dispatched.parameters.model_dump().items()) == [
        ("analysis_name", "demo"),
        ("label", "y"),
        ("threshold", 3),
        ("file_location", ["s3://b/a/x.nwb"]),
        ("extra", 1),
    ]
    job = definition.job_code(task.model_copy(update={"analysis_code": dispatched}), {"z": 0})
    assert list(job.parameters.model_dump()) == [
        "analysis_name",
        "label",
        "threshold",
        "file_location",
        "extra",
        "z",
    ]
    assert [d.url for d in job.input_data] == ["s3://b/a"]
    # without run config the job's Code is the dispatched one: the same hash
    plain = definition.job_code(task.model_copy(update={"analysis_code": dispatched}))
    assert plain.model_dump_json() == dispatched.model_dump_json()


def test_unit_metrics_counts_refractory_violations():
    clean = np.arange(0, 10, 0.1)  # 100 spikes, 100 ms apart
    dirty = np.sort(np.concatenate([clean, clean[:10] + 0.0005]))  # 10 ISIs of 0.5 ms
    table = unit_metrics([clean, dirty, np.array([1.0])], [0, 1, 2], 10.0, 1.5)
    assert table["n_spikes"].tolist() == [100, 110, 1]
    assert table["firing_rate_hz"].tolist() == [10.0, 11.0, 0.1]
    assert table["isi_violations"].tolist() == [0, 10, 0]
    assert table.loc[1, "isi_violation_ratio"] == pytest.approx(10 / 109)
    params = UnitQualitySpecification(
        analysis_name="uq", min_spikes=50, max_isi_violation_ratio=0.01
    )
    assert passing(table, params).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="duration"):
        unit_metrics([clean], [0], 0.0, 1.5)


def test_session_performance():
    trials = pd.DataFrame(
        {
            "choice": ["left", "right", "none", "left"],
            "correct": [True, False, False, True],
            "rewarded": [True, False, False, False],
            "reaction_time": [0.3, 0.5, np.nan, 0.4],
        }
    )
    numbers = session_performance(trials)
    assert numbers == {
        "n_trials": 4,
        "n_responded": 3,
        "response_rate": 0.75,
        "accuracy": 0.6667,
        "reward_rate": 0.25,
        "median_reaction_time_s": 0.4,
        "left_choice_fraction": 0.6667,
    }
    with pytest.raises(ValueError, match="lacks column"):
        session_performance(trials.drop(columns=["rewarded"]))


def test_analysis_settings_from_env(tmp_path):
    default = AnalysisSettings.from_env({})
    assert default.dispatch_config.name == "dispatch.yaml" and not default.sensor_running
    config = tmp_path / "d.json"
    s = AnalysisSettings.from_env(
        {
            "AIND_ANALYSIS_DISPATCH_CONFIG": str(config),
            "AIND_ANALYSIS_SENSOR_RUNNING": "yes",
            "AIND_ANALYSIS_REMOVE_GONE": "1",
            "AIND_ANALYSIS_PAGE_SIZE": "250",
            "AIND_ANALYSIS_MODULES": "a.b, c",
        }
    )
    assert s.dispatch_config == config and s.sensor_running and s.remove_gone
    assert s.page_size == 250 and s.analysis_modules == ["a.b", "c"]
    with pytest.raises(AnalysisSettingsError, match="AIND_ANALYSIS_PAGE_SIZE='many'"):
        AnalysisSettings.from_env({"AIND_ANALYSIS_PAGE_SIZE": "many"})
    with pytest.raises(AnalysisSettingsError, match="AIND_ANALYSIS_SENSOR_RUNNING"):
        AnalysisSettings.from_env({"AIND_ANALYSIS_SENSOR_RUNNING": "maybe"})


def test_parse_parameter_and_filter():
    assert parse_parameter("t=2.0") == ("t", 2.0)
    assert parse_parameter("m=fast") == ("m", "fast")
    assert parse_parameter("x=[1, 2]") == ("x", [1, 2])
    with pytest.raises(ValueError, match="name=value"):
        parse_parameter("novalue")
    assert build_filter() == {}
    assert build_filter(input_asset="s3://b/a/") == {
        "processing.data_processes.0.code.input_data.url": "s3://b/a"
    }


def test_query_results_and_the_cli(local_store, docdb, mongo_server_uri, tmp_path):
    a, b = make_task(local_store, "asset_a"), make_task(local_store, "asset_b", b"xy")
    for task in (a, b):
        for factor in (2, 3):
            assert job(local_store, docdb, task, factor=factor)().result.status == "completed"
    everything = query_results(docdb, RESULTS)
    assert len(everything) == 4
    assert [r["created"] for r in everything] == sorted(
        (r["created"] for r in everything), reverse=True
    )
    assert len(query_results(docdb, RESULTS, analysis_name="count_bytes")) == 4
    assert query_results(docdb, RESULTS, analysis_name="other") == []
    by_param = query_results(docdb, RESULTS, parameter_values={"factor": 3})
    assert len(by_param) == 2
    # `parameters` is the package's filter: the whole parameters document, in order
    whole = by_param[0]["processing"]["data_processes"][0]["code"]["parameters"]
    assert [r["_id"] for r in query_results(docdb, RESULTS, parameters=whole)] == [
        by_param[0]["_id"]
    ]
    assert query_results(docdb, RESULTS, parameters=dict(reversed(whole.items()))) == []
    assert query_results(docdb, RESULTS, parameters={"factor": 3}) == []
    by_asset = query_results(docdb, RESULTS, input_asset="asset_b")
    assert {r["input_asset_names"][0] for r in by_asset} == {"asset_b"}
    assert len(query_results(docdb, RESULTS, input_asset=a.s3_location[0])) == 2
    assert len(query_results(docdb, RESULTS, code_version="1.0")) == 4
    assert query_results(docdb, RESULTS, code_version="9") == []
    assert len(query_results(docdb, RESULTS, limit=1)) == 1

    # latest_only: analysis-pipeline-utils' aggregation (newest per
    # $processing.data_processes.0.code; what that path yields depends on the server, see
    # results.latest_pipeline); test_package_parity compares it with the package itself
    newer = AnalysisRegistry()
    from aind_assets_tests.analysis import test_wrapper

    old = test_wrapper.REGISTRY.get("count_bytes")
    newer.add(old.__class__(**{**old.__dict__, "version": "1.1"}))
    monkey = test_wrapper.REGISTRY
    test_wrapper.REGISTRY = newer
    try:
        assert job(local_store, docdb, a, factor=2)().result.status == "completed"
    finally:
        test_wrapper.REGISTRY = monkey
    matching = query_results(docdb, RESULTS, input_asset="asset_a")
    latest = query_results(docdb, RESULTS, input_asset="asset_a", latest_only=True)
    assert len(matching) == 3
    ids = [r["_id"] for r in latest]
    assert ids[0] == matching[0]["_id"] and set(ids) <= {r["_id"] for r in matching}
    assert latest[0]["processing"]["data_processes"][0]["code"]["version"] == "1.1"

    table = format_table(everything)
    assert table.splitlines()[0].split()[:3] == ["created", "analysis", "version"]
    assert len(table.splitlines()) == 2 + 4 and "asset_b" in table

    env = {
        "AIND_DOCDB_URI": mongo_server_uri,
        "AIND_DOCDB_DATABASE": docdb.database,
        "AIND_DATA_DIR": str(tmp_path),
        "PATH": "",
    }
    out = subprocess.run(
        [sys.executable, "-m", "aind_assets.cli", "results", "--param", "factor=3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(out.stdout)) == 2
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aind_assets.cli",
            "results",
            "--input-asset",
            "asset_a",
            "--latest-only",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("created") and len(lines) == 2 + len(latest)  # header, rule
