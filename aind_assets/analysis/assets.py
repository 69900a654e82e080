"""Dagster assets of the AIND analysis flow (thin: the work is in dispatch.py and wrapper.py).

* ``analysis_dispatch`` — per data-asset partition, the jobs (``AnalysisDispatchModel``s);
* ``analysis/<name>`` — one asset per registered analysis, running its jobs of the partition.

Both accept several partitions in one run (``BackfillPolicy.single_run()``, needed by
``dagster asset materialize --partition-range``): they then return a dict keyed by partition key,
which the IO manager writes partition by partition.
"""

import contextlib
import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field, TypeAdapter

from aind_assets import lineage
from aind_assets.analysis.dispatch import PartitionDispatch, dispatch_partitions
from aind_assets.analysis.launchers import PipesLaunchSettings
from aind_assets.analysis.models import AnalysisDispatchModel, DispatchConfig
from aind_assets.analysis.pipes import environment_container, out_of_process
from aind_assets.analysis.registry import AnalysisDefinition, AnalysisParameterError, canonical_json
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.wrapper import (
    UNKNOWN_EXPERIMENTER,
    JobOutcome,
    JobResult,
    plots_markdown,
    run_job,
)

#: The one partitions definition of the flow: a data asset, or a group of them.
# The name on its own: Dagster types ``DynamicPartitionsDefinition.name`` as optional.
DATA_ASSETS_PARTITIONS = "data_assets"
DATA_ASSETS = dg.DynamicPartitionsDefinition(name=DATA_ASSETS_PARTITIONS)
DISPATCH_KEY = dg.AssetKey(["analysis_dispatch"])
GROUP = "aind_analysis"
#: Run tag naming the experimenter of the run's records (else AIND_EXPERIMENTER, else unknown).
EXPERIMENTER_TAG = "aind/experimenter"
#: The flow tag value of this flow's runs (the production profile limits concurrency by it).
FLOW = "analysis"
#: Bumped when the dispatch logic changes (with the config hash, it is dispatch's code_version).
DISPATCH_LOGIC_VERSION = "1"

_MODELS = TypeAdapter(list[AnalysisDispatchModel])


