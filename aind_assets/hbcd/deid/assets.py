"""Dagster assets of the HBCD flow (thin: the work is in :mod:`aind_assets.hbcd.deid.store`).

=====================================  ==========================================================
asset                                  what
=====================================  ==========================================================
``hbcd/deidentified_session``          one BIDS session (+ subject-level files) de-identified;
                                       partitioned by ``bids_sessions`` (``sub-<RC>_ses-<label>``)
``hbcd/deidentified_dataset``          the dataset-level files (``participants.tsv``...)
``hbcd/session_derivatives``           local processing: per-image statistics and QC metrics
``hbcd/cbrain_derivatives``            external: outputs CBRAIN writes (observed by a sensor)
``hbcd/reidentified_derivatives``      derivatives copied back to the identified side
=====================================  ==========================================================

Every value written by the IO manager (and so every processing record) is identifier-free:
de-identified paths, counts and release-candidate IDs only. The record's inputs name the
identified session by its partition key (``<identified root>/assembly_bids#sub-<RC>_ses-<l>``),
never by its identified path.
"""

from typing import Any

import dagster as dg
from pydantic import BaseModel

from aind_assets import lineage
from aind_assets.hbcd.deid import store as flow
from aind_assets.hbcd.deid.discovery import DATASET_UNIT, RULES_VERSION
from aind_assets.hbcd.identity.replace import parse_session_partition_key
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.resources import HbcdResource

GROUP = "hbcd"
FLOW_TAGS = {"aind/flow": "hbcd"}
bids_sessions = dg.DynamicPartitionsDefinition(name="bids_sessions")

DEIDENTIFIED_SESSION = dg.AssetKey(["hbcd", "deidentified_session"])
DEIDENTIFIED_DATASET = dg.AssetKey(["hbcd", "deidentified_dataset"])
SESSION_DERIVATIVES = dg.AssetKey(["hbcd", "session_derivatives"])
CBRAIN_DERIVATIVES = dg.AssetKey(["hbcd", "cbrain_derivatives"])
REIDENTIFIED_DERIVATIVES = dg.AssetKey(["hbcd", "reidentified_derivatives"])

LEAK_CHECK = "no_identifiers"
STALENESS_CHECK = "inputs_in_sync"
_MAX_LISTED = 200
#: Version of the local pipeline's code (bump when its outputs change).
PROCESSING_VERSION = "1"


def _listed(items: list[str]) -> list[str]:
    return items[:_MAX_LISTED] + (
        [f"... {len(items) - _MAX_LISTED} more"] if len(items) > _MAX_LISTED else []
    )


# --- values (what the IO manager stores; no identifiers) ----------------------------------


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


class SessionDerivatives(BaseModel):
    partition_key: str
    pipeline: str
    images: int
    inputs: int
    outputs: list[str]
    manifest: str | None
    qc: dict[str, dict[str, Any]]


class ReidentifiedDerivatives(BaseModel):
    """Counts and de-identified paths of what was synced (identified paths are never stored)."""

    new: list[str]
    newer: list[str]
    orphans_deleted: int
    unchanged: int
    unmapped: list[str]


# --- helpers -------------------------------------------------------------------------------


def _sync_metadata(result: flow.SyncResult, hbcd: HbcdResource, inputs: list[str]) -> dict:
    return {
        "files written": len(result.written),
        "files unchanged": result.unchanged,
        "files deleted": len(result.deleted),
        "source files": result.source_files,
        "bytes read": result.bytes_read,
        "unsupported files (not copied)": dg.MetadataValue.json(_listed(result.unsupported)),
        "unsupported count": len(result.unsupported),
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


def _fail_if_needed(result: flow.SyncResult, what: str) -> None:
    if result.ok:
        return
    problems = {
        **result.failed,
        **{c: "two source files map to this name" for c in result.collisions},
    }
    shown = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())[:20])
    raise dg.Failure(
        description=(
            f"{what}: {len(problems)} file(s) could not be de-identified (nothing half-written "
            f"was kept; the rest was synced and the run can be retried): {shown}"
        ),
        metadata={
            "failed files": dg.MetadataValue.json(dict(sorted(problems.items())[:_MAX_LISTED]))
        },
        allow_retries=False,
    )


# --- assets -------------------------------------------------------------------------------


