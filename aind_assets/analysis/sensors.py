"""Discovery sensors: one per dispatch spec, paging DocDB by a ``(last_modified, _id)`` cursor.

A tick pages through the records modified after its cursor (:mod:`.discovery`) until a page is
not full or ``tick_budget_s`` has passed — the cursor is saved after every page, so a first
discovery of 100k records spreads over several ticks, each well inside Dagster's 60 s — stores
each partition's records in the partition map, adds the partitions Dagster does not have (in
chunks of :data:`ADD_CHUNK` keys) and requests runs for the partitions that are new or whose
records changed (a new member of a group, say): one run per batch of up to ``run_batch_size``
partitions consecutive in registration order (a partition range, run by the assets'
single-run backfill policy), one run per partition when ``run_batch_size`` is 1. With ``remove_gone`` a bounded sweep over the
partition map deletes partitions the spec no longer yields.

The cursor is JSON: ``{"after": <encoded (last_modified, _id)>, "sweep": <last key swept>}``.
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from aind_assets.analysis import paging
from aind_assets.analysis.assets import FLOW
from aind_assets.analysis.discovery import (
    SAME,
    DiscoveredPartition,
    KnownPartitions,
    discover_pages,
    find_gone,
)
from aind_assets.analysis.keys import observation, partitions_def
from aind_assets.analysis.models import DispatchSpec
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.batches import contiguous_batches
from aind_assets.runs import automated_tags

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"

#: Keys per AddDynamicPartitionsRequest (SQLite storage fails with ~36k keys at once).
ADD_CHUNK = 1000
#: Tag values stay short: longer id lists are in the partition map only.
MAX_TAG_CHARS = 1000
#: The cursor's format. 2: one partition set per spec (a cursor without it predates them, so
#: discovery starts over and fills the spec's own set; existing results are found by hash).
CURSOR_VERSION = 2


@dataclass
class TickPlan:
    """What one discovery tick found and asks Dagster to do."""

    cursor: dict
    add_keys: list[str] = field(default_factory=list)
    runs: dict[str, DiscoveredPartition] = field(default_factory=dict)
    delete_keys: list[str] = field(default_factory=list)
    records: int = 0
    pages: int = 0
    partitions: int = 0
    #: records that cannot become partitions, with the reason (see inputs.row_problems)
    rejected: list[str] = field(default_factory=list)


def run_tags(part: DiscoveredPartition) -> dict[str, str]:
    tags = {
        **automated_tags(FLOW),
        "aind/dispatch_spec": part.spec,
        "aind/data_assets": str(len(part.asset_name)),
    }
    ids = json.dumps([str(i) for i in part.docdb_record_id])
    if len(ids) <= MAX_TAG_CHARS:
        tags["aind/docdb_record_ids"] = ids
    if part.group_metadata:
        group = json.dumps(part.group_metadata, sort_keys=True, default=str)
        if len(group) <= MAX_TAG_CHARS:
            tags["aind/group_metadata"] = group
    return tags


def plan_tick(
    analysis: AnalysisResource,
    spec: DispatchSpec,
    cursor_text: str | None,
    has_partition: Callable[[str], bool],
    all_partitions: Callable[[], Iterable[str]] | None = None,
) -> TickPlan:
    """Page, record the partition map and decide which partitions to add, run and delete.

    ``has_partition(key)`` / ``all_partitions()`` tell which keys Dagster has (see
    :class:`KnownPartitions`)."""
    state = json.loads(cursor_text) if cursor_text else {}
    if state.get("v") != CURSOR_VERSION:
        state = {}
    cursor = paging.decode_cursor(state.get("after"))
    plan = TickPlan(cursor={**state, "v": CURSOR_VERSION})
    analysis.ensure_indexes()
    pmap = analysis.partition_map()
    registered = KnownPartitions(has_partition, all_partitions)
    for page in discover_pages(
        analysis.docdb,
        analysis.assets_collection,
        spec,
        cursor,
        analysis.page_size,
        budget_s=analysis.tick_budget_s,
    ):
        exists = registered.check([p.key for p in page.partitions])
        statuses = pmap.record(page.partitions, exists=exists.__getitem__)
        for part in page.partitions:
            if not exists[part.key]:
                plan.add_keys.append(part.key)
            if not exists[part.key] or statuses.get(part.key) != SAME:
                plan.runs[part.key] = part  # a key seen twice in one tick runs once, latest
        registered.add(p.key for p in page.partitions)
        plan.records += page.records
        plan.pages += 1
        plan.partitions += len(page.partitions)
        plan.rejected.extend(page.rejected)
        plan.cursor["after"] = paging.encode_cursor(page.cursor)
    if analysis.remove_gone:
        chunks = pmap.chunks(spec.name, after=state.get("sweep"), limit=analysis.sweep_batch)
        entries = [e for chunk in chunks for e in chunk.get("entries") or []]
        gone = find_gone(analysis.docdb, analysis.assets_collection, spec, entries)
        pmap.remove(spec.name, gone)
        for key in gone:  # the spec's own partition set loses them, whatever other specs hold
            plan.runs.pop(key, None)
            plan.delete_keys.append(key)
        plan.add_keys = [k for k in plan.add_keys if k not in plan.delete_keys]
        # the next tick sweeps the next chunk(s); after the last one, it starts over
        plan.cursor["sweep"] = chunks[-1]["_id"] if chunks else None
    return plan


def _chunks(keys: Sequence[str], size: int) -> list[list[str]]:
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def batch_tags(parts: Sequence[DiscoveredPartition]) -> dict[str, str]:
    """The tags of a run over several partitions (a range: consecutive registered keys)."""
    return {
        **automated_tags(FLOW),
        "aind/dispatch_spec": parts[0].spec,
        "aind/data_assets": str(sum(len(p.asset_name) for p in parts)),
        "aind/partitions": str(len(parts)),
        RANGE_START: parts[0].key,
        RANGE_END: parts[-1].key,
    }


def run_requests(
    plan: TickPlan, order: Sequence[str] | None = None, batch_size: int = 1
) -> list[dg.RunRequest]:
    """One run per batch of at most ``batch_size`` partitions that are consecutive in ``order``
    (the registration order, new keys of the tick included); one run per partition without."""
    if batch_size <= 1 or order is None:
        batches = [[key] for key in plan.runs]
    else:
        batches = contiguous_batches(order, plan.runs, batch_size)
    requests = []
    for batch in batches:
        parts = [plan.runs[k] for k in batch]
        if len(parts) == 1:
            part = parts[0]
            requests.append(
                dg.RunRequest(
                    partition_key=part.key,
                    run_key=f"{part.spec}:{part.key}:{part.members_hash}",
                    tags=run_tags(part),
                )
            )
            continue
        members = hashlib.sha256(
            json.dumps([[p.key, p.members_hash] for p in parts]).encode()
        ).hexdigest()[:16]
        requests.append(
            dg.RunRequest(run_key=f"{parts[0].spec}:batch:{members}", tags=batch_tags(parts))
        )
    return requests


def to_sensor_result(
    plan: TickPlan,
    existing: Callable[[str], bool],
    *,
    spec: str,
    request_runs: bool = True,
    order: Sequence[str] | None = None,
    batch_size: int = 1,
) -> dg.SensorResult:
    """The tick's result: partitions added to / deleted from the spec's own set, an observation
    (data version) of every new or changed partition, and the runs."""
    pdef = partitions_def(spec)
    requests: list = [pdef.build_add_request(chunk) for chunk in _chunks(plan.add_keys, ADD_CHUNK)]
    deletes = [k for k in plan.delete_keys if existing(k)]
    if deletes:
        requests.append(pdef.build_delete_request(deletes))
    events = [observation(spec, k, part.members_hash) for k, part in plan.runs.items()]
    runs = run_requests(plan, order, batch_size) if request_runs else []
    cursor = json.dumps(plan.cursor, sort_keys=True)
    if not runs:
        found = (
            f"{len(plan.runs)} new or changed partition(s), {len(plan.add_keys)} registered; "
            "runs are not requested (AIND_ANALYSIS_REQUEST_RUNS=0)"
            if plan.runs
            else "no new or changed partition"
        )
        removed = f"; {len(deletes)} removed" if deletes else ""
        if plan.rejected:
            removed += f"; {len(plan.rejected)} record problem(s): " + "; ".join(plan.rejected[:5])
        return dg.SensorResult(
            cursor=cursor,
            dynamic_partitions_requests=requests,
            asset_events=events,
            skip_reason=dg.SkipReason(
                f"{plan.records} changed record(s) in {plan.pages} page(s): {found}{removed}"
            ),
        )
    return dg.SensorResult(
        run_requests=runs,
        cursor=cursor,
        dynamic_partitions_requests=requests,
        asset_events=events,
    )


def build_discovery_sensor(
    spec: DispatchSpec,
    job: str,
    *,
    minimum_interval_seconds: int,
    running: bool,
) -> dg.SensorDefinition:
    """The discovery sensor of one dispatch spec; its runs are runs of the spec's job."""
    what = "group" if spec.group_by else "data asset"

    @dg.sensor(
        name=f"discover_{spec.name}",
        job_name=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description=(
            f"Finds DocDB records of dispatch spec `{spec.name}` modified since its last tick, "
            f"adds a partition per new {what} to the `{spec.name}` partitions, records each "
            f"changed partition's data version and runs job `{job}` on new or changed "
            "partitions (several consecutive partitions per run)."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, analysis: AnalysisResource):
        dispatch_config, _ = analysis.load()
        instance = context.instance

        def has(key: str) -> bool:
            return instance.has_dynamic_partition(spec.name, key)

        def every() -> list[str]:
            return list(instance.get_dynamic_partitions(spec.name))

        plan = plan_tick(analysis, dispatch_config[spec.name], context.cursor, has, every)
        for problem in plan.rejected:
            context.log.warning(f"not registered: {problem}")
        context.log.info(
            f"{spec.name}: {plan.records} record(s) in {plan.pages} page(s) -> "
            f"{plan.partitions} partition(s), {len(plan.add_keys)} new, {len(plan.runs)} to run, "
            f"{len(plan.delete_keys)} removed"
        )
        # registration order after this tick's additions (a batch is a range of it)
        known = every()
        seen = set(known)
        order = known + [k for k in plan.add_keys if k not in seen]
        return to_sensor_result(
            plan,
            has,
            spec=spec.name,
            request_runs=analysis.request_runs,
            order=order,
            batch_size=analysis.run_batch_size,
        )

    return _sensor


__all__ = [
    "ADD_CHUNK",
    "TickPlan",
    "batch_tags",
    "build_discovery_sensor",
    "plan_tick",
    "run_requests",
    "run_tags",
]
