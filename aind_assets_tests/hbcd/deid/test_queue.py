"""People's runs first: the discovery sensor and the daily schedule request runs below the
priority of people's runs, and never leave more than the configured number of HBCD runs waiting
in the queue; what they defer is requested on later ticks, nothing is lost."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from aind_assets.batches import RANGE_END, RANGE_START
from aind_assets.hbcd.deid.commit import begin_session_write, sessions_being_written
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.ledger import forget_ledger_entry, read_ledger
from aind_assets.hbcd.deid.sensors import (
    hbcd_daily_deidentification,
    hbcd_session_discovery,
    session_job,
)
from aind_assets.hbcd.keys import DEIDENTIFIED_DATASET, DEIDENTIFIED_SESSION
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.runs import (
    AUTOMATED_PRIORITY,
    FLOW_TAG,
    PRIORITY_TAG,
    flow_run_slots,
    waiting_runs,
)
from aind_assets_tests.hbcd.flow_support import World, make_world


def _world(store: ObjectStoreResource, tmp_path: Path, batch: int, hbcd_slots: int | None = None):
    home = tmp_path / "dagster_home"
    home.mkdir()
    queue = {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": 4,
                "tag_concurrency_limits": [{"key": FLOW_TAG, "value": "hbcd", "limit": hbcd_slots}],
            },
        }
    }
    overrides = queue if hbcd_slots else None
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        yield make_world(
            store,
            None,
            instance,
            tmp_path,
            n_subjects=3,
            sessions=("V02", "V03"),
            max_queued_runs=4,
            run_batch_size=batch,
        )


@pytest.fixture
def world(local_store: ObjectStoreResource, tmp_path: Path):
    """One run per session (``HBCD_RUN_BATCH_SIZE=1``)."""
    yield from _world(local_store, tmp_path, 1)


@pytest.fixture
def batched(local_store: ObjectStoreResource, tmp_path: Path):
    """Up to 4 sessions per run."""
    yield from _world(local_store, tmp_path, 4)


@pytest.fixture
def two_slots(local_store: ObjectStoreResource, tmp_path: Path):
    """Up to 50 sessions per run, and a run queue that starts 2 HBCD runs at once (as the local
    profile's ``dagster.yaml``)."""
    yield from _world(local_store, tmp_path, 50, hbcd_slots=2)


def _queue(world: World, n: int, flow: str = "hbcd") -> None:
    """Put ``n`` runs of ``flow`` in the queue (created, not started), as earlier ticks would."""
    job = world.defs.resolve_job_def(session_job.name)
    for _ in range(n):
        world.instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.NOT_STARTED, tags={FLOW_TAG: flow}
        )


def _session_requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return [r for r in result.run_requests or [] if r.partition_key]


def test_discovery_fills_only_the_room_left_in_the_queue_and_defers_the_rest(world) -> None:
    _queue(world, 2)  # 2 HBCD runs already waiting
    _queue(world, 5, flow="analysis")  # another flow's runs do not count
    assert waiting_runs(world.instance, "hbcd") == 2

    first = world.tick(hbcd_session_discovery)
    assert isinstance(first, dg.SensorResult)
    requested = _session_requests(first)
    assert len(requested) == 2  # 4 allowed - 2 waiting; 6 sessions found
    for request in first.run_requests or []:
        assert request.tags[PRIORITY_TAG] == str(AUTOMATED_PRIORITY)
        assert request.tags[FLOW_TAG] == "hbcd"

    # the queue is full now (the requested runs wait too): the next tick defers everything
    _queue(world, len(first.run_requests or []))
    full = world.tick(hbcd_session_discovery)
    assert not isinstance(full, dg.SensorResult) or _session_requests(full) == []

    # once the queue drains, the deferred sessions are requested, each once
    for run in world.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.NOT_STARTED])):
        world.instance.report_run_canceled(run)
    later: list[str] = []
    for _ in range(3):
        tick = world.tick(hbcd_session_discovery)
        if isinstance(tick, dg.SensorResult):
            later += [r.partition_key for r in _session_requests(tick)]
    earlier = [r.partition_key for r in requested]
    assert len(later) == 4 and not set(later) & set(earlier)
    assert len(set(earlier + later)) == 6


def test_the_daily_schedule_respects_the_queue_too(world) -> None:
    _queue(world, 3)
    with dg.build_schedule_context(
        instance=world.instance, resources={"hbcd": world.hbcd}
    ) as context:
        result = hbcd_daily_deidentification(context)
    runs = result if isinstance(result, list) else []
    assert len([r for r in runs if r.partition_key]) == 1  # 4 allowed - 3 waiting
    assert all(r.tags[PRIORITY_TAG] == str(AUTOMATED_PRIORITY) for r in runs)


def test_people_runs_keep_the_default_priority() -> None:
    """Jobs people launch carry the flow tag and no lowered priority."""
    assert session_job.tags == {FLOW_TAG: "hbcd"}


