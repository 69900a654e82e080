"""Sensors and jobs of the processing stage (every run they request carries ``aind/flow: hbcd``).

* ``hbcd_derivatives_sensor``: for every session re-materialized whose leak check passed,
  compare each derivative's input manifest with the session; stale derivatives (and their
  manifests) are deleted, a failing ``inputs_in_sync`` evaluation is reported, and the local
  processing is requested again (CBRAIN re-processes sessions without outputs by itself).
  Sessions without local derivatives get their first processing run.
  This stays a sensor rather than an automation condition: for one session, deleting the stale
  derivative and requesting its re-processing must happen in that order (a deletion racing a
  processing run could remove fresh outputs), it reports failing ``inputs_in_sync`` evaluations
  and sessions whose leak check failed or never ran, and a condition can neither delete nor
  report (``all_deps_blocking_checks_passed`` could only gate).
* ``hbcd_cbrain_observer``: watches the CBRAIN manifests; new or changed ones are checked for
  staleness at once, and each change is reported as an external materialization of
  ``hbcd/cbrain_derivatives`` (an observation would not trigger automation conditions).
"""

import hashlib
import json
import time
from collections import defaultdict

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from aind_assets.hbcd.identity.replace import parse_session_partition_key, session_partition_key
from aind_assets.hbcd.keys import (
    AUTOMATED_TAGS,
    CBRAIN_DERIVATIVES,
    DEIDENTIFIED_SESSION,
    FLOW_TAGS,
    LEAK_CHECK_KEY,
    SESSION_DERIVATIVES,
    STALENESS_CHECK,
    decode_cursor,
    encode_cursor,
)
from aind_assets.hbcd.manifests import parse_manifest_relpath
from aind_assets.hbcd.processing.checks import cbrain_derivatives_in_sync, staleness_metadata
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.processing.store import (
    ManifestStatus,
    delete_derivative,
    derivative_status,
    list_manifests,
    session_listing,
)
from aind_assets.hbcd.resources import HbcdResource

#: Session materializations examined per derivatives-sensor tick.
MAX_SESSIONS_PER_TICK = 200
#: A materialization whose leak check has not run after this long is dropped (reported).
CHECK_WAIT_SECONDS = 24 * 3600


SESSION_STALENESS_KEY = dg.AssetCheckKey(SESSION_DERIVATIVES, STALENESS_CHECK)
CBRAIN_STALENESS_KEY = dg.AssetCheckKey(CBRAIN_DERIVATIVES, STALENESS_CHECK)


processing_job = dg.define_asset_job(
    "hbcd_process_sessions",
    selection=dg.AssetSelection.assets(SESSION_DERIVATIVES),
    tags=FLOW_TAGS,
    description=(
        "Run the local pipeline (per-image statistics and QC) on de-identified sessions and "
        "check each result against its session."
    ),
)


cbrain_check_job = dg.define_asset_job(
    "hbcd_check_cbrain_derivatives",
    selection=dg.AssetSelection.checks(cbrain_derivatives_in_sync),
    tags=FLOW_TAGS,
    description="Sweep every CBRAIN input manifest for staleness (report only).",
)


# --- derivatives: staleness and first processing ------------------------------------------


def processing_request(key: str, reason: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=key,
        asset_selection=[SESSION_DERIVATIVES],
        asset_check_keys=[SESSION_STALENESS_KEY],
        tags={**AUTOMATED_TAGS, "hbcd/reason": reason},
    )


def _latest_check(instance: dg.DagsterInstance, key: str):
    records = instance.event_log_storage.get_asset_check_execution_history(
        LEAK_CHECK_KEY, limit=1, partition_filter=PartitionKeyFilter(key=key)
    )
    return records[0] if records else None


def _check_outcome(record) -> str:  # noqa: ANN001 - AssetCheckExecutionRecord
    """ "passed", "failed" or "pending" for a leak-check execution record."""
    if record is None:
        return "missing"
    if record.status == AssetCheckExecutionRecordStatus.PLANNED:
        return "pending"
    if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED and record.event is not None:
        evaluation = record.event.dagster_event.event_specific_data
        return "passed" if getattr(evaluation, "passed", False) else "failed"
    return "failed"


def evaluate_derivatives(
    hbcd: HbcdResource, keys: list[str], *, local: bool = True
) -> tuple[list[dg.RunRequest], list, dict[str, int]]:
    """For verified sessions: delete stale derivatives, request (re-)processing. Returns run
    requests, asset events (check evaluations) and counts. With ``local=False`` only the
    pipelines run elsewhere are looked at (and no processing is requested)."""
    store, layout = hbcd.store, hbcd.layout

    def one(key: str) -> tuple[str, list[ManifestStatus], int]:
        rc, ses = parse_session_partition_key(key)
        current = session_listing(store, layout, rc, ses)
        statuses = derivative_status(store, layout, key, current=current)
        if not local:
            statuses = [s for s in statuses if s.pipeline != PIPELINE]
        return key, statuses, len(current)

    runs: list[dg.RunRequest] = []
    events: list = []
    counts: dict[str, int] = defaultdict(int)
    for key, statuses, n_inputs in store.map_concurrently(one, keys):
        has_local = any(s.pipeline == PIPELINE for s in statuses)
        for status in statuses:
            if not status.stale:
                continue
            delete_derivative(store, layout, key, status.pipeline)
            counts["stale derivatives deleted"] += 1
            local = status.pipeline == PIPELINE
            meta = {
                **staleness_metadata([status]),
                "partition": key,
                "action": "derivative and manifest deleted"
                + ("; processing requested" if local else "; CBRAIN will re-process"),
            }
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=SESSION_DERIVATIVES if local else CBRAIN_DERIVATIVES,
                    check_name=STALENESS_CHECK,
                    passed=False,
                    partition=key if local else None,
                    metadata=meta,
                    description=f"{status.pipeline} derivative of {key} was stale",
                )
            )
            if local and n_inputs:
                runs.append(processing_request(key, "stale"))
        if local and not has_local and n_inputs:
            counts["first processing requested"] += 1
            runs.append(processing_request(key, "new"))
    return runs, events, dict(counts)


