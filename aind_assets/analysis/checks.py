"""What the analysis flow's materializations say, one partition at a time.

Every function here describes **one** partition: a run over many partitions attaches each
partition's metadata to that partition's materialization only
(``context.add_asset_metadata(..., partition_key=key)``), so a ranged run records exactly what
one-partition runs record.

``aind/status`` tells at a glance what a partition's materialization is (docs/analysis.md,
"Results, nothing to run, failed"):

* ``results`` — the partition has results: jobs completed, or their records already existed;
* ``nothing_to_run`` — no job for this analysis (no data file, or the partition's dispatch spec
  does not run it): no results, no results record;
* ``dry_run`` — the jobs ran but nothing was written.

The same status is the partition's ``has_results`` asset check evaluation (passed / WARN /
ERROR for a failed job), so the asset's partitions are told apart in the UI at a glance.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from aind_assets import lineage
from aind_assets.analysis.dispatch import PartitionDispatch
from aind_assets.analysis.wrapper import JobResult, plots_markdown
from aind_assets.resources.urls import browse_url, is_s3

#: How long a plot's presigned URL (shown inline in the UI) stays valid: S3's maximum, 7 days.
PLOT_URL_EXPIRES_S = 7 * 24 * 3600


def browser(endpoint_url: str | None) -> Callable[[str], str]:
    """Stored URL -> browser link (a trailing ``/`` marks a folder)."""

    def browse(url: str) -> str:
        return browse_url(url.rstrip("/"), endpoint_url, folder=url.endswith("/"))

    return browse


def presigned(store: Any, url: str | None) -> str | None:
    """A presigned http URL of an S3 object (an image the UI can show inline), else None."""
    if not url or not is_s3(url):
        return None
    try:
        return str(store.fs_for(url).sign(url, expiration=PLOT_URL_EXPIRES_S))
    except (NotImplementedError, OSError, ValueError):
        return None


STATUS = "aind/status"
RESULTS, NOTHING_TO_RUN, DRY_RUN = "results", "nothing_to_run", "dry_run"


def jobs_status(jobs: Sequence[JobResult]) -> str:
    """``completed``, ``skipped``, ``dry_run`` when all jobs agree, else ``mixed``."""
    kinds = {j.status for j in jobs}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def partition_status(status: str) -> str:
    """The ``aind/status`` of a partition whose result status is ``status``."""
    if status in ("no_jobs", "not_applicable"):
        return NOTHING_TO_RUN
    return DRY_RUN if status == "dry_run" else RESULTS


def dispatch_metadata(part: PartitionDispatch) -> dict[str, Any]:
    """The materialization metadata of ``analysis_dispatch`` for one partition."""
    meta: dict[str, Any] = {
        STATUS: RESULTS if part.models else NOTHING_TO_RUN,
        "jobs": len(part.models),
        "jobs_per_analysis": dg.MetadataValue.json(dict(sorted(part.tasks_per_analysis().items()))),
        "dispatch_rows": part.rows,
        "data_assets": part.assets,
        "files": part.files,
        "specs": ", ".join(sorted(set(part.specs))) or "none",
        "skipped_assets": dg.MetadataValue.json(sorted(set(part.skipped_assets))),
        lineage.META_INPUTS: sorted({loc for m in part.models for loc in m.s3_location}),
    }
    if part.models:
        meta["sample"] = dg.MetadataValue.json(part.models[0].model_dump(mode="json"))
    if part.warnings:
        meta["warnings"] = dg.MetadataValue.md("\n".join(f"* {w}" for w in part.warnings))
    return meta


#: Results folders linked one by one (a partition with more jobs lists the rest as JSON).
MAX_LINKS = 5
#: Dagster 1.13 shows markdown metadata inline only below this length ("[Show Markdown]" above).
INLINE_MD_CHARS = 1000


def _params_text(parameters: dict[str, Any]) -> str:
    shown = {k: v for k, v in parameters.items() if k != "file_location"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))


def job_records_table(jobs: Sequence[JobResult]) -> dg.MetadataValue:
    """One row per job: the key fields of its DocDB results record (whose ``_id`` is a hash)."""
    columns = ["status", "record", "analysis", "data assets", "parameters", "results"]
    records = [
        dg.TableRecord(
            {
                "status": job.status,
                "record": job.record_name[:12],
                "analysis": f"{job.analysis} {job.version}",
                "data assets": ", ".join(job.asset_name),
                "parameters": _params_text(job.parameters),
                "results": job.results_location or "",
            }
        )
        for job in jobs
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)


def plot_metadata(
    images: Sequence[tuple[str, bytes, str | None]],
    inline_urls: Sequence[str | None] = (),
    title: str | None = None,
) -> dict[str, Any]:
    """``plot``: markdown Dagster shows inline when it can — an image link (an http URL the
    browser loads, such as a presigned S3 URL) is short enough; the PNG itself (base64) is
    not, and opens from "[Show Markdown]"."""
    if not images:
        return {}
    title = title or images[0][0]
    http = next((u for u in inline_urls if u), None)
    if http is not None:
        md = f"**{title}**\n\n![{title}]({http})"
        if len(md) < INLINE_MD_CHARS:
            return {
                "plot": dg.MetadataValue.md(md),
                "plot_png": dg.MetadataValue.md(plots_markdown(list(images))),
            }
    heading = f"### {title}\n\n" if title != images[0][0] else ""
    return {"plot": dg.MetadataValue.md(heading + plots_markdown(list(images)))}


def analysis_metadata(
    status: str,
    jobs: Sequence[JobResult],
    images: Sequence[tuple[str, bytes, str | None]],
    inputs: Sequence[str],
    note: str | None,
    *,
    browse: Callable[[str], str] | None = None,
    inline_urls: Sequence[str | None] = (),
    title: str | None = None,
) -> dict[str, Any]:
    """The materialization metadata of ``analysis/<spec>/<name>`` for one partition.

    ``browse(url)`` makes a browser link of a stored URL (results folders, plots); ``title``
    heads the plot (the analysis and the partition)."""
    counts = Counter(j.status for j in jobs)
    meta: dict[str, Any] = {
        STATUS: partition_status(status),
        "status": status,
        "jobs": len(jobs),
        "completed": counts.get("completed", 0),
        "skipped": counts.get("skipped", 0),
        "dry_run": counts.get("dry_run", 0),
        lineage.META_INPUTS: sorted(set(inputs)),
    }
    if jobs:
        meta["job_records"] = job_records_table(jobs)
        meta["record_names"] = dg.MetadataValue.json([j.record_name for j in jobs])
    existing = [j.record_name for j in jobs if j.status == "skipped"]
    if existing:
        meta["existing_records"] = dg.MetadataValue.json(existing)
    urls = [u for j in jobs for u in j.plots]
    if urls:
        meta["plot_urls"] = dg.MetadataValue.json(urls)
        if browse is not None:
            meta["plot_link"] = dg.MetadataValue.url(browse(urls[0]))
    meta.update(plot_metadata(images, inline_urls, title))
    located = [j for j in jobs if j.results_location and j.status != "dry_run"]
    if located:
        meta["results"] = dg.MetadataValue.json([j.results_location for j in located])
        if browse is not None:
            for i, job in enumerate(located[:MAX_LINKS]):
                label = "results_link" if len(located) == 1 else f"results_link_{i + 1}"
                meta[label] = dg.MetadataValue.url(browse(str(job.results_location) + "/"))
    if note:
        meta["note"] = note
    return meta


# --------------------------------------------------------------------------------------------
# The has_results check: results / nothing to run / failed, per partition, at a glance
# --------------------------------------------------------------------------------------------

HAS_RESULTS = "has_results"
FAILED = "failed"
_DESCRIPTIONS = {
    RESULTS: "the partition has results",
    NOTHING_TO_RUN: "nothing to run: no job for this analysis (no data file, or the "
    "partition's dispatch spec does not run it); no results were written",
    DRY_RUN: "dry run: the jobs ran, nothing was written",
    FAILED: "a job of this partition failed (see the run's error)",
}


def has_results_spec(
    asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition
) -> dg.AssetCheckSpec:
    """The per-partition check every analysis asset reports with its materialization."""
    with warnings.catch_warnings():  # partitioned checks are "preview" in Dagster 1.13
        warnings.simplefilter("ignore", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(
            HAS_RESULTS,
            asset=asset_key,
            partitions_def=partitions_def,
            description="Passes when the partition has results; warns when it had nothing to "
            "run (or was a dry run); fails when one of its jobs failed.",
        )


def has_results_evaluation(
    asset_key: dg.AssetKey, partition: str, status: str, detail: str | None = None
) -> dg.AssetCheckEvaluation:
    """The ``has_results`` evaluation of one partition whose ``aind/status`` is ``status``."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=HAS_RESULTS,
        passed=status == RESULTS,
        severity=dg.AssetCheckSeverity.ERROR if status == FAILED else dg.AssetCheckSeverity.WARN,
        metadata={STATUS: status, **({"detail": detail} if detail else {})},
        description=_DESCRIPTIONS[status],
        partition=partition,
    )
