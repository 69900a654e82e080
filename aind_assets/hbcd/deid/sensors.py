"""Sensors, schedules and jobs of the HBCD flow. Every run they request carries the tag
``aind/flow: hbcd`` (the production profile limits concurrency by it).

* ``hbcd_session_discovery`` (sensor) and ``hbcd_daily_deidentification`` (schedule): scan the
  identified ``assembly_bids`` and request a ``hbcd/deidentified_session`` run (with its
  blocking leak check) for every new, changed or removed session, and a
  ``hbcd/deidentified_dataset`` run when the dataset-level files changed. Partition keys are
  ``sub-<RC>_ses-<label>``. The sensor cursor holds only RC-keyed digests of what it requested;
  the *ledger* on the identified side records what was done, so the daily schedule re-requests
  anything not done (failed runs included) and a lost cursor only causes duplicate requests.
  Subjects missing from the identity map are counted in the tick message and listed by name
  only in the discovery report on the identified side.
* ``hbcd_derivatives_sensor``: for every session re-materialized whose leak check passed,
  compare each derivative's input manifest with the session; stale derivatives (and their
  manifests) are deleted, a failing ``inputs_in_sync`` evaluation is reported, and the local
  processing is requested again (CBRAIN re-processes sessions without outputs by itself).
  Sessions without local derivatives get their first processing run.
* ``hbcd_cbrain_observer``: observes the CBRAIN manifests; new or changed ones are checked for
  staleness at once.
* ``hbcd_reidentify_sensor`` / ``hbcd_daily_reidentification``: request
  ``hbcd/reidentified_derivatives`` after derivatives changed (and daily).
"""

import hashlib
import json
import time
from collections import defaultdict

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from aind_assets.hbcd.deid import store as flow
from aind_assets.hbcd.deid.assets import (
    CBRAIN_DERIVATIVES,
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    FLOW_TAGS,
    LEAK_CHECK,
    REIDENTIFIED_DERIVATIVES,
    SESSION_DERIVATIVES,
    STALENESS_CHECK,
    bids_sessions,
)
from aind_assets.hbcd.deid.checks import cbrain_derivatives_in_sync, staleness_metadata
from aind_assets.hbcd.deid.discovery import (
    DATASET_UNIT,
    RequestPlan,
    decode_cursor,
    encode_cursor,
    plan_requests,
    unit_digest,
)
from aind_assets.hbcd.identity.replace import parse_session_partition_key, session_partition_key
from aind_assets.hbcd.processing.imagestats import PIPELINE
from aind_assets.hbcd.processing.manifests import parse_manifest_relpath
from aind_assets.hbcd.resources import HbcdResource

#: Sessions requested per sensor tick (the rest next tick: ticks must end within 60 s).
MAX_REQUESTS_PER_TICK = 500
#: Dynamic partitions added per request (SQLite storage fails on very large single adds).
PARTITION_CHUNK = 5000
#: Session materializations examined per derivatives-sensor tick.
MAX_SESSIONS_PER_TICK = 200
#: A materialization whose leak check has not run after this long is dropped (reported).
CHECK_WAIT_SECONDS = 24 * 3600

LEAK_CHECK_KEY = dg.AssetCheckKey(DEIDENTIFIED_SESSION, LEAK_CHECK)
DATASET_LEAK_CHECK_KEY = dg.AssetCheckKey(DEIDENTIFIED_DATASET, LEAK_CHECK)
SESSION_STALENESS_KEY = dg.AssetCheckKey(SESSION_DERIVATIVES, STALENESS_CHECK)
CBRAIN_STALENESS_KEY = dg.AssetCheckKey(CBRAIN_DERIVATIVES, STALENESS_CHECK)

# --- jobs (for operators; the sensors request the same selections) ------------------------

