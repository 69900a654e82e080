"""The analysis flow's Dagster definitions, built from settings and the dispatch config.

``aind_assets.definitions.build_definitions`` (the one wiring point) merges these in.
"""

import dagster as dg

from aind_assets.analysis.assets import DATA_ASSETS, DISPATCH_KEY, FLOW, build_assets
from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.config_checks import validate_dispatch_config
from aind_assets.analysis.models import load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.runs import flow_tags
from aind_assets.settings import Settings, examples_out_of_process

#: The partitioned job over dispatch and every analysis (``dagster job backfill -j ...``).
ANALYSIS_JOB = "aind_analysis"


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
    """Assets ``analysis_dispatch`` and ``analysis/<name>`` (one per registered analysis), one
    discovery sensor per dispatch spec, the partitioned job ``aind_analysis`` and the
    ``analysis`` resource. A broken dispatch config fails here, naming the file and field."""
    analysis_settings = analysis_settings or AnalysisSettings.from_env()
    registry = load_analyses(
        analysis_settings.analysis_modules, examples_out_of_process=examples_out_of_process()
    )
    config = load_dispatch_config(
        analysis_settings.dispatch_config, known_analyses=registry.names()
    )
    validate_dispatch_config(config, registry, analysis_settings.dispatch_config)
    assets = build_assets(config, list(registry))
    sensors = [
        build_discovery_sensor(
            spec,
            [dg.AssetKey(["analysis", a.name]) for a in spec.analyses],
            minimum_interval_seconds=analysis_settings.sensor_interval_s,
            running=analysis_settings.sensor_running,
        )
        for spec in config
    ]
    job = dg.define_asset_job(
        ANALYSIS_JOB,
        selection=dg.AssetSelection.assets(DISPATCH_KEY).downstream(),
        partitions_def=DATA_ASSETS,
        tags=flow_tags(FLOW),
        # One run per partition; its few steps run in the run's process (no process start-up
        # per step, which costs more than a small partition's work).
        executor_def=dg.in_process_executor,
        description="Dispatch and every analysis for the selected data-asset partitions "
        "(one run per partition: `dagster job backfill -j aind_analysis`).",
    )
    return dg.Definitions(
        assets=assets,
        sensors=sensors,
        jobs=[job],
        resources={"analysis": build_analysis_resource(settings, analysis_settings)},
    )
