"""Dagster assets of the AIND analysis flow (thin: the work is in dispatch.py and wrapper.py).

Per dispatch spec, on the spec's own partitions (:mod:`.keys`):

* ``analysis/<spec>/dispatch`` — per partition, the jobs (``AnalysisDispatchModel``s);
* ``analysis/<spec>/<name>`` — one asset per analysis of the spec, running its jobs of the
  partition.

Both accept several partitions in one run (``BackfillPolicy.single_run()``, needed by
``dagster asset materialize --partition-range``): they then return a dict keyed by partition key,
which the IO manager writes partition by partition.
"""

import contextlib
import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field, TypeAdapter

from aind_assets import lineage
from aind_assets.analysis.checks import (
    FAILED,
    HAS_RESULTS,
    analysis_metadata,
    browser,
    dispatch_metadata,
    has_results_evaluation,
    has_results_spec,
    jobs_status,
    partition_status,
    presigned,
)
from aind_assets.analysis.dispatch import dispatch_partitions
from aind_assets.analysis.keys import (
    GROUP,
    analysis_key,
    asset_kinds,
    asset_tags,
    dispatch_key,
    partitions_def,
    source_key,
)
from aind_assets.analysis.launchers import PipesLaunchSettings
from aind_assets.analysis.models import AnalysisDispatchModel, DispatchConfig, DispatchSpec
from aind_assets.analysis.pipes import environment_container, out_of_process
from aind_assets.analysis.registry import AnalysisDefinition, AnalysisParameterError, canonical_json
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.wrapper import (
    UNKNOWN_EXPERIMENTER,
    JobOutcome,
    JobResult,
    run_job,
)
from aind_assets.parallel import run_bounded
from aind_assets.partition_metadata import add_partition_metadata
from aind_assets.runs import OBJECT_STORE_POOL

