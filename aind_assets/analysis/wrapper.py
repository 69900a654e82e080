"""Run one analysis job: skip work already done, write results, then the record (pure: no Dagster).

The behaviour of aind-analysis-wrapper / analysis-pipeline-utils, made race-free:

1. The job's identity is ``record_name(Code)``: sha256 of the :class:`Code` holding the analysis
   url, name, version, run_script, one ``DataAsset`` per ``s3_location`` and the parameters.
2. A record with that name in the results collection means the job is done: **skip** it (the
   result names the existing record).
3. ``dry_run`` runs the analysis in a scratch folder and writes nothing (no results, no record).
4. Otherwise the job is **claimed** in ``<results collection>_claims`` through a unique index, so
   of two concurrent runs of one job exactly one works and the other is skipped. The holder
   renews its claim (a heartbeat every ``heartbeat_s``); a claim not renewed for four
   heartbeats (its run died) may be taken over (claims without heartbeats: ``claim_timeout_s``).
5. A results path ``<results_root>/<hash>/`` that exists while DocDB has no record is the debris
   of a run of this very job that died (only the claim holder writes there): it is deleted and
   the job redone. Results that have their record are never overwritten (step 2 skips them).
6. The analysis writes its files into a scratch folder, ``metadata.nd.json`` (an aind-data-schema
   ``Metadata`` whose ``processing`` describes the job) is added, the files are uploaded with
   ``metadata.nd.json`` **last** (a folder without it is incomplete), and the DocDB record
   (``_id = name = hash``) is inserted **last of all**, so a record never points at missing
   results. The claim is then released.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import posixpath
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aind_data_schema.components.identifiers import Code
from aind_data_schema.core.processing import ProcessName, ProcessStage
from pydantic import BaseModel, Field, ValidationError

from aind_assets import lineage
from aind_assets.analysis.context import AnalysisContext, AnalysisInputError
from aind_assets.analysis.models import AnalysisDispatchModel, AnalysisSpecification
from aind_assets.analysis.results_commit import METADATA_FILE, Heartbeat, claim, upload_results

if TYPE_CHECKING:  # the resources are Dagster ConfigurableResources; only their methods are used
    from aind_assets.analysis.registry import AnalysisDefinition
    from aind_assets.resources.docdb import DocDBResource
    from aind_assets.resources.object_store import ObjectStoreResource

__all__ = [
    "METADATA_FILE",
    "AnalysisContext",
    "AnalysisInputError",
    "AnalysisJobError",
    "JobOutcome",
    "JobResult",
    "ResultsExistError",
    "claims_collection",
    "plots_markdown",
    "run_job",
]

#: The experimenter of a record when neither settings nor run tags name one (the package's).
UNKNOWN_EXPERIMENTER = "unknown"
#: At most this many PNG bytes per job are kept in memory for materialization metadata.
MAX_PLOT_BYTES = 400_000

logger = logging.getLogger(__name__)


class ResultsExistError(RuntimeError):
    """The results path of a job already holds files; it is never overwritten."""


class AnalysisJobError(RuntimeError):
    """The run function of an analysis failed; the message names the job's files."""


class AnalysisOutputError(RuntimeError):
    """The run function returned something that is not the analysis' outputs model."""


def join_url(base: str, *parts: str) -> str:
    """``base/part/...`` for URLs and paths (the resources' helper, without importing Dagster)."""
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    return posixpath.join(base.rstrip("/"), *parts) if parts else base.rstrip("/")


def record_notes(task: AnalysisDispatchModel, note: str | None = None) -> str | None:
    """The process notes of a job's record: the package's line naming the query that found
    the data assets (when the task has one), then ``note``."""
    lines = [f"Query used to retrieve data assets: {task.query}"] if task.query else []
    if note:
        lines.append(note)
    return "\n".join(lines) or None


def claims_collection(results_collection: str) -> str:
    return f"{results_collection}_claims"


# --------------------------------------------------------------------------------------------
# What a run function gets
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Results of a job
# --------------------------------------------------------------------------------------------


class JobResult(BaseModel):
    """What happened to one job (one task × one parameter set)."""

    status: Literal["completed", "skipped", "dry_run"]
    record_name: str = Field(..., description="sha256 of the job's Code: the record's _id.")
    results_location: str | None = Field(None, description="Where the results are (or were).")
    analysis: str
    version: str
    asset_name: list[str]
    s3_location: list[str]
    file_location: list[str] | None = None
    parameters: dict[str, Any]
    outputs: dict[str, Any] | None = None
    plots: list[str] = Field(default_factory=list, description="Plot URLs (file names if dry).")
    note: str | None = None


