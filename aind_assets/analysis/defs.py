"""The analysis flow's Dagster definitions, built from settings and the dispatch config.

``aind_assets.definitions.build_definitions`` (the one wiring point) merges these in.
"""

import dagster as dg

from aind_assets.analysis.assets import FLOW, build_assets
from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.config_checks import validate_dispatch_config
from aind_assets.analysis.keys import (
    analysis_key,
    dispatch_key,
    job_name,
    partitions_def,
)
from aind_assets.analysis.models import DispatchSpec, load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.analysis.sources import build_source_asset
from aind_assets.resources.urls import is_s3
from aind_assets.runs import flow_tags
from aind_assets.settings import Settings, examples_out_of_process


def build_analysis_resource(
    settings: Settings, analysis_settings: AnalysisSettings, *, for_dagster: bool = True
) -> AnalysisResource:
    return AnalysisResource(
        docdb=settings.docdb(for_dagster=for_dagster),
        object_store=settings.object_store(for_dagster=for_dagster),
        assets_collection=settings.assets_collection,
        results_collection=settings.results_collection,
        partitions_collection=analysis_settings.partitions_collection,
        results_root=settings.results_root,
        dispatch_config=str(analysis_settings.dispatch_config),
        analysis_modules=list(analysis_settings.analysis_modules),
        page_size=analysis_settings.page_size,
        tick_budget_s=analysis_settings.tick_budget_s,
        request_runs=analysis_settings.request_runs,
        remove_gone=analysis_settings.remove_gone,
        sweep_batch=analysis_settings.sweep_batch,
        claim_timeout_s=analysis_settings.claim_timeout_s,
        experimenter=settings.experimenter,
        num_parallel_workers=settings.num_parallel_workers,
        run_batch_size=settings.run_batch_size,
        pipes={
            "environments_dir": str(settings.data_dir / "analysis-envs"),
            **analysis_settings.pipes,
        },
    )


def build_analysis_definitions(
    settings: Settings, analysis_settings: AnalysisSettings | None = None
) -> dg.Definitions:
    """Per dispatch spec: its source asset, dispatch and analyses on the spec's own partitions,
    its job ``analysis_<spec>`` and discovery sensor ``discover_<spec>``; and the ``analysis``
    resource. A broken dispatch config fails here, naming the file and field."""
    analysis_settings = analysis_settings or AnalysisSettings.from_env()
    registry = load_analyses(
        analysis_settings.analysis_modules, examples_out_of_process=examples_out_of_process()
    )
    config = load_dispatch_config(
        analysis_settings.dispatch_config, known_analyses=registry.names()
    )
    validate_dispatch_config(config, registry, analysis_settings.dispatch_config)
    storage = "s3" if is_s3(settings.results_root) else None
    assets = build_assets(config, list(registry), storage)
    jobs = [build_spec_job(spec) for spec in config]
    sensors = [
        build_discovery_sensor(
            spec,
            job.name,
            minimum_interval_seconds=analysis_settings.sensor_interval_s,
            running=analysis_settings.sensor_running,
        )
        for spec, job in zip(config, jobs, strict=True)
    ]
    return dg.Definitions(
        assets=[*(build_source_asset(spec) for spec in config), *assets],
        sensors=sensors,
        jobs=jobs,
        resources={"analysis": build_analysis_resource(settings, analysis_settings)},
    )


def build_spec_job(spec: DispatchSpec):  # noqa: ANN201 - Dagster's job type is private
    """Job ``analysis_<spec>``: the spec's dispatch and analyses on its partitions (the runs of
    its discovery sensor, and `dg launch --job analysis_<spec> --partition-range ...`)."""
    keys = [dispatch_key(spec.name), *(analysis_key(spec.name, a.name) for a in spec.analyses)]
    what = "group" if spec.group_by else "data asset"
    return dg.define_asset_job(
        job_name(spec.name),
        selection=dg.AssetSelection.assets(*keys),
        partitions_def=partitions_def(spec.name),
        tags=flow_tags(FLOW),
        # A run's few steps run in the run's process (no process start-up per step, which
        # costs more than a small partition's work).
        executor_def=dg.in_process_executor,
        description=(
            f"Dispatch spec `{spec.name}`: builds the jobs of each selected {what} and runs "
            f"{', '.join(a.name for a in spec.analyses)} on them. Started by sensor "
            f"`discover_{spec.name}` for new or changed partitions, or by hand on a "
            "partition or a range."
        ),
    )