session_job = dg.define_asset_job(
    "hbcd_deidentify_sessions",
    selection=dg.AssetSelection.assets(DEIDENTIFIED_SESSION),
    partitions_def=bids_sessions,
    tags=FLOW_TAGS,
    description="De-identify sessions (with the blocking leak check).",
)
dataset_job = dg.define_asset_job(
    "hbcd_deidentify_dataset",
    selection=dg.AssetSelection.assets(DEIDENTIFIED_DATASET),
    tags=FLOW_TAGS,
)
processing_job = dg.define_asset_job(
    "hbcd_process_sessions",
    selection=dg.AssetSelection.assets(SESSION_DERIVATIVES),
    partitions_def=bids_sessions,
    tags=FLOW_TAGS,
)
reidentify_job = dg.define_asset_job(
    "hbcd_reidentify_derivatives",
    selection=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES),
    tags=FLOW_TAGS,
)
cbrain_check_job = dg.define_asset_job(
    "hbcd_check_cbrain_derivatives",
    selection=dg.AssetSelection.checks(cbrain_derivatives_in_sync),
    tags=FLOW_TAGS,
    description="Sweep every CBRAIN input manifest for staleness (report only).",
)


# --- discovery ----------------------------------------------------------------------------


def session_request(key: str, digest: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{key}:{digest}",
        partition_key=key,
        asset_selection=[DEIDENTIFIED_SESSION],
        asset_check_keys=[LEAK_CHECK_KEY],
        tags=FLOW_TAGS,
    )


def dataset_request(digest: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{DATASET_UNIT}:{digest}",
        asset_selection=[DEIDENTIFIED_DATASET],
        asset_check_keys=[DATASET_LEAK_CHECK_KEY],
        tags=FLOW_TAGS,
    )


def _describe(plan: RequestPlan, discovery) -> str:  # noqa: ANN001 - flow.Discovery
    parts = [
        f"{len(discovery.sessions)} session(s) found",
        f"{len(plan.sessions)} to de-identify ({len(plan.removed)} removed from the source)",
    ]
    if plan.dataset:
        parts.append("dataset-level files changed")
    if plan.deferred:
        parts.append(f"{plan.deferred} deferred to the next tick")
    if discovery.unmapped_subjects:
        parts.append(
            f"{discovery.unmapped_subjects} subject folder(s) not in the identity map were not "
            "processed (listed in the discovery report on the identified side)"
        )
    if plan.orphaned:
        parts.append(
            f"{plan.orphaned} de-identified session(s) belong to subjects no longer in the "
            "identity map (left in place)"
        )
    return "; ".join(parts)


def _discover(hbcd: HbcdResource, in_flight: dict[str, str], limit: int | None):
    idmap = hbcd.idmap()
    with flow.scrubbed_errors(idmap, "session discovery"):
        result = flow.discover_sessions(hbcd.store, hbcd.layout, idmap)
        flow.write_discovery_report(hbcd.store, hbcd.layout, result)
        plan = plan_requests(
            result.discovery, result.ledger, idmap, in_flight=in_flight, limit=limit
        )
    return result, plan


def _add_partitions(instance: dg.DagsterInstance, keys: list[str]) -> list:
    existing = set(instance.get_dynamic_partitions(bids_sessions.name))
    new = [k for k in keys if k not in existing]
    return [
        bids_sessions.build_add_request(new[i : i + PARTITION_CHUNK])
        for i in range(0, len(new), PARTITION_CHUNK)
    ]


@dg.sensor(
    name="hbcd_session_discovery",
    target=dg.AssetSelection.assets(DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New, changed or removed BIDS sessions on the identified side -> de-identification.",
)
def hbcd_session_discovery(
    context: dg.SensorEvaluationContext, hbcd: HbcdResource
) -> dg.SensorResult:
    in_flight = decode_cursor(context.cursor)
    result, plan = _discover(hbcd, in_flight, MAX_REQUESTS_PER_TICK)
    ledger = result.ledger
    # keep only requests not yet recorded as done (failed ones stay: the schedule retries them)
    state = {}
    for unit, digest in in_flight.items():
        entry = ledger.get(unit)
        done = entry is not None and (
            entry.session_digest == digest
            if unit == DATASET_UNIT
            else unit_digest(entry.session_digest, entry.subject_digest) == digest
        )
        if not done:
            state[unit] = digest
    state.update(plan.sessions)
    runs = [session_request(k, d) for k, d in plan.sessions.items()]
    if plan.dataset:
        state[DATASET_UNIT] = plan.dataset
        runs.append(dataset_request(plan.dataset))
    message = _describe(plan, result.discovery)
    context.log.info(message)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=_add_partitions(context.instance, list(plan.sessions)),
        cursor=encode_cursor(state),
        skip_reason=None if runs else dg.SkipReason(message),
    )


