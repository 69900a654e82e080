"""The blocking leak check ``no_identifiers`` on ``hbcd/deidentified_session`` and
``hbcd/deidentified_dataset``: every object name and content (gzip member headers, NIfTI header
fields and extensions, UTF-8/UTF-16 text, parsed JSON) is scanned for every DCCID, PSCID and site
ID of the map (objects unchanged since the unit's last clean scan are not read again, nor the
voxel payload of NIfTI-gz files de-identification wrote with unchanged voxels:
:mod:`~aind_assets.hbcd.deid.scanning`). A hit fails the check, which blocks downstream assets of the run; the leaking
objects are deleted from the de-identified side at once and the session's ledger entry is
dropped, so the daily schedule redoes it. Metadata holds counts and redacted locations only.
A passed session check on its own run's materialization completes the session's commit
protocol (:mod:`~aind_assets.hbcd.deid.commit`): it removes the session's writing marker.
"""

import dagster as dg

from aind_assets.hbcd.deid.commit import commit_session_write
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.ledger import forget_ledger_entry
from aind_assets.hbcd.deid.scanning import ScanResult, scan_dataset, scan_session
from aind_assets.hbcd.keys import (
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    LEAK_CHECK,
    bids_sessions,
)
from aind_assets.hbcd.resources import HbcdResource

_MAX_LISTED = 100


def _leak_result(scan: ScanResult, hbcd: HbcdResource, unit: str, what: str) -> dg.AssetCheckResult:
    removed = 0
    if not scan.clean:
        hbcd.store.delete(scan.leaking)
        removed = len(scan.leaking)
        forget_ledger_entry(hbcd.store, hbcd.layout, unit)
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
            "objects unchanged since a clean scan": scan.unchanged,
            "NIfTI-gz read up to their voxel data only": scan.voxels_skipped,
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
    scan = scan_session(hbcd.store, hbcd.layout, hbcd.idmap(), key)
    result = _leak_result(scan, hbcd, key, f"session {key}")
    if scan.clean and _materialized_by_this_run(context, key):
        # the last step of the session's commit protocol (files, ledger, value and record done)
        commit_session_write(hbcd.store, hbcd.layout.deidentified_root, key)
    return result


def _materialized_by_this_run(context: dg.AssetCheckExecutionContext, key: str) -> bool:
    """Whether the newest materialization of the session is this run's (a check run on its
    own, after a run that stopped halfway, does not complete that run's write)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DEIDENTIFIED_SESSION, asset_partitions=[key]), limit=1
    ).records
    return bool(records) and records[0].run_id == context.op_execution_context.run_id


@dg.asset_check(
    asset=DEIDENTIFIED_DATASET,
    name=LEAK_CHECK,
    blocking=True,
    description="Scan the de-identified dataset-level files for every identifier of the map.",
)
def dataset_has_no_identifiers(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> dg.AssetCheckResult:
    scan = scan_dataset(hbcd.store, hbcd.layout, hbcd.idmap())
    return _leak_result(scan, hbcd, DATASET_UNIT, "dataset-level files")