def _batch_keys(world: World, request: dg.RunRequest) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    order = list(world.instance.get_dynamic_partitions("bids_sessions"))
    start, end = request.tags[RANGE_START], request.tags[RANGE_END]
    return order[order.index(start) : order.index(end) + 1]


def test_sessions_are_requested_in_batches_that_fit_the_room_left(batched) -> None:
    w = batched
    _queue(w, 3)  # room for 1 more HBCD run
    first = w.tick(hbcd_session_discovery)
    assert isinstance(first, dg.SensorResult)
    [run] = [r for r in first.run_requests or [] if DEIDENTIFIED_SESSION in r.asset_selection]
    keys = _batch_keys(w, run)
    # 4 sessions (the batch size) consecutive in registration order, one run; 2 deferred
    assert len(keys) == 4 and run.tags["aind/partitions"] == "4"
    assert run.tags[PRIORITY_TAG] == str(AUTOMATED_PRIORITY) and run.tags[FLOW_TAG] == "hbcd"
    # only what was requested is registered (a range must not skip a deferred key)
    assert list(w.instance.get_dynamic_partitions("bids_sessions")) == keys
    assert hbcd_session_discovery.job_name == "hbcd_deidentification"

    for run in w.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.NOT_STARTED])):
        w.instance.report_run_canceled(run)
    second = w.tick(hbcd_session_discovery)
    assert isinstance(second, dg.SensorResult)
    later = [
        k
        for r in second.run_requests or []
        if DEIDENTIFIED_SESSION in r.asset_selection
        for k in _batch_keys(w, r)
    ]
    assert len(second.run_requests or []) == 1 and len(later) == 2
    assert not set(later) & set(keys)


def test_a_batch_run_completes_every_session_of_it(batched) -> None:
    w = batched
    tick = w.tick(hbcd_session_discovery)
    assert isinstance(tick, dg.SensorResult)
    sessions = [r for r in tick.run_requests or [] if DEIDENTIFIED_SESSION in r.asset_selection]
    assert [len(_batch_keys(w, r)) for r in sessions] == [4, 2]
    for request in tick.run_requests or []:
        assert w.run(request).success
    assert sessions_being_written(w.store, w.layout.deidentified_root) == set()
    assert set(read_ledger(w.store, w.layout).entries) >= set(
        w.instance.get_dynamic_partitions("bids_sessions")
    )
    # nothing left to do
    again = w.tick(hbcd_session_discovery)
    assert not isinstance(again, dg.SensorResult) or not again.run_requests


def test_a_tick_is_spread_over_the_flow_run_slots_with_the_dataset_riding_along(
    two_slots,
) -> None:
    w = two_slots
    assert flow_run_slots(w.instance, "hbcd") == 2 and flow_run_slots(w.instance, "x") is None
    tick = w.tick(hbcd_session_discovery)
    assert isinstance(tick, dg.SensorResult)
    runs = tick.run_requests or []
    # 6 sessions, 2 slots: 2 runs of 3 that start together; the dataset-level files in the first
    assert [len(_batch_keys(w, r)) for r in runs] == [3, 3]
    assert runs[0].asset_selection == [DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET]
    assert runs[1].asset_selection == [DEIDENTIFIED_SESSION]
    for request in runs:
        assert w.run(request).success
    assert DATASET_UNIT in read_ledger(w.store, w.layout).entries
    again = w.tick(hbcd_session_discovery)
    assert not isinstance(again, dg.SensorResult) or not again.run_requests


def test_the_daily_schedule_gives_the_dataset_files_a_run_of_their_own(two_slots) -> None:
    w = two_slots
    with dg.build_schedule_context(instance=w.instance, resources={"hbcd": w.hbcd}) as context:
        runs = hbcd_daily_deidentification(context)
    assert isinstance(runs, list)
    sessions = [r for r in runs if DEIDENTIFIED_SESSION in r.asset_selection]
    assert [len(_batch_keys(w, r)) for r in sessions] == [3, 3]
    assert [r.asset_selection for r in runs if r not in sessions] == [[DEIDENTIFIED_DATASET]]


def test_the_dataset_files_never_ride_with_a_failed_session_retried_alone(two_slots) -> None:
    w = two_slots
    first = w.tick(hbcd_session_discovery)
    assert isinstance(first, dg.SensorResult)
    for request in first.run_requests or []:
        assert w.run(request).success
    # then one session's new attempt starts (writing marker up) and never completes, and the
    # dataset-level files change: the session is retried alone, the dataset has a run of its own
    failed = _batch_keys(w, (first.run_requests or [])[0])[0]
    forget_ledger_entry(w.store, w.layout, failed)
    begin_session_write(w.store, w.layout.deidentified_root, failed)
    readme = f"{w.layout.identified_bids}/README"
    w.store.put_bytes(readme, b"a dataset README, new\n")
    w.cursors.clear()
    tick = w.tick(hbcd_session_discovery)
    assert isinstance(tick, dg.SensorResult)
    selections = sorted((r.partition_key or "", r.asset_selection) for r in tick.run_requests or [])
    assert selections == [("", [DEIDENTIFIED_DATASET]), (failed, [DEIDENTIFIED_SESSION])]
