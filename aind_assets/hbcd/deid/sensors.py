"""Sensor, schedule and jobs of the de-identification stage (every run they request carries the
tag ``aind/flow: hbcd``; the production profile limits concurrency by it).

``hbcd_session_discovery`` (sensor) and ``hbcd_daily_deidentification`` (schedule) scan the
identified ``assembly_bids`` and request runs of the job ``hbcd_deidentification``: one
``hbcd/deidentified_session`` run (with its blocking leak check) per batch of up to
``run_batch_size`` new, changed or removed sessions (a range of consecutive registered
partitions; a session whose last attempt failed runs alone). A tick's sessions are spread over
as many runs as the run queue starts at once for the flow (its ``aind/flow: hbcd`` tag limit),
so they start together instead of in waves that each pay a process start. When the
dataset-level files changed, ``hbcd/deidentified_dataset`` rides in the sensor's first run (the
schedule, which retries failures, gives it a run of its own). They never leave more than
``max_queued_runs`` HBCD runs waiting in the queue (the rest is deferred). Partition keys are ``sub-<RC>_ses-<label>``. The sensor
cursor holds only RC-keyed digests of what it requested; the *ledger* on the identified side
records what was done, so the daily schedule re-requests anything not done (failed runs
included) and a lost cursor only causes duplicate requests. Subjects missing from the identity
map are counted in the tick message and listed by name only in the discovery report on the
identified side.
"""

import hashlib
import json
from typing import Any

import dagster as dg

from aind_assets.batches import RANGE_END, RANGE_START, spread_size
from aind_assets.hbcd.deid.batches import fit_in_queue, request_batches
from aind_assets.hbcd.deid.discovery import DATASET_UNIT, RequestPlan, plan_requests, unit_digest
from aind_assets.hbcd.deid.ledger import (
    DiscoveryResult,
    discover_sessions,
    write_discovery_report,
)
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
from aind_assets.hbcd.sources.assets import source_observations
from aind_assets.runs import flow_run_slots, room_in_queue

#: Sessions requested per sensor tick (the rest next tick: ticks must end within 60 s).
MAX_REQUESTS_PER_TICK = 500
#: Dynamic partitions added per request (SQLite storage fails on very large single adds).
PARTITION_CHUNK = 5000


DATASET_LEAK_CHECK_KEY = dg.AssetCheckKey(DEIDENTIFIED_DATASET, LEAK_CHECK)
#: Run tag: how many sessions a batch run covers.
PARTITIONS_TAG = "aind/partitions"


# IN_PROCESS: a run's two steps (de-identify, leak check) run in the run's process. A process
# per step costs seconds of start-up (Dagster and the flow imported again), more than a batch's
# small sessions take; the work inside a step is already concurrent (by subject).
session_job = dg.define_asset_job(
    "hbcd_deidentify_sessions",
    selection=dg.AssetSelection.assets(DEIDENTIFIED_SESSION),
    partitions_def=bids_sessions,
    tags=FLOW_TAGS,
    executor_def=dg.in_process_executor,  # see IN_PROCESS above
    description=(
        "De-identify sessions, each with its blocking leak check. Launch it for one session, a "
        "range of sessions (one run, sessions de-identified concurrently) or a backfill."
    ),
)
dataset_job = dg.define_asset_job(
    "hbcd_deidentify_dataset",
    selection=dg.AssetSelection.assets(DEIDENTIFIED_DATASET),
    tags=FLOW_TAGS,
    executor_def=dg.in_process_executor,  # see IN_PROCESS above
    description=(
        "De-identify the dataset-level files (participants.tsv, dataset_description.json...) "
        "and sessionless subjects, with the blocking leak check."
    ),
)
deidentification_job = dg.define_asset_job(
    "hbcd_deidentification",
    selection=dg.AssetSelection.assets(DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET),
    partitions_def=bids_sessions,
    tags=FLOW_TAGS,
    executor_def=dg.in_process_executor,  # see IN_PROCESS above
    description=(
        "The runs the discovery sensor and the daily schedule request: a batch of sessions "
        "(a range of session partitions, de-identified concurrently, each with its own leak "
        "check result) or the dataset-level files, with the blocking leak checks. Tags "
        "aind/partitions and dagster/asset_partition_range_* say which sessions."
    ),
)


