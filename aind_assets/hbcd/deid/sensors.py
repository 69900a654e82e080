"""Sensor, schedule and jobs of the de-identification stage (every run they request carries the
tag ``aind/flow: hbcd``; the production profile limits concurrency by it).

``hbcd_session_discovery`` (sensor) and ``hbcd_daily_deidentification`` (schedule) scan the
identified ``assembly_bids`` and request a ``hbcd/deidentified_session`` run (with its blocking
leak check) for every new, changed or removed session, and a ``hbcd/deidentified_dataset`` run
when the dataset-level files changed. Partition keys are ``sub-<RC>_ses-<label>``. The sensor
cursor holds only RC-keyed digests of what it requested; the *ledger* on the identified side
records what was done, so the daily schedule re-requests anything not done (failed runs
included) and a lost cursor only causes duplicate requests. Subjects missing from the identity
map are counted in the tick message and listed by name only in the discovery report on the
identified side.
"""

import dagster as dg

from aind_assets.hbcd.deid.discovery import DATASET_UNIT, RequestPlan, plan_requests, unit_digest
from aind_assets.hbcd.deid.ledger import discover_sessions, write_discovery_report
from aind_assets.hbcd.identity.scrub import scrubbed_errors
from aind_assets.hbcd.keys import (
    AUTOMATED_TAGS,
    BIDS_SESSIONS_NAME,
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    FLOW,
    FLOW_TAGS,
    LEAK_CHECK,
    LEAK_CHECK_KEY,
    bids_sessions,
    decode_cursor,
    encode_cursor,
)
from aind_assets.hbcd.resources import HbcdResource
from aind_assets.runs import room_in_queue

#: Sessions requested per sensor tick (the rest next tick: ticks must end within 60 s).
MAX_REQUESTS_PER_TICK = 500
#: Dynamic partitions added per request (SQLite storage fails on very large single adds).
PARTITION_CHUNK = 5000


DATASET_LEAK_CHECK_KEY = dg.AssetCheckKey(DEIDENTIFIED_DATASET, LEAK_CHECK)


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


# --- discovery ----------------------------------------------------------------------------


def session_request(key: str, digest: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{key}:{digest}",
        partition_key=key,
        asset_selection=[DEIDENTIFIED_SESSION],
        asset_check_keys=[LEAK_CHECK_KEY],
        tags=AUTOMATED_TAGS,
    )


def dataset_request(digest: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{DATASET_UNIT}:{digest}",
        asset_selection=[DEIDENTIFIED_DATASET],
        asset_check_keys=[DATASET_LEAK_CHECK_KEY],
        tags=AUTOMATED_TAGS,
    )


def _describe(plan: RequestPlan, discovery, refused: int = 0) -> str:  # noqa: ANN001
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
    if refused:
        parts.append(
            f"{refused} file(s) refused (type not allowed, unmapped subject or name collision; "
            "listed by type and reason in the discovery report)"
        )
    if discovery.sessionless_files:
        parts.append(
            f"{len(discovery.sessionless_files)} subject(s) without a session folder "
            "(de-identified with the dataset-level files)"
        )
    if plan.orphaned:
        parts.append(
            f"{plan.orphaned} de-identified session(s) belong to subjects no longer in the "
            "identity map (left in place)"
        )
    return "; ".join(parts)


def _discover(hbcd: HbcdResource, in_flight: dict[str, str], limit: int | None):
    idmap = hbcd.idmap()
    with scrubbed_errors(idmap, "session discovery"):
        result = discover_sessions(hbcd.store, hbcd.layout, idmap)
        write_discovery_report(hbcd.store, hbcd.layout, result)
        plan = plan_requests(
            result.discovery, result.ledger, idmap, in_flight=in_flight, limit=limit
        )
    return result, plan


def _add_partitions(instance: dg.DagsterInstance, keys: list[str]) -> list:
    existing = set(instance.get_dynamic_partitions(BIDS_SESSIONS_NAME))
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
    room = room_in_queue(context.instance, FLOW, hbcd.max_queued_runs)
    result, plan = _discover(hbcd, in_flight, min(MAX_REQUESTS_PER_TICK, room))
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
    message = _describe(plan, result.discovery, len(result.refused))
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
    # the rest waits for the discovery sensor's next ticks (the ledger says it is not done)
    result, plan = _discover(hbcd, {}, room_in_queue(context.instance, FLOW, hbcd.max_queued_runs))
    # schedules cannot return partition requests: add them before requesting the runs
    for request in _add_partitions(context.instance, list(plan.sessions)):
        context.instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, list(request.partition_keys))
    runs = [session_request(k, d) for k, d in plan.sessions.items()]
    if plan.dataset:
        runs.append(dataset_request(plan.dataset))
    message = _describe(plan, result.discovery, len(result.refused))
    context.log.info(message)
    return runs or dg.SkipReason(message)
