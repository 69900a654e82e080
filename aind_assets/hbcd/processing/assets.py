"""Assets of the processing stage (thin: the work is in :mod:`aind_assets.hbcd.processing.store`).

* ``hbcd/session_derivatives``: local processing: per-image statistics and QC metrics.
* ``hbcd/cbrain_derivatives``: external: outputs CBRAIN writes (observed by a sensor).
"""

from typing import Any

import dagster as dg
from pydantic import BaseModel

from aind_assets import lineage
from aind_assets.hbcd.deid.commit import SessionNotCommittedError, require_committed
from aind_assets.hbcd.identity.replace import parse_session_partition_key
from aind_assets.hbcd.keys import (
    CBRAIN_DERIVATIVES,
    DEIDENTIFIED_SESSION,
    FLOW_TAGS,
    GROUP,
    OWNERS,
    SESSION_DERIVATIVES,
    bids_sessions,
    latest_leak_check_passed,
)
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.processing.store import process_session
from aind_assets.hbcd.resources import HbcdResource

#: Version of the local pipeline's code (:mod:`~aind_assets.hbcd.processing.imagestats` and
#: :mod:`~aind_assets.hbcd.processing.store`), bumped by hand when its outputs change: every
#: session's derivatives then show Unsynced ("new code version"). A constant, not a hash of the
#: source, so a comment or a refactoring does not mark thousands of sessions stale.
PROCESSING_VERSION = "1"
TAGS = {**FLOW_TAGS, "hbcd/side": "deidentified", "hbcd/stage": "processing"}


class SessionDerivatives(BaseModel):
    partition_key: str
    pipeline: str
    images: int
    inputs: int
    outputs: list[str]
    manifest: str | None
    qc: dict[str, dict[str, Any]]


@dg.asset(
    key=SESSION_DERIVATIVES,
    partitions_def=bids_sessions,
    deps=[DEIDENTIFIED_SESSION],
    group_name=GROUP,
    code_version=PROCESSING_VERSION,
    owners=OWNERS,
    kinds={"python", "nifti", "s3"},
    tags=TAGS,
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
    try:
        require_committed(hbcd.store, hbcd.layout.deidentified_root, [key], f"session {key}")
    except SessionNotCommittedError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    if not latest_leak_check_passed(context.instance, key):
        raise dg.Failure(
            description=(
                f"session {key}: its latest leak check did not pass (or never ran); "
                "re-materialize hbcd/deidentified_session first"
            ),
            allow_retries=False,
        )
    result = process_session(
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
    owners=OWNERS,
    kinds={"cbrain", "s3"},
    tags=TAGS,
    description=(
        "Derivatives made elsewhere (CBRAIN) under derivatives/ses-<label>/<pipeline>/ on the "
        "de-identified side, each with an input manifest in cbrain_misc/. Observed by the "
        "hbcd_cbrain_observer sensor; stale ones are deleted by hbcd_derivatives_sensor so "
        "CBRAIN processes them again. Each change is recorded as a materialization made "
        "outside Dagster, which triggers re-identification."
    ),
)