@dataclass
class JobOutcome:
    result: JobResult
    #: (file name, PNG bytes, URL or None) of the job's plots, for materialization metadata.
    images: list[tuple[str, bytes, str | None]] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(task: AnalysisDispatchModel) -> str:
    what = task.file_location or task.s3_location
    return ", ".join(what)


def _outputs(definition: AnalysisDefinition, raw: Any) -> BaseModel:
    model = definition.outputs
    if isinstance(raw, model):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    if not isinstance(raw, Mapping):
        raise AnalysisOutputError(
            f"analysis {definition.name!r} returned {type(raw).__name__}; it must return "
            f"{model.__name__} (or a mapping of its fields)"
        )
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise AnalysisOutputError(
            f"analysis {definition.name!r} returned outputs that do not validate as "
            f"{model.__name__}: {exc}"
        ) from exc


def _collect_plots(results_dir: Path) -> list[Path]:
    return sorted(p for p in results_dir.rglob("*.png") if p.is_file())


def _images(plots: Sequence[Path], results_dir: Path, results_url: str | None) -> list:
    images, budget = [], MAX_PLOT_BYTES
    for path in plots:
        data = path.read_bytes()
        if len(data) > budget:
            continue
        budget -= len(data)
        rel = path.relative_to(results_dir).as_posix()
        images.append((rel, data, join_url(results_url, rel) if results_url else None))
    return images


def _build_metadata(
    definition: AnalysisDefinition,
    code: Any,
    name: str,
    results_url: str,
    start: datetime,
    end: datetime,
    outputs: BaseModel,
    note: str | None,
    experimenters: Sequence[str],
) -> Any:
    from aind_data_schema.core.metadata import Metadata  # slow to import: only when running

    processing = lineage.build_processing(
        code=code,
        start=start,
        end=end,
        output_location=results_url,
        process_type=ProcessName.ANALYSIS,
        stage=ProcessStage.ANALYSIS,
        name=definition.name,
        output_parameters=outputs.model_dump(mode="json"),
        notes=note,
        experimenters=experimenters,
    )
    with warnings.catch_warnings():  # "Metadata missing required file: data_description"
        warnings.simplefilter("ignore", UserWarning)
        return Metadata(name=name, location=results_url, processing=processing)


