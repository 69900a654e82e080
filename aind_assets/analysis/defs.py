"""The analysis flow's Dagster definitions, built from settings and the dispatch config.

``aind_assets.definitions.build_definitions`` (the one wiring point) merges these in.
"""

import warnings
from collections.abc import Mapping

import dagster as dg

from aind_assets.analysis.assets import FLOW, build_assets
from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.config_checks import validate_dispatch_config
from aind_assets.analysis.keys import (
    GROUP,
    SPEC_TAG,
    analysis_key,
    dispatch_key,
    job_name,
    member_versions,
    partitions_def,
    source_key,
)
from aind_assets.analysis.models import DispatchSpec, load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.sensors import build_discovery_sensor
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


def build_source_asset(spec: DispatchSpec) -> dg.SourceAsset:
    """``analysis/<spec>/data_assets``: the DocDB records the spec selects, by partition.

    A partition's data version is the hash of its DocDB members (ids, names, locations and group
    metadata: :attr:`DiscoveredPartition.members_hash`), so it changes exactly when discovery sees
    the partition change (a new session joins a subject, a record moves). Dagster then marks the
    partition's ``dispatch`` (and through it the analyses) stale in the UI.

    Two ways a version is recorded, both per partition (Dagster 1.13 supports partitioned
    observations of a source asset: ``DataVersionsByPartition``):

    * the discovery sensor reports an observation for every new or changed partition of its tick
      (``SensorResult(asset_events=...)``), so versions follow DocDB without extra work;
    * "Observe" in the UI (or a job selecting the source) reads the spec's partition map and
      reports every registered partition's version.

    Discovery itself stays a sensor: it *adds* dynamic partitions, which no automation condition
    can do.
    """
    with warnings.catch_warnings():  # observable_source_asset is "beta" in Dagster 1.13
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        return _source_asset(spec)


def _source_asset(spec: DispatchSpec) -> dg.SourceAsset:
    what = "group (" + ", ".join(spec.group_by) + ")" if spec.group_by else "data asset"

    @dg.observable_source_asset(
        key=source_key(spec.name),
        partitions_def=partitions_def(spec.name),
        group_name=GROUP,
        description=(
            f"DocDB data assets selected by dispatch spec `{spec.name}`, one partition per "
            f"{what}. The data version of a partition is the hash of its DocDB records; the "
            f"sensor `discover_{spec.name}` records it when the records change."
        ),
        metadata={
            "dispatch_spec": spec.name,
            "query": dg.MetadataValue.json(spec.resolved_query()),
        },
        # kinds are tags on a source asset (its decorator has no ``kinds``)
        tags={"aind/flow": "analysis", SPEC_TAG: spec.name, "dagster/kind/mongodb": ""},
    )
    def _observe(
        context: dg.AssetExecutionContext, analysis: AnalysisResource
    ) -> dg.DataVersionsByPartition:
        registered = set(context.instance.get_dynamic_partitions(spec.name))
        pmap = analysis.partition_map()
        chunks: list[Mapping] = []
        after = None
        while page := pmap.chunks(spec.name, after=after, limit=100):
            chunks.extend(page)
            after = page[-1]["_id"]
        versions = {
            k: dg.DataVersion(v) for k, v in member_versions(chunks).items() if k in registered
        }
        context.log.info(f"{spec.name}: data versions of {len(versions)} partition(s)")
        return dg.DataVersionsByPartition(versions)

    return _observe