# --- discovery ----------------------------------------------------------------------------


def _selection(dataset: str | None) -> dict[str, Any]:
    """The assets and checks of a session run, with the dataset-level unit when it has work
    (``dataset``: its digest): it rides along instead of waiting for a run slot of its own."""
    if dataset is None:
        return {"asset_selection": [DEIDENTIFIED_SESSION], "asset_check_keys": [LEAK_CHECK_KEY]}
    return {
        "asset_selection": [DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET],
        "asset_check_keys": [LEAK_CHECK_KEY, DATASET_LEAK_CHECK_KEY],
    }


def session_request(key: str, digest: str, dataset: str | None = None) -> dg.RunRequest:
    """The run of one session (a batch of one), and of the dataset-level unit if given."""
    with_dataset = f"+{DATASET_UNIT}:{dataset}" if dataset else ""
    return dg.RunRequest(
        run_key=f"{key}:{digest}{with_dataset}",
        partition_key=key,
        tags=AUTOMATED_TAGS,
        **_selection(dataset),
    )


def batch_request(digests: dict[str, str], dataset: str | None = None) -> dg.RunRequest:
    """The run of a batch of sessions ``{partition key: unit digest}`` whose keys are
    consecutive in registration order (a partition range), and of the dataset-level unit if
    ``dataset`` (its digest) is given."""
    keys = list(digests)
    if len(keys) == 1:
        return session_request(keys[0], digests[keys[0]], dataset)
    members = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]
    with_dataset = f"+{DATASET_UNIT}:{dataset}" if dataset else ""
    return dg.RunRequest(
        run_key=f"batch:{keys[0]}:{len(keys)}:{members}{with_dataset}",
        tags={
            **AUTOMATED_TAGS,
            RANGE_START: keys[0],
            RANGE_END: keys[-1],
            PARTITIONS_TAG: str(len(keys)),
        },
        **_selection(dataset),
    )


def dataset_request(digest: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{DATASET_UNIT}:{digest}",
        asset_selection=[DEIDENTIFIED_DATASET],
        asset_check_keys=[DATASET_LEAK_CHECK_KEY],
        tags=AUTOMATED_TAGS,
    )


def _batched(
    instance: dg.DagsterInstance,
    plan: RequestPlan,
    result: DiscoveryResult,
    size: int,
    room: int,
    *,
    dataset_alone: bool,
) -> tuple[list[dg.RunRequest], list[str]]:
    """The plan's sessions as at most ``room`` runs of up to ``size`` consecutive sessions,
    spread over the HBCD runs the run queue starts at once (its ``aind/flow`` tag limit, when
    it sets one); sessions that do not fit go back to the plan's deferred count. The
    dataset-level unit rides in the first run unless ``dataset_alone`` (the daily schedule:
    it retries what failed, and a failing unit must not fail a batch's run). Returns the run
    requests and the new partition keys to register (in the order the batches assume)."""
    existing = list(instance.get_dynamic_partitions(BIDS_SESSIONS_NAME))
    known = set(existing)
    alone = result.retry_alone & set(plan.sessions)
    new = sorted(k for k in plan.sessions if k not in known and k not in alone)
    slots = flow_run_slots(instance, FLOW)
    if slots is not None:
        size = spread_size(len(plan.sessions) - len(alone), slots, size)
    batches = request_batches(existing + new, plan.sessions, size, alone)
    kept, deferred = fit_in_queue(batches, room)
    chosen = {k for batch in kept for k in batch}
    plan.deferred += deferred
    plan.sessions = {k: d for k, d in plan.sessions.items() if k in chosen}
    plan.removed = [k for k in plan.removed if k in chosen]
    register = [k for k in new if k in chosen] + sorted(k for k in alone - known if k in chosen)
    # the dataset-level unit rides with the first batch that is not a failed session's retry
    host = next((i for i, b in enumerate(kept) if not set(b) & alone), None)
    ride = plan.dataset if host is not None and not dataset_alone else None
    runs = [
        batch_request({k: plan.sessions[k] for k in batch}, ride if i == host else None)
        for i, batch in enumerate(kept)
    ]
    if plan.dataset and ride is None:
        runs.append(dataset_request(plan.dataset))
    return runs, register


