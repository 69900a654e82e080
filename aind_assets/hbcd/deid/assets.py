"""Assets of the de-identification stage (thin: the work is in :mod:`aind_assets.hbcd.deid.store`).

* ``hbcd/deidentified_session``: one BIDS session (+ subject-level files) de-identified;
  partitioned by ``bids_sessions`` (``sub-<RC>_ses-<label>``). A run may cover many sessions
  (a partition range: sensor batches, ``--partition-range``, single-run backfills): they are
  de-identified concurrently by subject (:mod:`~aind_assets.hbcd.deid.batches`), each with its
  own metadata and record (the IO manager writes the dict by partition); a failing session
  fails the step once the others are done, naming it.
* ``hbcd/deidentified_dataset``: the dataset-level files (``participants.tsv``...).

Every value written by the IO manager (and so every processing record) is identifier-free:
de-identified paths, counts and release-candidate IDs only. The record's inputs name the
identified session by its partition key (``<identified root>/assembly_bids#sub-<RC>_ses-<l>``),
never by its identified path.
"""

import warnings
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

from aind_assets import lineage
from aind_assets.hbcd.deid.batches import run_by_subject
from aind_assets.hbcd.deid.discovery import DATASET_UNIT, RULES_VERSION
from aind_assets.hbcd.deid.store import SyncResult, deidentify_dataset, deidentify_session
from aind_assets.hbcd.identity.replace import parse_session_partition_key
from aind_assets.hbcd.identity.scrub import Scrubber, error_reason
from aind_assets.hbcd.keys import (
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    FLOW_TAGS,
    GROUP,
    IDENTIFIED_SESSION,
    MAX_LISTED,
    bids_sessions,
    listed,
)
from aind_assets.hbcd.resources import HbcdResource
from aind_assets.hbcd.sources.assets import record_consumed_source
from aind_assets.partition_metadata import add_partition_metadata
from aind_assets.runs import OBJECT_STORE_POOL


class DeidentifiedFiles(BaseModel):
    """Result of de-identifying a session or the dataset-level files (de-identified paths)."""

    unit: str
    deidentified_prefix: str
    source_files: int
    written: list[str]
    unchanged: int
    deleted: list[str]
    unsupported: list[str]
    rules_version: str


def _sync_metadata(result: SyncResult, hbcd: HbcdResource, inputs: list[str]) -> dict:
    return {
        "files written": len(result.written),
        "files unchanged": result.unchanged,
        "files deleted": len(result.deleted),
        "source files": result.source_files,
        "bytes read": result.bytes_read,
        "unsupported files (not copied)": dg.MetadataValue.json(listed(result.unsupported)),
        "unsupported count": len(result.unsupported),
        "refused files (not de-identified)": dg.MetadataValue.json(
            [r.as_dict() for r in result.refused[:MAX_LISTED]]
        ),
        "refused count": len(result.refused),
        "paths naming unmapped subjects (not copied)": len(result.unmapped),
        "de-identification notes": dg.MetadataValue.json(result.notes),
        lineage.META_INPUTS: inputs,
        lineage.META_PARAMETERS: {
            "rules_version": RULES_VERSION,
            "identified_root": hbcd.identified_root,
            "deidentified_root": hbcd.deidentified_root,
        },
        lineage.META_PROCESS_TYPE: "Other",
    }


def _problems(result: SyncResult) -> str | None:
    """Why a session's (or the dataset's) sync is not complete, or ``None`` when it is."""
    if result.ok:
        return None
    problems = {
        **result.failed,
        **{c: "two source files map to this name" for c in result.collisions},
    }
    shown = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())[:20])
    return (
        f"{len(problems)} file(s) could not be de-identified (nothing half-written was kept; "
        f"the rest was synced and the run can be retried): {shown}"
    )


def _failed_files(result: SyncResult) -> dict[str, str]:
    problems = {**result.failed, **dict.fromkeys(result.collisions, "name collision")}
    return dict(sorted(problems.items())[:MAX_LISTED])


def _fail_if_needed(result: SyncResult, what: str) -> None:
    problem = _problems(result)
    if problem is None:
        return
    raise dg.Failure(
        description=f"{what}: {problem}",
        metadata={"failed files": dg.MetadataValue.json(_failed_files(result))},
        allow_retries=False,
    )


def _batch_failure(failed: dict[str, str], keys: list[str], files: dict[str, str]) -> dg.Failure:
    """The step's failure when sessions of the run failed: each named with its reason (scrubbed
    paths and messages only); the other sessions were de-identified and keep their outputs."""
    ok = [k for k in keys if k not in failed]
    lines = "\n".join(f"- session {k}: {why}" for k, why in sorted(failed.items()))
    kept = (
        f"; the other {len(ok)} session(s) of the run were de-identified (their files and "
        "ledger entries are kept: a re-run finds them unchanged)"
        if ok
        else ""
    )
    return dg.Failure(
        description=f"{len(failed)} of {len(keys)} session(s) failed{kept}:\n{lines}",
        metadata={
            "failed sessions": dg.MetadataValue.json(sorted(failed)),
            "de-identified sessions": dg.MetadataValue.json(ok),
            "failed files": dg.MetadataValue.json(dict(sorted(files.items())[:MAX_LISTED])),
        },
        allow_retries=False,
    )