@dg.asset(
    key=DEIDENTIFIED_SESSION,
    partitions_def=bids_sessions,
    group_name=GROUP,
    code_version=RULES_VERSION,
    kinds={"bids"},
    tags={"aind/flow": "hbcd"},
    metadata={lineage.META_PROCESS_TYPE: "Other"},
    description=(
        "One BIDS session copied from the identified side to the de-identified side with every "
        "identifier replaced (names, TSV ID/site columns, JSON sidecars, NIfTI and gzip "
        "headers, text). Incremental: only changed files are rewritten; files gone from the "
        "source are removed. Checked by a blocking leak scan."
    ),
)
def deidentified_session(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> DeidentifiedFiles:
    key = context.partition_key
    rc, ses = parse_session_partition_key(key)
    idmap = hbcd.idmap()
    result = flow.deidentify_session(hbcd.store, hbcd.layout, idmap, key)
    inputs = [f"{hbcd.layout.identified_bids}#{key}"]
    context.add_output_metadata(_sync_metadata(result, hbcd, inputs))
    _fail_if_needed(result, f"session {key}")
    context.log.info(
        f"{key}: {len(result.written)} written, {result.unchanged} unchanged, "
        f"{len(result.deleted)} deleted, {len(result.unsupported)} unsupported"
    )
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


@dg.asset(
    key=DEIDENTIFIED_DATASET,
    group_name=GROUP,
    code_version=RULES_VERSION,
    kinds={"bids"},
    tags={"aind/flow": "hbcd"},
    description=(
        "The dataset-level files of assembly_bids (participants.tsv with unmapped subjects' "
        "rows dropped, participants.json, dataset_description.json, README...) de-identified."
    ),
)
def deidentified_dataset(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> DeidentifiedFiles:
    idmap = hbcd.idmap()
    result = flow.deidentify_dataset(hbcd.store, hbcd.layout, idmap)
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


def latest_leak_check_passed(instance: dg.DagsterInstance, partition_key: str) -> bool:
    """Whether the newest leak-check evaluation of this session passed."""
    from dagster._core.event_api import PartitionKeyFilter

    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(DEIDENTIFIED_SESSION, LEAK_CHECK),
        limit=1,
        partition_filter=PartitionKeyFilter(key=partition_key),
    )
    if not records or records[0].event is None:
        return False
    evaluation = records[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
    return bool(getattr(evaluation, "passed", False))


@dg.asset(
    key=SESSION_DERIVATIVES,
    partitions_def=bids_sessions,
    deps=[DEIDENTIFIED_SESSION],
    group_name=GROUP,
    code_version=PROCESSING_VERSION,
    kinds={"python", "nifti"},
    tags={"aind/flow": "hbcd"},
    metadata={lineage.META_PROCESS_TYPE: "Analysis"},
    description=(
        f"Local processing ('{PIPELINE}'): per-image statistics and QC metrics from the NIfTI "
        "voxel data of a de-identified session, written to derivatives/ses-<label>/"
        f"{PIPELINE}/sub-<RC>/ses-<label>/ with the input manifest in cbrain_misc/ (last)."
    ),
)
def session_derivatives(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> SessionDerivatives:
    key = context.partition_key
    rc, ses = parse_session_partition_key(key)
    if not latest_leak_check_passed(context.instance, key):
        raise dg.Failure(
            description=(
                f"session {key}: its latest leak check did not pass (or never ran); "
                "re-materialize hbcd/deidentified_session first"
            ),
            allow_retries=False,
        )
    result = flow.process_session(
        hbcd.store,
        hbcd.layout,
        key,
        version=f"{lineage.package_version()}+{PROCESSING_VERSION}",
        code_url=lineage.CODE_URL,
    )
    session_url = f"{hbcd.layout.deidentified_bids}/sub-{rc}/ses-{ses}"
    context.add_output_metadata(
        {
            "images": result.images,
            "inputs": result.inputs,
            "outputs": dg.MetadataValue.json(result.outputs),
            "old outputs removed": len(result.deleted),
            "manifest": result.manifest or "",
            "qc": dg.MetadataValue.json(result.qc),
            lineage.META_INPUTS: [session_url],
            lineage.META_PARAMETERS: {"pipeline": PIPELINE},
        }
    )
    return SessionDerivatives(
        partition_key=key,
        pipeline=PIPELINE,
        images=result.images,
        inputs=result.inputs,
        outputs=result.outputs,
        manifest=result.manifest,
        qc=result.qc,
    )


cbrain_derivatives = dg.AssetSpec(
    key=CBRAIN_DERIVATIVES,
    group_name=GROUP,
    kinds={"cbrain"},
    tags={"aind/flow": "hbcd"},
    description=(
        "Derivatives made elsewhere (CBRAIN) under derivatives/ses-<label>/<pipeline>/ on the "
        "de-identified side, each with an input manifest in cbrain_misc/. Observed by the "
        "hbcd_cbrain_observer sensor; stale ones are deleted by hbcd_derivatives_sensor so "
        "CBRAIN processes them again."
    ),
)


@dg.asset(
    key=REIDENTIFIED_DERIVATIVES,
    deps=[SESSION_DERIVATIVES, CBRAIN_DERIVATIVES],
    group_name=GROUP,
    code_version="1",
    kinds={"python"},
    tags={"aind/flow": "hbcd"},
    pool="hbcd_reidentify",
    description=(
        "derivatives/ synced from the de-identified side to the identified side with "
        "release-candidate IDs replaced by DCCIDs (and anonymized sites by sites) in names and "
        "in .csv .html .json .txt .toml .tsv .log contents; orphans deleted, changed sources "
        "replaced, new ones copied, the rest untouched."
    ),
)
def reidentified_derivatives(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> ReidentifiedDerivatives:
    idmap = hbcd.idmap()
    result = flow.reidentify_derivatives(hbcd.store, hbcd.layout, idmap)
    context.add_output_metadata(
        {
            "new": len(result.new),
            "newer (replaced)": len(result.newer),
            "orphans deleted": result.orphans_deleted,
            "unchanged": result.unchanged,
            "bytes copied": result.bytes_copied,
            "not copied: subject not in the identity map": len(result.unmapped),
            lineage.META_INPUTS: [hbcd.layout.deidentified_derivatives],
            lineage.META_PARAMETERS: {"identified_root": hbcd.identified_root},
        }
    )
    if result.failed:
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:20])
        raise dg.Failure(
            description=(
                f"{len(result.failed)} derivative file(s) could not be re-identified "
                f"(the others were synced): {shown}"
            ),
            allow_retries=False,
        )
    return ReidentifiedDerivatives(
        new=result.new,
        newer=result.newer,
        orphans_deleted=result.orphans_deleted,
        unchanged=result.unchanged,
        unmapped=result.unmapped,
    )
