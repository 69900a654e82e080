"""Staleness checks of the processing stage: ``inputs_in_sync`` on ``hbcd/session_derivatives``
(per session) and ``hbcd/cbrain_derivatives`` (all sessions): each input manifest against the
current de-identified session (keys and sizes; ``sessions.tsv``/``.json`` ignored). The
derivatives sensor reports failing evaluations of these checks when it deletes stale
derivatives.
"""

from collections import defaultdict

import dagster as dg

from aind_assets.hbcd.identity.replace import session_partition_key
from aind_assets.hbcd.keys import (
    CBRAIN_DERIVATIVES,
    SESSION_DERIVATIVES,
    STALENESS_CHECK,
    bids_sessions,
)
from aind_assets.hbcd.manifests import parse_manifest_relpath
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.processing.store import ManifestStatus, derivative_status, list_manifests
from aind_assets.hbcd.resources import HbcdResource

_MAX_LISTED = 100


def staleness_metadata(statuses: list[ManifestStatus]) -> dict:
    return {
        "manifests": len(statuses),
        "stale": sum(s.stale for s in statuses),
        "details": dg.MetadataValue.json(
            [
                {
                    "pipeline": s.pipeline,
                    "manifest": s.manifest,
                    "stale": s.stale,
                    **(s.staleness.summary() if s.staleness else {"error": s.error}),
                }
                for s in statuses[:_MAX_LISTED]
            ]
        ),
    }


@dg.asset_check(
    asset=SESSION_DERIVATIVES,
    name=STALENESS_CHECK,
    partitions_def=bids_sessions,
    description=(
        "The session's input manifest matches the current de-identified session (keys and sizes)."
    ),
)
def session_derivatives_in_sync(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> dg.AssetCheckResult:
    key = context.partition_key
    statuses = derivative_status(hbcd.store, hbcd.layout, key, pipelines=[PIPELINE])
    passed = bool(statuses) and not any(s.stale for s in statuses)
    return dg.AssetCheckResult(
        passed=passed,
        description=None if statuses else "no input manifest: the derivative is missing",
        metadata=staleness_metadata(statuses),
    )


@dg.asset_check(
    asset=CBRAIN_DERIVATIVES,
    name=STALENESS_CHECK,
    description=(
        "Every CBRAIN input manifest matches its current de-identified session (a full sweep; "
        "the derivatives sensor deletes stale ones as sessions change)."
    ),
)
def cbrain_derivatives_in_sync(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> dg.AssetCheckResult:
    by_session: dict[str, set[str]] = defaultdict(set)
    for info in list_manifests(hbcd.store, hbcd.layout):
        try:
            name = parse_manifest_relpath(info.url)
        except ValueError:
            continue
        if name.pipeline != PIPELINE:
            by_session[session_partition_key(name.rc_id, name.session)].add(name.pipeline)
    results = hbcd.store.map_concurrently(
        lambda item: derivative_status(hbcd.store, hbcd.layout, item[0], pipelines=sorted(item[1])),
        sorted(by_session.items()),
    )
    statuses = [s for group in results for s in group]
    stale = [s for s in statuses if s.stale]
    return dg.AssetCheckResult(
        passed=not stale,
        description=f"{len(stale)} of {len(statuses)} CBRAIN derivative(s) are stale",
        metadata=staleness_metadata(stale or statuses),
    )