def _session_value(key: str, result: SyncResult, hbcd: HbcdResource) -> DeidentifiedFiles:
    rc, ses = parse_session_partition_key(key)
    return DeidentifiedFiles(
        unit=key,
        deidentified_prefix=f"{hbcd.layout.deidentified_bids}/sub-{rc}/ses-{ses}",
        source_files=result.source_files,
        written=result.written,
        unchanged=result.unchanged,
        deleted=result.deleted,
        unsupported=result.unsupported,
        rules_version=RULES_VERSION,
    )


class DeidentificationConfig(dg.Config):
    """Run config of ``hbcd/deidentified_session``."""

    num_parallel_workers: int | None = Field(
        default=None,
        ge=1,
        description="Subjects of the run de-identified at once (the sessions of one subject "
        "one after another); default: the AIND_NUM_PARALLEL_WORKERS setting.",
    )


# --- assets -------------------------------------------------------------------------------


def _deidentify_sessions(
    context: dg.AssetExecutionContext, config: DeidentificationConfig, hbcd: HbcdResource
) -> Any:
    keys = list(context.partition_keys)
    # before reading: a change observed later shows as Unsynced. Dagster keeps one data version
    # per step, so a ranged run's sessions share one (over the versions of all of them).
    record_consumed_source(context)
    idmap = hbcd.idmap()
    workers = config.num_parallel_workers or hbcd.num_parallel_workers
    verify = hbcd.verify_unchanged_images

    def one(key: str) -> SyncResult:
        return deidentify_session(hbcd.store, hbcd.layout, idmap, key, verify_unchanged=verify)

    done = run_by_subject(keys, one, workers)
    scrub = Scrubber(idmap)
    failed = {k: error_reason(e, scrub) for k, e in done.errors.items()}
    files: dict[str, str] = {}
    values: dict[str, DeidentifiedFiles] = {}
    for key in keys:
        if key in failed:
            continue
        result: SyncResult = done.values[key]
        problem = _problems(result)
        if problem is not None:
            failed[key] = problem
            files.update(_failed_files(result))
            continue
        inputs = [f"{hbcd.layout.identified_bids}#{key}"]
        # each session's own metadata (and so its own record), never the run's
        add_partition_metadata(context, _sync_metadata(result, hbcd, inputs), key)
        values[key] = _session_value(key, result, hbcd)
    # one line for the run (each session's counts are in its materialization's metadata)
    results = [done.values[k] for k in values]
    context.log.info(
        f"{len(values)} of {len(keys)} session(s) de-identified: "
        f"{sum(len(r.written) for r in results)} file(s) written, "
        f"{sum(r.unchanged for r in results)} unchanged, "
        f"{sum(len(r.deleted) for r in results)} deleted, "
        f"{sum(len(r.unsupported) for r in results)} unsupported"
    )
    if failed:
        for key, why in sorted(failed.items()):
            context.log.error(f"session {key}: {why}")
        raise _batch_failure(failed, keys, files)
    return values[keys[0]] if len(keys) == 1 else values


# BackfillPolicy is "beta" in Dagster 1.13; ranged runs (--partition-range, single-run
# backfills, the sensors' batches) need it: used knowingly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
    deidentified_session = dg.asset(
        key=DEIDENTIFIED_SESSION,
        partitions_def=bids_sessions,
        deps=[IDENTIFIED_SESSION],  # its data version: the source versions consumed (sources/)
        group_name=GROUP,
        code_version=RULES_VERSION,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"bids"},
        tags=FLOW_TAGS,
        pool=OBJECT_STORE_POOL,
        metadata={lineage.META_PROCESS_TYPE: "Other"},
        description=(
            "One BIDS session copied from the identified side to the de-identified side with every "
            "identifier replaced (names, TSV ID/site columns, JSON sidecars, NIfTI and gzip "
            "headers, text). Incremental: only changed files are rewritten; files gone from the "
            "source are removed. Checked by a blocking leak scan. A run may cover many sessions "
            "(a partition range): they are de-identified concurrently, each with its own "
            "metadata, record and leak check result."
        ),
    )(_deidentify_sessions)


@dg.asset(
    key=DEIDENTIFIED_DATASET,
    group_name=GROUP,
    code_version=RULES_VERSION,
    kinds={"bids"},
    tags=FLOW_TAGS,
    pool=OBJECT_STORE_POOL,
    description=(
        "The dataset-level files of assembly_bids (participants.tsv with unmapped subjects' "
        "rows dropped, participants.json, dataset_description.json, README...) de-identified."
    ),
)
def deidentified_dataset(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> DeidentifiedFiles:
    idmap = hbcd.idmap()
    result = deidentify_dataset(
        hbcd.store, hbcd.layout, idmap, verify_unchanged=hbcd.verify_unchanged_images
    )
    inputs = [f"{hbcd.layout.identified_bids}#{DATASET_UNIT}"]
    context.add_output_metadata(_sync_metadata(result, hbcd, inputs))
    _fail_if_needed(result, "dataset-level files")
    return DeidentifiedFiles(
        unit=DATASET_UNIT,
        deidentified_prefix=hbcd.layout.deidentified_bids,
        source_files=result.source_files,
        written=result.written,
        unchanged=result.unchanged,
        deleted=result.deleted,
        unsupported=result.unsupported,
        rules_version=RULES_VERSION,
    )
