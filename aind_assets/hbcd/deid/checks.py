"""Asset checks of the HBCD flow.

* ``no_identifiers`` (blocking) on ``hbcd/deidentified_session`` and ``hbcd/deidentified_dataset``:
  every object name and content (gzip member headers, NIfTI header fields and extensions,
  UTF-8/UTF-16 text, parsed JSON) is scanned for every DCCID, PSCID and site ID of the map. A
  hit fails the check, which blocks downstream assets of the run; the leaking objects are
  deleted from the de-identified side at once and the session's ledger entry is dropped, so the
  daily schedule redoes it. Metadata holds counts and redacted locations only.
* ``inputs_in_sync`` on ``hbcd/session_derivatives`` (per session) and
  ``hbcd/cbrain_derivatives`` (all sessions): each input manifest against the current
  de-identified session (keys and sizes; ``sessions.tsv``/``.json`` ignored). The derivatives
  sensor reports failing evaluations of these checks when it deletes stale derivatives.
"""

from collections import defaultdict

import dagster as dg

from aind_assets.hbcd.deid import store as flow
from aind_assets.hbcd.deid.assets import (
    CBRAIN_DERIVATIVES,
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    LEAK_CHECK,
    SESSION_DERIVATIVES,
    STALENESS_CHECK,
    bids_sessions,
)
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.identity.replace import session_partition_key
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.processing.manifests import parse_manifest_relpath
from aind_assets.hbcd.resources import HbcdResource

_MAX_LISTED = 100


def _leak_result(
    scan: flow.ScanResult, hbcd: HbcdResource, unit: str, what: str
) -> dg.AssetCheckResult:
    removed = 0
    if not scan.clean:
        hbcd.store.delete(scan.leaking)
        removed = len(scan.leaking)
        flow.forget_ledger_entry(hbcd.store, hbcd.layout, unit)
    locations = [str(f) for f in scan.findings[:_MAX_LISTED]]
    return dg.AssetCheckResult(
        passed=scan.clean,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{what}: no identifier in {scan.scanned} object(s)"
            if scan.clean
            else (
                f"{what}: {len(scan.findings)} finding(s) in {len(scan.leaking)} object(s); "
                "those objects were removed from the de-identified side"
            )
        ),
        metadata={
            "objects scanned": scan.scanned,
            "bytes scanned": scan.bytes_scanned,
            "findings": len(scan.findings),
            "findings by kind": dg.MetadataValue.json(scan.by_kind()),
            "locations (redacted)": dg.MetadataValue.json(locations),
            "leaking objects removed": removed,
        },
    )


@dg.asset_check(
    asset=DEIDENTIFIED_SESSION,
    name=LEAK_CHECK,
    blocking=True,
    partitions_def=bids_sessions,
    description="Scan every de-identified object of the session for every identifier of the map.",
)
def session_has_no_identifiers(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> dg.AssetCheckResult:
    key = context.partition_key
    scan = flow.scan_session(hbcd.store, hbcd.layout, hbcd.idmap(), key)
    return _leak_result(scan, hbcd, key, f"session {key}")


@dg.asset_check(
    asset=DEIDENTIFIED_DATASET,
    name=LEAK_CHECK,
    blocking=True,
    description="Scan the de-identified dataset-level files for every identifier of the map.",
)
def dataset_has_no_identifiers(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> dg.AssetCheckResult:
    scan = flow.scan_dataset(hbcd.store, hbcd.layout, hbcd.idmap())
    return _leak_result(scan, hbcd, DATASET_UNIT, "dataset-level files")


def staleness_metadata(statuses: list[flow.ManifestStatus]) -> dict:
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
    statuses = flow.derivative_status(hbcd.store, hbcd.layout, key, pipelines=[PIPELINE])
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
    for info in flow.list_manifests(hbcd.store, hbcd.layout):
        try:
            name = parse_manifest_relpath(info.url)
        except ValueError:
            continue
        if name.pipeline != PIPELINE:
            by_session[session_partition_key(name.rc_id, name.session)].add(name.pipeline)
    results = hbcd.store.map_concurrently(
        lambda item: flow.derivative_status(
            hbcd.store, hbcd.layout, item[0], pipelines=sorted(item[1])
        ),
        sorted(by_session.items()),
    )
    statuses = [s for group in results for s in group]
    stale = [s for s in statuses if s.stale]
    return dg.AssetCheckResult(
        passed=not stale,
        description=f"{len(stale)} of {len(statuses)} CBRAIN derivative(s) are stale",
        metadata=staleness_metadata(stale or statuses),
    )