def _describe(  # noqa: ANN001
    plan: RequestPlan, discovery, refused: int, runs: list[dg.RunRequest]
) -> str:
    batches = sum(DEIDENTIFIED_SESSION in (r.asset_selection or []) for r in runs)
    parts = [
        f"{len(discovery.sessions)} session(s) found",
        f"{len(plan.sessions)} to de-identify in {batches} run(s) ({len(plan.removed)} removed "
        "from the source)",
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


def _discover(hbcd: HbcdResource, in_flight: dict[str, str], room: int):
    """Discovery and the sessions to request: up to ``room`` runs' worth (whole batches)."""
    limit = min(MAX_REQUESTS_PER_TICK, room * max(1, hbcd.run_batch_size))
    idmap = hbcd.idmap()
    with scrubbed_errors(idmap, "session discovery"):
        result = discover_sessions(hbcd.store, hbcd.layout, idmap)
        write_discovery_report(hbcd.store, hbcd.layout, result)
        plan = plan_requests(
            result.discovery, result.ledger, idmap, in_flight=in_flight, limit=limit
        )
    return result, plan


def _add_requests(keys: list[str]) -> list:
    return [
        bids_sessions.build_add_request(keys[i : i + PARTITION_CHUNK])
        for i in range(0, len(keys), PARTITION_CHUNK)
    ]


@dg.sensor(
    name="hbcd_session_discovery",
    job=deidentification_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "New, changed or removed BIDS sessions on the identified side -> de-identification "
        "runs of batches of sessions (HBCD_RUN_BATCH_SIZE), never more than "
        "AIND_MAX_QUEUED_RUNS_PER_FLOW HBCD runs waiting in the queue."
    ),
)
def hbcd_session_discovery(
    context: dg.SensorEvaluationContext, hbcd: HbcdResource
) -> dg.SensorResult:
    in_flight = decode_cursor(context.cursor)
    room = room_in_queue(context.instance, FLOW, hbcd.max_queued_runs)
    result, plan = _discover(hbcd, in_flight, room)
    runs, register = _batched(
        context.instance, plan, result, hbcd.run_batch_size, room, dataset_alone=False
    )
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
    if plan.dataset:
        state[DATASET_UNIT] = plan.dataset
    message = _describe(plan, result.discovery, len(result.refused), runs)
    context.log.info(message)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=_add_requests(register),
        # the requested sessions' current source versions, observed before their runs start:
        # each run then records the version it reads (the observer alone could come after it)
        asset_events=source_observations(result.discovery, plan.sessions),
        cursor=encode_cursor(state),
        skip_reason=None if runs else dg.SkipReason(message),
    )


@dg.schedule(
    name="hbcd_daily_deidentification",
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    target=deidentification_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily reconciliation: every session whose source differs from what the ledger records "
        "as de-identified (new, changed, removed, or a failed earlier run) is requested."
    ),
)
def hbcd_daily_deidentification(context: dg.ScheduleEvaluationContext, hbcd: HbcdResource):
    # the rest waits for the discovery sensor's next ticks (the ledger says it is not done)
    room = room_in_queue(context.instance, FLOW, hbcd.max_queued_runs)
    result, plan = _discover(hbcd, {}, room)
    runs, register = _batched(
        context.instance, plan, result, hbcd.run_batch_size, room, dataset_alone=True
    )
    # schedules cannot return partition requests: add them before requesting the runs
    for request in _add_requests(register):
        context.instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, list(request.partition_keys))
    message = _describe(plan, result.discovery, len(result.refused), runs)
    context.log.info(message)
    return runs or dg.SkipReason(message)