def run_job(
    definition: AnalysisDefinition,
    task: AnalysisDispatchModel,
    parameters: AnalysisSpecification,
    *,
    docdb: DocDBResource,
    store: ObjectStoreResource,
    results_root: str,
    results_collection: str,
    dry_run: bool = False,
    run_id: str | None = None,
    claim_timeout_s: float = 6 * 3600.0,
    record_fields: Mapping[str, Any] | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    code: Code | None = None,
    experimenters: Sequence[str] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Run one job of ``definition`` on ``task`` with validated ``parameters`` (module docstring).

    ``code`` is the job's ``Code`` (:meth:`AnalysisDefinition.job_code`, whose parameters were
    validated into ``parameters``); by default the task's own, without run config. The record's
    process names ``experimenters`` (default ``["unknown"]``, as the package without
    ``CODEOCEAN_EMAIL``). Errors of the analysis propagate with the job's files named in the
    message; nothing is recorded for a failed job. ``checkpoint(step)`` is called after each
    write step (fault-injection tests).
    """
    checkpoint = checkpoint or (lambda step: None)
    heartbeat_s = min(60.0, claim_timeout_s / 4)
    log = log or logger
    code = code or definition.job_code(task)
    name = lineage.record_name(code)
    results_url = join_url(results_root, name)
    params = json.loads(code.parameters.model_dump_json()) if code.parameters else {}
    base = {
        "record_name": name,
        "analysis": definition.name,
        "version": definition.version,
        "asset_name": list(task.asset_name),
        "s3_location": list(task.s3_location),
        "file_location": task.file_location,
        "parameters": params,
    }

    existing = docdb.find_one(results_collection, {"_id": name})
    if existing is not None:
        log.info("%s: record %s exists: skipping (%s)", definition.name, name, _describe(task))
        return JobOutcome(
            JobResult(
                status="skipped",
                results_location=existing.get("location"),
                note=f"already done: record {name} exists",
                **base,
            )
        )

    claims = claims_collection(results_collection)
    token = uuid.uuid4().hex
    claimed = False
    if not dry_run:
        claimed, holder = claim(docdb, claims, name, token, run_id, claim_timeout_s, heartbeat_s)
        if not claimed:
            done = docdb.find_one(results_collection, {"_id": name})
            reason = (
                f"already done: record {name} exists"
                if done
                else f"in progress in run {holder.get('run_id') if holder else '?'}: "
                f"record {name} will be written by that run"
            )
            log.info("%s: %s: skipping (%s)", definition.name, reason, _describe(task))
            return JobOutcome(
                JobResult(
                    status="skipped",
                    results_location=done.get("location") if done else results_url,
                    note=reason,
                    **base,
                )
            )
    heartbeat = Heartbeat(docdb, claims, name, token, heartbeat_s) if claimed else None
    try:
        if not dry_run and store.list_objects(results_url):
            # we hold the job's claim and it has no record: a run of this job died here
            log.warning(
                "%s: results path %s exists without record %s (left by a run that died): "
                "deleting it and running the job again",
                definition.name,
                results_url,
                name,
            )
            store.delete(results_url, recursive=True)
        with tempfile.TemporaryDirectory(prefix="aind-analysis-") as tmp:
            results_dir = Path(tmp) / "results"
            results_dir.mkdir()
            context = AnalysisContext(
                store=store, results_dir=results_dir, task=task, analysis=definition.name, log=log
            )
            start = _now()
            try:
                raw = definition.run(task, parameters, context)
            except AnalysisInputError:
                raise
            except Exception as exc:
                raise AnalysisJobError(
                    f"{definition.name} failed on {_describe(task)}: {type(exc).__name__}: {exc}"
                ) from exc
            outputs = _outputs(definition, raw)
            end = _now()
            note = "dry run: nothing written" if dry_run else None
            metadata = _build_metadata(
                definition,
                code,
                name,
                results_url,
                start,
                end,
                outputs,
                record_notes(task, note),
                list(experimenters or [UNKNOWN_EXPERIMENTER]),
            )
            (results_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
            plots = _collect_plots(results_dir)
            out = outputs.model_dump(mode="json")
            if dry_run:
                rel = [p.relative_to(results_dir).as_posix() for p in plots]
                return JobOutcome(
                    JobResult(status="dry_run", outputs=out, plots=rel, note=note, **base),
                    _images(plots, results_dir, None),
                )
            uploaded = upload_results(store, results_dir, results_url, checkpoint)
            checkpoint("uploaded")
            images = _images(plots, results_dir, results_url)
        document = {
            **metadata.model_dump(mode="json"),
            "_id": name,
            "created": end,
            "input_asset_names": list(task.asset_name),
            **dict(record_fields or {}),
        }
        if not docdb.insert_unique(results_collection, document, key="name"):
            # Unreachable while claims are honoured; kept so a record is never duplicated.
            return JobOutcome(
                JobResult(
                    status="skipped",
                    results_location=results_url,
                    note=f"record {name} was written by another run first",
                    **base,
                )
            )
        plot_urls = [u for u in uploaded if u.lower().endswith(".png")]
        log.info(
            "%s: wrote %s (%d files) and record %s",
            definition.name,
            results_url,
            len(uploaded),
            name,
        )
        return JobOutcome(
            JobResult(
                status="completed",
                results_location=results_url,
                outputs=out,
                plots=plot_urls,
                **base,
            ),
            images,
        )
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if claimed:
            with contextlib.suppress(Exception):  # an unreleased claim expires on its own
                docdb.delete_many(claims, {"_id": name, "token": token})


# --------------------------------------------------------------------------------------------
# Plots in materialization metadata
# --------------------------------------------------------------------------------------------


def plots_markdown(images: Sequence[tuple[str, bytes, str | None]], *, limit: int = 2) -> str:
    """Markdown showing up to ``limit`` PNG images inline (base64) with their URLs."""
    parts = []
    for title, data, url in list(images)[:limit]:
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"**{title}**\n\n![{title}](data:image/png;base64,{encoded})")
        if url:
            parts.append(f"`{url}`")
    rest = len(images) - min(len(images), limit)
    if rest > 0:
        parts.append(f"... and {rest} more plot(s) (see plot_urls)")
    return "\n\n".join(parts)