@dg.schedule(
    name="hbcd_daily_deidentification",
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily reconciliation: every session whose source differs from what the ledger records "
        "as de-identified (new, changed, removed, or a failed earlier run) is requested."
    ),
)
def hbcd_daily_deidentification(context: dg.ScheduleEvaluationContext, hbcd: HbcdResource):
    result, plan = _discover(hbcd, {}, None)
    # schedules cannot return partition requests: add them before requesting the runs
    for request in _add_partitions(context.instance, list(plan.sessions)):
        context.instance.add_dynamic_partitions(bids_sessions.name, list(request.partition_keys))
    runs = [session_request(k, d) for k, d in plan.sessions.items()]
    if plan.dataset:
        runs.append(dataset_request(plan.dataset))
    message = _describe(plan, result.discovery)
    context.log.info(message)
    return runs or dg.SkipReason(message)


# --- derivatives: staleness and first processing ------------------------------------------


def processing_request(key: str, reason: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=key,
        asset_selection=[SESSION_DERIVATIVES],
        asset_check_keys=[SESSION_STALENESS_KEY],
        tags={**FLOW_TAGS, "hbcd/reason": reason},
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

    def one(key: str) -> tuple[str, list[flow.ManifestStatus], int]:
        rc, ses = parse_session_partition_key(key)
        current = flow.session_listing(store, layout, rc, ses)
        statuses = flow.derivative_status(store, layout, key, current=current)
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
            flow.delete_derivative(store, layout, key, status.pipeline)
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
    ready, counts = [], defaultdict(int)
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
    for info in flow.list_manifests(hbcd.store, hbcd.layout):
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
        "Observe the CBRAIN derivatives (their input manifests); new or changed ones are "
        "checked for staleness at once."
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
    events.append(
        dg.AssetObservation(
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


# --- re-identification --------------------------------------------------------------------


def reidentify_request(run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key, asset_selection=[REIDENTIFIED_DERIVATIVES], tags=FLOW_TAGS
    )


@dg.sensor(
    name="hbcd_reidentify_sensor",
    target=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES),
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Derivatives changed (processed, or CBRAIN outputs observed) -> re-identify.",
)
def hbcd_reidentify_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else None
    latest = after or 0
    for fetch, key in (
        (context.instance.fetch_materializations, SESSION_DERIVATIVES),
        (context.instance.fetch_observations, CBRAIN_DERIVATIVES),
    ):
        records = fetch(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1, ascending=False
        ).records
        if records:
            latest = max(latest, records[0].storage_id)
    if latest == (after or 0):
        return dg.SensorResult(skip_reason=dg.SkipReason("no derivative changed"))
    return dg.SensorResult(
        run_requests=[reidentify_request(f"reidentify:{latest}")], cursor=str(latest)
    )


@dg.schedule(
    name="hbcd_daily_reidentification",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def hbcd_daily_reidentification(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return reidentify_request(f"daily:{context.scheduled_execution_time.isoformat()}")


SENSORS = [
    hbcd_session_discovery,
    hbcd_derivatives_sensor,
    hbcd_cbrain_observer,
    hbcd_reidentify_sensor,
]
SCHEDULES = [hbcd_daily_deidentification, hbcd_daily_reidentification]
JOBS = [session_job, dataset_job, processing_job, reidentify_job, cbrain_check_job]