@contextlib.contextmanager
def _backfill_policy_is_beta():
    """BackfillPolicy is "beta" in Dagster 1.13; --partition-range needs it: used knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
        yield


class AnalysisRunConfig(dg.Config):
    """Run config of an analysis asset (the "run config" layer of the parameter merge)."""

    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters overriding the analysis defaults and the fixed parameters "
        "(distributed parameter sets still win).",
    )
    dry_run: bool = Field(
        default=False, description="Run the analysis but write no results and no record."
    )


class AnalysisPartitionResult(BaseModel):
    """The output of an analysis asset for one partition."""

    analysis: str
    version: str
    partition_key: str
    status: Literal["completed", "skipped", "dry_run", "mixed", "not_applicable", "no_jobs"]
    jobs: list[JobResult] = Field(default_factory=list)
    note: str | None = None


def _one_or_many(keys: Sequence[str], values: Mapping[str, Any]) -> Any:
    return values[keys[0]] if len(keys) == 1 else dict(values)


def _config_hash(config: DispatchConfig) -> str:
    """Hash of what the config selects and runs (queries resolved: file paths do not count)."""
    specs = []
    for spec in config:
        dumped = spec.model_dump(mode="json", exclude={"query_file", "asset_ids_csv"})
        dumped["query"] = spec.resolved_query()
        specs.append(dumped)
    return hashlib.sha256(canonical_json(specs).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# analysis_dispatch
# --------------------------------------------------------------------------------------------


def _dispatch_metadata(results: Mapping[str, PartitionDispatch]) -> dict[str, Any]:
    parts = list(results.values())
    models = [m for p in parts for m in p.models]
    warnings = [w for p in parts for w in p.warnings]
    per_analysis: Counter[str] = Counter()
    for p in parts:
        per_analysis.update(p.tasks_per_analysis())
    meta: dict[str, Any] = {
        "jobs": len(models),
        "jobs_per_analysis": dg.MetadataValue.json(dict(sorted(per_analysis.items()))),
        "dispatch_rows": sum(p.rows for p in parts),
        "data_assets": sum(p.assets for p in parts),
        "files": sum(p.files for p in parts),
        "specs": ", ".join(sorted({s for p in parts for s in p.specs})) or "none",
        "skipped_assets": dg.MetadataValue.json(
            sorted({a for p in parts for a in p.skipped_assets})
        ),
        lineage.META_INPUTS: sorted({loc for m in models for loc in m.s3_location}),
    }
    if models:
        meta["sample"] = dg.MetadataValue.json(models[0].model_dump(mode="json"))
    if warnings:
        meta["warnings"] = dg.MetadataValue.md("\n".join(f"* {w}" for w in warnings))
    if len(parts) > 1:
        meta["partitions"] = len(parts)
        meta["jobs_per_partition"] = dg.MetadataValue.json(
            {k: len(p.models) for k, p in results.items()}
        )
    return meta


def build_dispatch_asset(config: DispatchConfig) -> dg.AssetsDefinition:
    with _backfill_policy_is_beta():
        return _dispatch_asset(config)


def _dispatch_asset(config: DispatchConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name="analysis_dispatch",
        partitions_def=DATA_ASSETS,
        group_name=GROUP,
        code_version=f"{DISPATCH_LOGIC_VERSION}-{_config_hash(config)}",
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"python"},
        description=(
            "The analysis jobs of a data asset (or group): AnalysisDispatchModels with the files "
            "of each asset, one per analysis x distributed parameter set of its dispatch spec."
        ),
        metadata={lineage.META_STAGE: "Processing", lineage.META_PROCESS_TYPE: "Other"},
    )
    def analysis_dispatch(context: dg.AssetExecutionContext, analysis: AnalysisResource):
        dispatch_config, registry = analysis.load()
        pmap = analysis.partition_map()
        keys = list(context.partition_keys)
        results = dispatch_partitions(
            {key: pmap.get(key) for key in keys},
            config=dispatch_config,
            registry=registry,
            docdb=analysis.docdb,
            store=analysis.object_store,
            assets_collection=analysis.assets_collection,
        )
        for key, result in results.items():
            for warning in result.warnings:
                context.log.warning(f"{key}: {warning}")
            if not result.models:
                context.log.warning(f"{key}: no analysis job (see the warnings above)")
        failed = {k: r.errors for k, r in results.items() if r.errors}
        if failed:
            raise dg.Failure(
                description=f"bad input in {len(failed)} partition(s):\n"
                + "\n".join(f"- {k}: {e}" for k, errs in failed.items() for e in errs),
                metadata={"failed_partitions": dg.MetadataValue.json(failed)},
            )
        context.add_output_metadata(_dispatch_metadata(results))
        return _one_or_many(keys, {k: r.models for k, r in results.items()})

    return analysis_dispatch


# --------------------------------------------------------------------------------------------
# analysis/<name>
# --------------------------------------------------------------------------------------------


def _status(jobs: Sequence[JobResult]) -> str:
    kinds = {j.status for j in jobs}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _job_table(jobs: Sequence[JobResult]) -> str:
    lines = ["| status | record | inputs | note |", "| --- | --- | --- | --- |"]
    for job in jobs:
        inputs = ", ".join(u.rsplit("/", 1)[-1] for u in (job.file_location or job.s3_location))
        lines.append(f"| {job.status} | `{job.record_name}` | {inputs} | {job.note or ''} |")
    return "\n".join(lines)


def _analysis_metadata(
    results: Mapping[str, AnalysisPartitionResult], images: list, inputs: list[str]
) -> dict[str, Any]:
    jobs = [j for r in results.values() for j in r.jobs]
    counts = Counter(j.status for j in jobs)
    meta: dict[str, Any] = {
        "status": " / ".join(sorted({r.status for r in results.values()})),
        "jobs": len(jobs),
        "completed": counts.get("completed", 0),
        "skipped": counts.get("skipped", 0),
        "dry_run": counts.get("dry_run", 0),
        lineage.META_INPUTS: inputs,
    }
    if jobs:
        meta["job_records"] = dg.MetadataValue.md(_job_table(jobs))
        meta["record_names"] = dg.MetadataValue.json([j.record_name for j in jobs])
    existing = [j.record_name for j in jobs if j.status == "skipped"]
    if existing:
        meta["existing_records"] = dg.MetadataValue.json(existing)
    urls = [u for j in jobs for u in j.plots]
    if urls:
        meta["plot_urls"] = dg.MetadataValue.json(urls)
    if images:
        meta["plot"] = dg.MetadataValue.md(plots_markdown(images))
    locations = [j.results_location for j in jobs if j.results_location and j.status != "dry_run"]
    if locations:
        meta["results"] = dg.MetadataValue.json(locations)
    notes = [r.note for r in results.values() if r.note]
    if notes:
        meta["note"] = "; ".join(notes)
    if len(results) > 1:
        meta["partition_status"] = dg.MetadataValue.json({k: r.status for k, r in results.items()})
    return meta


def _run_partition(
    context: dg.AssetExecutionContext,
    definition: AnalysisDefinition,
    key: str,
    models: list[AnalysisDispatchModel],
    config: AnalysisRunConfig,
    analysis: AnalysisResource,
    images: list,
    failures: list[str],
    inputs: set[str],
) -> AnalysisPartitionResult:
    base = {"analysis": definition.name, "version": definition.version, "partition_key": key}
    if not models:
        return AnalysisPartitionResult(
            status="no_jobs", note=f"{key}: dispatch gave no job (no data files?)", **base
        )
    tasks = [
        (m, code)
        for m in models
        if (code := m.analysis_code) is not None and code.name == definition.name
    ]
    if not tasks:
        return AnalysisPartitionResult(
            status="not_applicable",
            note=f"{key}: the dispatch spec(s) of this partition do not run {definition.name}",
            **base,
        )
    # Validate every job's parameters before running any (a bad parameter fails the step).
    prepared = []
    settings = PipesLaunchSettings.model_validate(analysis.pipes)
    env = definition.environment
    recorded = environment_container(env, settings.launcher) if env is not None else {}
    for task, code in tasks:
        if code.version and code.version != definition.version:
            context.log.warning(
                f"{key}: dispatched for {definition.name} {code.version}, running "
                f"{definition.version}: re-materialize analysis_dispatch"
            )
        job_code = definition.job_code(task, config.parameters)
        merged = job_code.parameters.model_dump() if job_code.parameters else {}
        if recorded:  # the environment is part of the job's Code (and so of its identity)
            job_code = job_code.model_validate({**job_code.model_dump(), **recorded})
        where = f"partition {key} ({', '.join(task.file_location or task.s3_location)})"
        prepared.append((task, job_code, definition.validate_parameters(merged, where=where)))
    dispatch_config, _ = analysis.load()
    results_root = dispatch_config.output_root(definition.name) or analysis.results_root
    experimenter = (
        context.run.tags.get(EXPERIMENTER_TAG) or analysis.experimenter or UNKNOWN_EXPERIMENTER
    )
    jobs: list[JobResult] = []
    for task, job_code, params in prepared:
        inputs.update(task.s3_location)
        try:
            outcome: JobOutcome = run_job(
                definition,
                task,
                params,
                code=job_code,
                docdb=analysis.docdb,
                store=analysis.object_store,
                results_root=results_root,
                results_collection=analysis.results_collection,
                dry_run=config.dry_run,
                experimenters=[experimenter],
                run_id=context.run.run_id,
                claim_timeout_s=analysis.claim_timeout_s,
                record_fields={
                    "dagster": {
                        "run_id": context.run.run_id,
                        "asset_key": context.asset_key.to_user_string(),
                        "partition_key": key,
                    }
                },
                log=context.log,
            )
        except Exception as exc:  # noqa: BLE001 - reported per job, the step fails below
            message = f"{key}: {exc}"
            context.log.error(message)
            failures.append(message)
            continue
        jobs.append(outcome.result)
        if len(images) < 2:
            images.extend(outcome.images[: 2 - len(images)])
    return AnalysisPartitionResult(status=_status(jobs) if jobs else "no_jobs", jobs=jobs, **base)


def build_analysis_asset(
    definition: AnalysisDefinition, fixed_by_spec: Mapping[str, Mapping[str, Any]]
) -> dg.AssetsDefinition:
    """The asset ``analysis/<name>`` of one registered analysis."""
    with _backfill_policy_is_beta():
        return _analysis_asset(definition, fixed_by_spec)


def _analysis_asset(
    definition: AnalysisDefinition, fixed_by_spec: Mapping[str, Mapping[str, Any]]
) -> dg.AssetsDefinition:
    @dg.asset(
        name=definition.name,
        key_prefix=["analysis"],
        partitions_def=DATA_ASSETS,
        group_name=GROUP,
        code_version=definition.code_version(fixed_by_spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={"analysis_dispatch": dg.AssetIn(key=DISPATCH_KEY)},
        kinds={"python"},
        description=(definition.description or f"The {definition.name} analysis")
        + f" (version {definition.version}). Results and records are de-duplicated by the "
        "hash of each job's Code.",
        metadata={
            "analysis/version": definition.version,
            "analysis/parameters_model": definition.spec.__name__,
            "analysis/fixed_parameters": dg.MetadataValue.json(
                json.loads(canonical_json(dict(fixed_by_spec)))
            ),
            lineage.META_STAGE: "Analysis",
            lineage.META_PROCESS_TYPE: "Analysis",
        },
    )
    def _analysis(
        context: dg.AssetExecutionContext,
        config: AnalysisRunConfig,
        analysis: AnalysisResource,
        analysis_dispatch,
    ):
        keys = list(context.partition_keys)
        loaded = analysis_dispatch if len(keys) > 1 else {keys[0]: analysis_dispatch}
        results: dict[str, AnalysisPartitionResult] = {}
        images: list = []
        failures: list[str] = []
        inputs: set[str] = set()
        settings = PipesLaunchSettings.model_validate(analysis.pipes)
        with out_of_process(
            context, definition, store=analysis.object_store, settings=settings
        ) as runnable:
            for key in keys:
                models = _MODELS.validate_python(loaded.get(key) or [])
                try:
                    results[key] = _run_partition(
                        context, runnable, key, models, config, analysis, images, failures, inputs
                    )
                except AnalysisParameterError as exc:
                    raise dg.Failure(description=str(exc)) from exc
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} {definition.name} job(s) failed:\n"
                + "\n".join(f"- {f}" for f in failures),
                metadata={"failed_jobs": dg.MetadataValue.json(failures)},
            )
        # An Output, not a bare value: a Pipes session asks for a typed event stream.
        return dg.Output(
            _one_or_many(keys, results),
            metadata=_analysis_metadata(results, images, sorted(inputs)),
        )

    return _analysis


def fixed_parameters_by_spec(config: DispatchConfig, name: str) -> dict[str, dict[str, Any]]:
    """``{spec name: fixed parameters}`` of the specs running analysis ``name``."""
    return {
        spec.name: dict(spec.analysis(name).fixed_parameters)
        for spec in config
        if name in {a.name for a in spec.analyses}
    }


def build_assets(config: DispatchConfig, definitions: Sequence[AnalysisDefinition]) -> list:
    return [
        build_dispatch_asset(config),
        *(build_analysis_asset(d, fixed_parameters_by_spec(config, d.name)) for d in definitions),
    ]


__all__ = [
    "DATA_ASSETS",
    "DATA_ASSETS_PARTITIONS",
    "DISPATCH_KEY",
    "AnalysisPartitionResult",
    "AnalysisRunConfig",
    "build_analysis_asset",
    "build_assets",
    "build_dispatch_asset",
]