@dg.sensor(
    name="hbcd_derivatives_sensor",
    target=dg.AssetSelection.assets(SESSION_DERIVATIVES),
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After a session is re-materialized and its leak check passed: delete stale derivatives "
        "and request (re-)processing."
    ),
)
def hbcd_derivatives_sensor(
    context: dg.SensorEvaluationContext, hbcd: HbcdResource
) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    after: int | None = state.get("after")
    pending: dict[str, list] = dict(state.get("pending", {}))  # key -> [run id, timestamp]
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DEIDENTIFIED_SESSION, after_storage_id=after),
        limit=MAX_SESSIONS_PER_TICK,
        ascending=True,
    ).records
    for r in records:
        if r.partition_key:
            pending[r.partition_key] = [r.run_id, r.timestamp]
        after = r.storage_id
    ready: list[str] = []
    counts: defaultdict[str, int] = defaultdict(int)
    now = time.time()
    for key, (_run_id, ts) in list(pending.items()):
        outcome = _check_outcome(_latest_check(context.instance, key))
        if outcome == "passed":
            ready.append(key)
            del pending[key]
        elif outcome == "failed":
            counts["leak check failed (not processed)"] += 1
            del pending[key]
        elif now - ts > CHECK_WAIT_SECONDS:
            counts["no leak check ran (not processed)"] += 1
            del pending[key]
    runs, events, more = evaluate_derivatives(hbcd, sorted(ready))
    counts.update(more)
    cursor = json.dumps({"after": after, "pending": pending})
    message = (
        f"{len(ready)} verified session(s) examined, {len(pending)} awaiting their leak check"
        + "".join(f"; {k}: {v}" for k, v in sorted(counts.items()))
    )
    context.log.info(message)
    return dg.SensorResult(
        run_requests=runs,
        asset_events=events,
        cursor=cursor,
        skip_reason=None if runs or events else dg.SkipReason(message),
    )


# --- CBRAIN observation -------------------------------------------------------------------


def _manifests_by_session(hbcd: HbcdResource) -> dict[str, dict[str, str]]:
    """partition key -> {manifest URL: ETag} of the pipelines run elsewhere (not local)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for info in list_manifests(hbcd.store, hbcd.layout):
        try:
            name = parse_manifest_relpath(info.url)
        except ValueError:
            continue
        if name.pipeline == PIPELINE:
            continue
        out[session_partition_key(name.rc_id, name.session)][info.url] = info.etag or ""
    return out


def _digest(manifests: dict[str, str]) -> str:
    text = "\n".join(f"{u.rsplit('/', 1)[-1]}\t{e}" for u, e in sorted(manifests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dg.sensor(
    name="hbcd_cbrain_observer",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watch the CBRAIN derivatives (their input manifests): new or changed ones are checked "
        "for staleness at once, and each change is recorded as a materialization of "
        "hbcd/cbrain_derivatives made outside Dagster (which triggers re-identification)."
    ),
)
def hbcd_cbrain_observer(
    context: dg.SensorEvaluationContext, hbcd: HbcdResource
) -> dg.SensorResult:
    previous = decode_cursor(context.cursor)
    by_session = _manifests_by_session(hbcd)
    current = {key: _digest(m) for key, m in by_session.items()}
    changed = sorted(k for k, d in current.items() if previous.get(k) != d)
    removed = sorted(k for k in previous if k not in current)
    if not changed and not removed:
        return dg.SensorResult(
            cursor=encode_cursor(current),
            skip_reason=dg.SkipReason(
                f"{len(current)} session(s) with CBRAIN derivatives; no change"
            ),
        )
    _, events, counts = evaluate_derivatives(hbcd, changed, local=False)
    if counts.get("stale derivatives deleted"):
        by_session = _manifests_by_session(hbcd)
        current = {key: _digest(m) for key, m in by_session.items()}
    pipelines = sorted({parse_manifest_relpath(u).pipeline for m in by_session.values() for u in m})
    overall = hashlib.sha256(json.dumps(sorted(current.items())).encode()).hexdigest()[:16]
    # reported as an external materialization: CBRAIN wrote them, Dagster records the update
    # (with a data version) so that re-identification's automation condition sees it
    events.append(
        dg.AssetMaterialization(
            asset_key=CBRAIN_DERIVATIVES,
            metadata={
                "sessions with CBRAIN derivatives": len(current),
                "manifests": sum(len(m) for m in by_session.values()),
                "pipelines": dg.MetadataValue.json(pipelines),
                "sessions new or changed": len(changed),
                "sessions whose CBRAIN derivatives disappeared": len(removed),
                "stale derivatives deleted": counts.get("stale derivatives deleted", 0),
            },
            tags={"dagster/data_version": overall},
        )
    )
    return dg.SensorResult(asset_events=events, cursor=encode_cursor(current))
