"""Assets of the de-identification stage (thin: the work is in :mod:`aind_assets.hbcd.deid.store`).

* ``hbcd/deidentified_session``: one BIDS session (+ subject-level files) de-identified;
  partitioned by ``bids_sessions`` (``sub-<RC>_ses-<label>``).
* ``hbcd/deidentified_dataset``: the dataset-level files (``participants.tsv``...).

Every value written by the IO manager (and so every processing record) is identifier-free:
de-identified paths, counts and release-candidate IDs only. The record's inputs name the
identified session by its partition key (``<identified root>/assembly_bids#sub-<RC>_ses-<l>``),
never by its identified path.
"""

import dagster as dg
from pydantic import BaseModel

from aind_assets import lineage
from aind_assets.hbcd.deid.discovery import DATASET_UNIT, RULES_VERSION
from aind_assets.hbcd.deid.store import SyncResult, deidentify_dataset, deidentify_session
from aind_assets.hbcd.identity.replace import parse_session_partition_key
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


def _fail_if_needed(result: SyncResult, what: str) -> None:
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
            "failed files": dg.MetadataValue.json(dict(sorted(problems.items())[:MAX_LISTED]))
        },
        allow_retries=False,
    )


# --- assets -------------------------------------------------------------------------------


@dg.asset(
    key=DEIDENTIFIED_SESSION,
    partitions_def=bids_sessions,
    deps=[IDENTIFIED_SESSION],  # its data version: the source versions consumed (sources/)
    group_name=GROUP,
    code_version=RULES_VERSION,
    kinds={"bids"},
    tags=FLOW_TAGS,
    pool=OBJECT_STORE_POOL,
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
    record_consumed_source(context)  # before reading: a later change shows as Unsynced
    idmap = hbcd.idmap()
    result = deidentify_session(hbcd.store, hbcd.layout, idmap, key)
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
    result = deidentify_dataset(hbcd.store, hbcd.layout, idmap)
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