#: Who to ask about the flow's assets (shown on every asset page).
OWNERS = ["team:aind-analysis"]
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
    num_parallel_workers: int | None = Field(
        default=None,
        ge=1,
        description="Jobs (of all partitions of the run) run at once; default: the "
        "AIND_NUM_PARALLEL_WORKERS setting.",
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


def _config_hash(config: Sequence[DispatchSpec]) -> str:
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


def _spec_only(mapping: Mapping[str, Any] | None, spec: str) -> Mapping[str, Any] | None:
    """The partition-map document of a key, narrowed to one spec's entry (``None`` when that
    spec does not have the key: the partition is not in this spec's map)."""
    if mapping is None or spec not in (mapping.get("specs") or {}):
        return None
    return {**mapping, "specs": {spec: mapping["specs"][spec]}}


def build_dispatch_asset(
    config: DispatchConfig, spec: DispatchSpec, storage_kind: str | None = None
) -> dg.AssetsDefinition:
    with _backfill_policy_is_beta():
        return _dispatch_asset(config, spec, storage_kind)


def _dispatch_asset(
    config: DispatchConfig, spec: DispatchSpec, storage_kind: str | None
) -> dg.AssetsDefinition:
    what = "group" if spec.group_by else "data asset"
    key = dispatch_key(spec.name)

    @dg.asset(
        key=key,
        partitions_def=partitions_def(spec.name),
        deps=[source_key(spec.name)],
        group_name=GROUP,
        code_version=f"{DISPATCH_LOGIC_VERSION}-{_config_hash([spec])}",
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds=asset_kinds(spec, storage_kind),
        owners=OWNERS,
        tags=asset_tags(spec),
        description=(
            f"The analysis jobs of one {what} of dispatch spec `{spec.name}`: "
            "AnalysisDispatchModels with the files of each asset, one per analysis "
            f"({', '.join(a.name for a in spec.analyses)}) x distributed parameter set."
        ),
        metadata={
            lineage.META_STAGE: "Processing",
            lineage.META_PROCESS_TYPE: "Other",
            "dispatch_spec": spec.name,
            "query": dg.MetadataValue.json(spec.resolved_query()),
        },
    )
    def _dispatch(context: dg.AssetExecutionContext, analysis: AnalysisResource):
        dispatch_config, registry = analysis.load()
        pmap = analysis.partition_map()
        keys = list(context.partition_keys)
        results = dispatch_partitions(
            {k: _spec_only(pmap.get(k), spec.name) for k in keys},
            config=dispatch_config,
            registry=registry,
            docdb=analysis.docdb,
            store=analysis.object_store,
            assets_collection=analysis.assets_collection,
        )
        for k, result in results.items():
            for warning in result.warnings:
                context.log.warning(f"{k}: {warning}")
            if not result.models:
                context.log.warning(f"{k}: no analysis job (see the warnings above)")
        failed = {k: r.errors for k, r in results.items() if r.errors}
        if failed:
            raise dg.Failure(
                description=f"bad input in {len(failed)} partition(s):\n"
                + "\n".join(f"- {k}: {e}" for k, errs in failed.items() for e in errs),
                metadata={"failed_partitions": dg.MetadataValue.json(failed)},
            )
        for k, result in results.items():  # each partition's own metadata, never the run's
            add_partition_metadata(context, dispatch_metadata(result), k)
        return _one_or_many(keys, {k: r.models for k, r in results.items()})

    return _dispatch


# --------------------------------------------------------------------------------------------
# analysis/<name>
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One prepared job of a partition: validated parameters, its Code."""

    task: AnalysisDispatchModel
    code: Any
    params: Any


def _prepare_partition(
    context: dg.AssetExecutionContext,
    definition: AnalysisDefinition,
    key: str,
    models: list[AnalysisDispatchModel],
    config: AnalysisRunConfig,
    analysis: AnalysisResource,
) -> list[_Job] | AnalysisPartitionResult:
    """The jobs of partition ``key`` (parameters validated), or its result when it has none."""
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
        prepared.append(_Job(task, job_code, definition.validate_parameters(merged, where=where)))
    return prepared


def _job_runner(
    context: dg.AssetExecutionContext,
    definition: AnalysisDefinition,
    key: str,
    job: _Job,
    config: AnalysisRunConfig,
    analysis: AnalysisResource,
) -> Callable[[], JobOutcome]:
    dispatch_config, _ = analysis.load()
    results_root = dispatch_config.output_root(definition.name) or analysis.results_root
    experimenter = (
        context.run.tags.get(EXPERIMENTER_TAG) or analysis.experimenter or UNKNOWN_EXPERIMENTER
    )
    run_id = context.run.run_id

    def run() -> JobOutcome:
        return run_job(
            definition,
            job.task,
            job.params,
            code=job.code,
            docdb=analysis.docdb,
            store=analysis.object_store,
            results_root=results_root,
            results_collection=analysis.results_collection,
            dry_run=config.dry_run,
            experimenters=[experimenter],
            run_id=run_id,
            claim_timeout_s=analysis.claim_timeout_s,
            record_fields={
                "dagster": {
                    "run_id": run_id,
                    "asset_key": context.asset_key.to_user_string(),
                    "partition_key": key,
                }
            },
            log=context.log,
        )

    return run


def _workers(definition: AnalysisDefinition, config: AnalysisRunConfig, analysis: Any) -> int:
    """Jobs run at once: run config, else the resource's setting; one out of process (the
    subprocess worker and Pipes sessions of a step serve one job at a time)."""
    if definition.environment is not None:
        return 1
    return max(1, config.num_parallel_workers or analysis.num_parallel_workers)


def build_analysis_asset(
    definition: AnalysisDefinition, spec: DispatchSpec, storage_kind: str | None = None
) -> dg.AssetsDefinition:
    """The asset ``analysis/<spec>/<name>`` of one analysis of dispatch spec ``spec``."""
    with _backfill_policy_is_beta():
        return _analysis_asset(definition, spec, storage_kind)


def _analysis_asset(
    definition: AnalysisDefinition, spec: DispatchSpec, storage_kind: str | None
) -> dg.AssetsDefinition:
    key = analysis_key(spec.name, definition.name)
    fixed = dict(spec.analysis(definition.name).fixed_parameters)
    what = "group" if spec.group_by else "data asset"

    @dg.asset(
        key=key,
        partitions_def=partitions_def(spec.name),
        group_name=GROUP,
        code_version=definition.code_version({spec.name: fixed}),
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={"analysis_dispatch": dg.AssetIn(key=dispatch_key(spec.name))},
        check_specs=[has_results_spec(key, partitions_def(spec.name))],
        pool=OBJECT_STORE_POOL,
        kinds=asset_kinds(spec, storage_kind),
        owners=OWNERS,
        tags=asset_tags(spec, definition.name),
        description=(definition.description or f"The {definition.name} analysis").rstrip(".")
        + f" (version {definition.version}), per {what} of dispatch spec `{spec.name}`. "
        "Results and records are de-duplicated by the hash of each job's Code.",
        metadata={
            "analysis/version": definition.version,
            "analysis/parameters_model": definition.spec.__name__,
            "analysis/fixed_parameters": dg.MetadataValue.json(json.loads(canonical_json(fixed))),
            "dispatch_spec": spec.name,
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
        base = {"analysis": definition.name, "version": definition.version}
        settings = PipesLaunchSettings.model_validate(analysis.pipes)
        results: dict[str, AnalysisPartitionResult] = {}
        runs: dict[tuple[str, int], Callable[[], JobOutcome]] = {}
        inputs: dict[str, set[str]] = {key: set() for key in keys}
        with out_of_process(
            context, definition, store=analysis.object_store, settings=settings
        ) as runnable:
            # every partition's parameters are validated before any job runs
            for key in keys:
                models = _MODELS.validate_python(loaded.get(key) or [])
                try:
                    planned = _prepare_partition(context, runnable, key, models, config, analysis)
                except AnalysisParameterError as exc:
                    raise dg.Failure(description=str(exc)) from exc
                if isinstance(planned, AnalysisPartitionResult):  # nothing to run
                    results[key] = planned
                    add_partition_metadata(
                        context, analysis_metadata(planned.status, [], [], [], planned.note), key
                    )
                    continue
                for i, job in enumerate(planned):
                    inputs[key].update(job.task.s3_location)
                    runs[(key, i)] = _job_runner(context, runnable, key, job, config, analysis)
            done = run_bounded(runs, _workers(definition, config, analysis))
        failures = {job_key: f"{job_key[0]}: {exc}" for job_key, exc in sorted(done.errors.items())}
        for message in failures.values():
            context.log.error(message)
        for key in keys:
            if key in results:
                continue
            outcomes = [done.values[k] for k in sorted(done.values) if k[0] == key]
            jobs = [o.result for o in outcomes]
            images = [i for o in outcomes for i in o.images][:2]
            status = jobs_status(jobs) if jobs else "no_jobs"
            results[key] = AnalysisPartitionResult(
                status=status, jobs=jobs, partition_key=key, **base
            )
            add_partition_metadata(
                context,
                analysis_metadata(
                    status,
                    jobs,
                    images,
                    sorted(inputs[key]),
                    None,
                    browse=browser(analysis.object_store.endpoint_url),
                    inline_urls=[presigned(analysis.object_store, u) for _, _, u in images[:1]],
                    title=f"{definition.name} · {key}",
                ),
                key,
            )
        check = dg.AssetCheckKey(context.asset_key, HAS_RESULTS)
        checked = check in context.selected_asset_check_keys
        if failures:
            failed = sorted({k for k, _ in failures})
            if checked:  # which partitions failed, and what the others have
                for key in keys:
                    status = FAILED if key in failed else partition_status(results[key].status)
                    yield has_results_evaluation(context.asset_key, key, status)
            raise dg.Failure(
                description=f"{len(failures)} {definition.name} job(s) failed in partition(s) "
                f"{', '.join(failed)}:\n" + "\n".join(f"- {f}" for f in failures.values()),
                metadata={
                    "failed_jobs": dg.MetadataValue.json(list(failures.values())),
                    "failed_partitions": dg.MetadataValue.json(failed),
                    "succeeded_partitions": dg.MetadataValue.json(
                        [k for k in keys if k not in failed]
                    ),
                },
            )
        # An Output, not a bare value: a Pipes session asks for a typed event stream.
        yield dg.Output(_one_or_many(keys, {k: results[k] for k in keys}))
        if checked:  # one evaluation per partition (Dagster's own result is per step)
            for key in keys:
                status = partition_status(results[key].status)
                yield has_results_evaluation(context.asset_key, key, status, results[key].note)
            yield dg.Output(
                None, output_name=context.assets_def.get_output_name_for_asset_check_key(check)
            )

    return _analysis


def build_assets(
    config: DispatchConfig,
    definitions: Sequence[AnalysisDefinition],
    storage_kind: str | None = None,
) -> list[dg.AssetsDefinition]:
    """Per spec: its dispatch, then its analyses (the registered ones it names)."""
    by_name = {d.name: d for d in definitions}
    assets = []
    for spec in config:
        assets.append(build_dispatch_asset(config, spec, storage_kind))
        assets.extend(
            build_analysis_asset(by_name[a.name], spec, storage_kind)
            for a in spec.analyses
            if a.name in by_name
        )
    return assets


__all__ = [
    "OWNERS",
    "AnalysisPartitionResult",
    "AnalysisRunConfig",
    "build_analysis_asset",
    "build_assets",
    "build_dispatch_asset",
]
