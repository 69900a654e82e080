"""The blocking leak check ``no_identifiers`` on ``hbcd/deidentified_session`` and
``hbcd/deidentified_dataset``: every object name and content (gzip member headers, NIfTI header
fields and extensions, UTF-8/UTF-16 text, parsed JSON) is scanned for every DCCID, PSCID and site
ID of the map (objects unchanged since the unit's last clean scan are not read again, nor the
voxel payload of NIfTI-gz files de-identification wrote with unchanged voxels:
:mod:`~aind_assets.hbcd.deid.scanning`). A hit fails the check, which blocks downstream assets of the run; the leaking
objects are deleted from the de-identified side at once and the session's ledger entry is
dropped, so the daily schedule redoes it. Metadata holds counts and redacted locations only.
"""

import dagster as dg

from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.scanning import ScanResult, scan_dataset, scan_session
from aind_assets.hbcd.deid.store import forget_ledger_entry
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
    scan = scan_dataset(hbcd.store, hbcd.layout, hbcd.idmap())
    return _leak_result(scan, hbcd, DATASET_UNIT, "dataset-level files")
