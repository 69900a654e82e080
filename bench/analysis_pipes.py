"""Per-job overhead of an out-of-process analysis (warm environment) vs the same in process.

Run: ``PYTHONPATH=. python bench/analysis_pipes.py [N_JOBS]``. Inside one Dagster asset it
runs N jobs of a tiny analysis (bench/pipes_analysis/) three ways: in process, out of process
with jobs sharing one process (``batch=True``, the default), and one process per job
(``batch=False``). The environment is built before timing (warm). Results, deduplication and
records are the same code in every mode (wrapper.run_job), so this measures what differs: the
trip to the analysis' process and back. Writes bench/analysis_pipes_results.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg

from aind_assets.analysis.environments import AnalysisEnvironment, ensure_environment
from aind_assets.analysis.launchers import PipesLaunchSettings
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.analysis.pipes import out_of_process
from aind_assets.analysis.registry import AnalysisRegistry, register_analysis
from aind_assets.resources.object_store import ObjectStoreResource

HERE = Path(__file__).resolve().parent
CODE = HERE / "pipes_analysis"
sys.path.insert(0, str(CODE))
import bench_analysis  # noqa: E402  (the same function, for the in-process run)


class Spec(AnalysisSpecification):
    x: float = 1.0


class Outputs(AnalysisOutputs):
    n_files: int


def _definition(batch: bool):
    registry = AnalysisRegistry()
    env = AnalysisEnvironment(
        entrypoint="bench_analysis:run",
        requirements=CODE / "requirements.txt",
        paths=(CODE,),
        batch=batch,
    )
    register_analysis(
        name="bench_pipes", version="1", spec=Spec, outputs=Outputs, registry=registry
    )(bench_analysis.run)
    return dataclasses.replace(registry.get("bench_pipes"), environment=env)


def main(n_jobs: int = 40) -> dict[str, Any]:
    envs = Path(tempfile.mkdtemp(prefix="bench-envs-"))
    settings = PipesLaunchSettings(environments_dir=str(envs), memory_limit_mb=None)
    t0 = time.perf_counter()
    ensure_environment(
        "bench_pipes", _definition(True).environment, cache_dir=envs, uv=settings.uv_binary()
    )
    build_s = time.perf_counter() - t0
    task = AnalysisDispatchModel(
        s3_location=["s3://b/a"],
        asset_name=["a"],
        docdb_record_id=["1"],
        file_location=["s3://b/a/x.nwb"],
    )
    params = Spec(analysis_name="bench_pipes", x=2.0)
    timings: dict[str, float] = {}

    @dg.asset
    def bench(context):
        store = ObjectStoreResource(root=str(envs / "store"))
        for mode in ("in_process", "batched", "process_per_job"):
            definition = _definition(mode != "process_per_job")
            with tempfile.TemporaryDirectory() as tmp:
                ctx = SimpleNamespace(results_dir=Path(tmp))
                start = time.perf_counter()
                if mode == "in_process":
                    for _ in range(n_jobs):
                        definition.run(task, params, ctx)
                else:
                    with out_of_process(
                        context, definition, store=store, settings=settings
                    ) as runnable:
                        for _ in range(n_jobs):
                            out = runnable.run(task, params, ctx)
                            assert out == {"n_files": 1}, out
                timings[mode] = time.perf_counter() - start
        return dg.Output(None)

    assert dg.materialize([bench]).success
    per_job = {k: v / n_jobs for k, v in timings.items()}
    results = {
        "benchmark": "analysis_pipes",
        "jobs": n_jobs,
        "environment_build_s": round(build_s, 3),
        "seconds_total": {k: round(v, 3) for k, v in timings.items()},
        "seconds_per_job": {k: round(v, 4) for k, v in per_job.items()},
        "overhead_per_job_s": {
            "batched": round(per_job["batched"] - per_job["in_process"], 4),
            "process_per_job": round(per_job["process_per_job"] - per_job["in_process"], 4),
        },
        "goal_overhead_per_job_s": 0.5,
    }
    (HERE / "analysis_pipes_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 40), indent=2))
