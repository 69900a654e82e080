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

The session check runs once per run over all the run's sessions (a partition range when the
sensor batched them) and reports one result per session: a leak in one session fails that
session's result and keeps its marker, the others pass and are committed; the step then fails
(blocking), naming the check.
"""

from typing import Any

import dagster as dg

from aind_assets.hbcd.deid.batches import run_by_subject
from aind_assets.hbcd.deid.commit import commit_session_write
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.ledger import forget_ledger_entry
from aind_assets.hbcd.deid.scanning import ScanResult, scan_dataset, scan_session, scan_units
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.scrub import Scrubber, error_reason
from aind_assets.hbcd.keys import (
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    LEAK_CHECK,
    LEAK_CHECK_KEY,
    bids_sessions,
)
from aind_assets.hbcd.resources import HbcdResource
from aind_assets.partition_metadata import newest_by_partition
from aind_assets.runs import OBJECT_STORE_POOL

_MAX_LISTED = 100


def _leak_outcome(scan: ScanResult, hbcd: HbcdResource, unit: str, what: str):
    """(passed, description, metadata) of one unit's scan; a leak's objects are removed and the
    unit's ledger entry dropped at once."""
    removed = 0
    if not scan.clean:
        hbcd.store.delete(scan.leaking)
        removed = len(scan.leaking)
        forget_ledger_entry(hbcd.store, hbcd.layout, unit)
    locations = [str(f) for f in scan.findings[:_MAX_LISTED]]
    description = (
        f"{what}: no identifier in {scan.scanned} object(s)"
        if scan.clean
        else (
            f"{what}: {len(scan.findings)} finding(s) in {len(scan.leaking)} object(s); "
            "those objects were removed from the de-identified side"
        )
    )
    metadata = {
        "objects scanned": scan.scanned,
        "objects unchanged since a clean scan": scan.unchanged,
        "NIfTI-gz read up to their voxel data only": scan.voxels_skipped,
        "bytes scanned": scan.bytes_scanned,
        "findings": len(scan.findings),
        "findings by kind": dg.MetadataValue.json(scan.by_kind()),
        "locations (redacted)": dg.MetadataValue.json(locations),
        "leaking objects removed": removed,
    }
    return scan.clean, description, metadata


def _leak_result(scan: ScanResult, hbcd: HbcdResource, unit: str, what: str) -> dg.AssetCheckResult:
    passed, description, metadata = _leak_outcome(scan, hbcd, unit, what)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _session_evaluation(
    key: str, passed: bool, description: str, metadata: dict
) -> dg.AssetCheckEvaluation:
    """The leak check result of one session of the run (blocking: a failed one fails the step
    once every session was checked, and so blocks what the run has downstream)."""
    return dg.AssetCheckEvaluation(
        asset_key=DEIDENTIFIED_SESSION,
        check_name=LEAK_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
        blocking=True,
        partition=key,
    )


@dg.asset_check(
    asset=DEIDENTIFIED_SESSION,
    name=LEAK_CHECK,
    blocking=True,
    partitions_def=bids_sessions,
    pool=OBJECT_STORE_POOL,
    description="Scan every de-identified object of the session for every identifier of the map.",
)
def session_has_no_identifiers(
    context: dg.AssetCheckExecutionContext, hbcd: HbcdResource
) -> Any:  # yields AssetCheckEvaluations and the Output (typed as one result)
    # One result per session of the run (a partition range in a batch): a leak in one session
    # fails that session's check and keeps its writing marker; the others pass and commit.
    keys = list(context.partition_keys)
    idmap = hbcd.idmap()
    scans, errors = _scan_sessions(hbcd, idmap, keys)
    mine = _materialized_by_this_run(context, keys)
    scrub = Scrubber(idmap)
    for key in keys:
        error = errors.get(key)
        if error is not None:  # not scanned: not committed, its marker stays
            reason = error_reason(error, scrub)
            yield _session_evaluation(
                key, False, f"session {key}: could not be scanned: {reason}", {"error": reason}
            )
            continue
        passed, description, metadata = _leak_outcome(scans[key], hbcd, key, f"session {key}")
        if passed and key in mine:
            # the last step of the session's commit protocol (files, ledger, value and record done)
            commit_session_write(hbcd.store, hbcd.layout.deidentified_root, key)
        yield _session_evaluation(key, passed, description, metadata)
    # the check's own output: what blocking checks make downstream steps wait for
    yield dg.Output(
        None,
        output_name=context.op_execution_context.assets_def.get_output_name_for_asset_check_key(
            LEAK_CHECK_KEY
        ),
    )


def _scan_sessions(
    hbcd: HbcdResource, idmap: IdentityMap, keys: list[str]
) -> tuple[dict[str, ScanResult], dict[str, BaseException]]:
    """Scan the run's sessions in one batch (one listing per subject, records read together);
    if that fails, scan them one by one so that one unreadable session fails only its own
    result. Returns (scans, errors) by session key."""
    try:
        return scan_units(hbcd.store, hbcd.layout, idmap, keys), {}
    except Exception:  # noqa: BLE001 - isolated below, each session's own error reported
        done = run_by_subject(
            keys,
            lambda key: scan_session(hbcd.store, hbcd.layout, idmap, key),
            hbcd.num_parallel_workers,
        )
        return dict(done.values), dict(done.errors)


def _materialized_by_this_run(context: dg.AssetCheckExecutionContext, keys: list[str]) -> set[str]:
    """The sessions whose newest materialization is this run's (a check run on its own, after
    a run that stopped halfway, does not complete that run's write): two event-log queries for
    the whole batch, not one per session."""
    newest = newest_by_partition(
        context.instance, DEIDENTIFIED_SESSION, dg.DagsterEventType.ASSET_MATERIALIZATION, keys
    )
    run_id = context.op_execution_context.run_id
    return {key for key, record in newest.items() if record.run_id == run_id}


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
