"""Exact per-partition lineage: a ranged run writes, for each partition, what a run of that
partition alone writes (materialization metadata, ``processing.json``, DocDB records), times
and run ids aside; a partition with nothing to run says so (``aind/status``)."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from aind_assets.analysis.checks import (
    FAILED,
    HAS_RESULTS,
    NOTHING_TO_RUN,
    RESULTS,
    STATUS,
)
from aind_assets.io_managers.commit import committed_folder
from aind_assets_tests.analysis.conftest import RECORDS, World
from aind_assets_tests.analysis.conftest import RESULTS as RESULTS_COLLECTION
from aind_assets_tests.analysis.test_flow import ANALYSES, DISPATCH, apply, failure_message, tick
from aind_assets_tests.support import VOLATILE_METADATA, normalized

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
ASSETS = [DISPATCH, *ANALYSES]
UQ = "analysis/ephys_units/unit_quality"
#: and the plot: a presigned URL
VOLATILE = VOLATILE_METADATA | {"plot"}


def materialize_range(
    world: World,
    instance: dg.DagsterInstance,
    keys: list[str],
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run of the flow's assets over ``keys[0]...keys[-1]`` (a ranged run)."""
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=world.resources(),
        tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        run_config=run_config,
        raise_on_error=False,
    )


def by_partition(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(asset, partition): metadata}`` of a run's materializations (volatile keys dropped)."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta = {k: v.value for k, v in mat.metadata.items() if k not in VOLATILE}
        out[(mat.asset_key.to_user_string(), mat.partition)] = normalized(meta)
    return out


def written(world: World, asset: str, key: str) -> tuple[Any, Any]:
    """The committed ``processing.json`` of one output and its DocDB record, normalized."""
    root = world.store.url("dagster-io")
    folder = committed_folder(world.store.upath(f"{root}/{asset}/{key}"))
    processing = json.loads((folder / "processing.json").read_text())
    record = world.docdb.find_one(
        RECORDS, {"asset_key": asset, "partition_key": key, "status": "current"}
    )
    assert record is not None
    record = {k: v for k, v in record.items() if k not in ("_id", "name", "run_id", "version")}
    return normalized(processing), normalized(record)


def results_records(world: World) -> list[Any]:
    docs = world.docdb.find(RESULTS_COLLECTION, {})
    return sorted(
        (normalized({k: v for k, v in d.items() if k not in ("created", "dagster")}) for d in docs),
        key=lambda d: d["_id"],
    )


def forget_everything(world: World) -> None:
    """Back to before any materialization (same data assets, same partitions)."""
    for collection in (RECORDS, RESULTS_COLLECTION, f"{RECORDS}_commits"):
        world.docdb.delete_many(collection, {})
    for prefix in ("dagster-io", "analysis-results"):
        world.store.delete(world.store.url(prefix), recursive=True)


def test_a_ranged_run_writes_for_each_partition_what_a_one_partition_run_writes(
    world: World, instance: dg.DagsterInstance
) -> None:
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    keys = instance.get_dynamic_partitions("ephys_units")[:4]
    assert len(keys) == 4

    ranged = materialize_range(world, instance, keys)
    assert ranged.success, failure_message(ranged)
    ranged_meta = by_partition(ranged)
    ranged_files = {
        (a.key.to_user_string(), k): written(world, a.key.to_user_string(), k)
        for a in ASSETS
        for k in keys
    }
    ranged_results = results_records(world)

    forget_everything(world)
    alone_meta: dict[tuple[str, str], dict[str, Any]] = {}
    for key in keys:
        one = dg.materialize(
            ASSETS,
            partition_key=key,
            instance=instance,
            resources=world.resources(),
            raise_on_error=False,
        )
        assert one.success, failure_message(one)
        alone_meta.update(by_partition(one))
    alone_files = {
        (a.key.to_user_string(), k): written(world, a.key.to_user_string(), k)
        for a in ASSETS
        for k in keys
    }

    assert sorted(ranged_meta) == sorted(alone_meta)
    for where, meta in alone_meta.items():
        assert ranged_meta[where] == meta, where
    for where, (processing, record) in alone_files.items():
        assert ranged_files[where][0] == processing, where
        assert ranged_files[where][1] == record, where
    assert ranged_results == results_records(world)

    # each partition's lineage names its own inputs only
    for key in keys:
        own = {
            u
            for r in world.records
            if r["name"] == key or key in json.dumps(r["name"])
            for u in [r["location"]]
        }
        meta = ranged_meta[(UQ, key)]
        assert set(meta["lineage/inputs"]) <= own, (key, meta["lineage/inputs"])
        processing, _ = ranged_files[(UQ, key)]
        inputs = [d["url"] for d in processing["data_processes"][0]["code"]["input_data"] or []]
        assert all(f"/analysis/ephys_units/dispatch/{key}/" in u or u in own for u in inputs), (
            inputs
        )
        assert any(f"/analysis/ephys_units/dispatch/{key}/" in u for u in inputs), inputs

    # results, nothing to run: told apart on each partition's materialization
    statuses = {k: ranged_meta[(UQ, k)][STATUS] for k in keys}
    assert set(statuses.values()) == {RESULTS, NOTHING_TO_RUN}, statuses
    checks = check_evaluations(ranged, UQ)
    assert checks == {k: (s == RESULTS, s) for k, s in statuses.items()}
    for key, status in statuses.items():
        meta = ranged_meta[(UQ, key)]
        assert (meta["completed"] > 0) == (status == RESULTS)
        assert ("results" in meta) == (status == RESULTS)


def check_evaluations(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """``{partition: (passed, aind/status)}`` of the run's ``has_results`` evaluations."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.asset_key.to_user_string() == asset and data.check_name == HAS_RESULTS:
                out[data.partition] = (data.passed, data.metadata[STATUS].value)
    return out


def test_partitions_with_results_nothing_to_run_or_a_failed_job_are_told_apart(
    world: World, instance: dg.DagsterInstance
) -> None:
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    keys = instance.get_dynamic_partitions("ephys_units")[:4]
    with_nwb = [
        k
        for k in keys
        if any(
            i.url.endswith(".nwb") for i in world.store.list_objects(world.by_name(k)["location"])
        )
    ]
    assert len(with_nwb) >= 2 and len(with_nwb) < len(keys)
    bad_key = with_nwb[0]
    bad = world.by_name(bad_key)
    world.store.put_bytes(f"{bad['location']}/nwb/{bad['name']}.nwb", b"not HDF5" * 100)

    run_config = {
        "ops": {
            "analysis__ephys_units__unit_quality": {"config": {"num_parallel_workers": 3}},
            "analysis__ephys_units__behavior_performance": {"config": {"num_parallel_workers": 1}},
        }
    }
    ranged = materialize_range(world, instance, keys, run_config)
    assert not ranged.success
    message = failure_message(ranged)
    # the failure names its partition; the other partitions' jobs all ran and kept results
    assert f"in partition(s) {bad_key}:" in message
    for key in with_nwb[1:]:
        name = world.by_name(key)["name"]
        assert world.docdb.count(RESULTS_COLLECTION, {"input_asset_names": name}) == 3
    assert world.docdb.count(RESULTS_COLLECTION, {"input_asset_names": bad["name"]}) == 0

    checks = check_evaluations(ranged, UQ)
    assert sorted(checks) == sorted(keys)
    for key in keys:
        expected = FAILED if key == bad_key else RESULTS if key in with_nwb else NOTHING_TO_RUN
        assert checks[key] == (expected == RESULTS, expected), key

    # the bad file repaired, a re-run of the range skips what was done and completes the rest
    world.store.put_tree(world.nwb_dir / bad["name"], bad["location"])
    again = materialize_range(world, instance, keys)
    assert again.success, failure_message(again)
    checks = check_evaluations(again, UQ)
    for key in keys:
        expected = RESULTS if key in with_nwb else NOTHING_TO_RUN
        assert checks[key] == (expected == RESULTS, expected), key
    meta = by_partition(again)
    assert meta[(UQ, bad_key)]["completed"] == 2
    assert meta[(UQ, with_nwb[1])]["skipped"] == 2


def test_sensors_request_batches_of_consecutive_partitions_run_as_ranges(
    world: World, instance: dg.DagsterInstance
) -> None:
    world.seed()
    result = tick(world, instance, "ephys_units", None, run_batch_size=3)
    apply(instance, result)
    order = instance.get_dynamic_partitions("ephys_units")
    batches = []
    for request in result.run_requests:
        assert request.tags["dagster/priority"] == "-10"  # below people's runs
        if request.partition_key is not None:
            batches.append([request.partition_key])
            continue
        start, end = order.index(request.tags[RANGE_START]), order.index(request.tags[RANGE_END])
        batch = order[start : end + 1]
        assert 2 <= len(batch) <= 3 and request.tags["aind/partitions"] == str(len(batch))
        batches.append(batch)
    assert sorted(k for b in batches for k in b) == sorted(order)  # every key exactly once
    assert len(batches) == -(-len(order) // 3)

    # a batch's run materializes its partitions, each with its own lineage
    request = next(r for r in result.run_requests if r.partition_key is None)
    batch = order[order.index(request.tags[RANGE_START]) : order.index(request.tags[RANGE_END]) + 1]
    run = dg.materialize(
        ASSETS,
        instance=instance,
        resources=world.resources(),
        tags=request.tags,
        raise_on_error=False,
    )
    assert run.success, failure_message(run)
    meta = by_partition(run)
    assert {k for a, k in meta if a == UQ} == set(batch)
    for key in batch:
        processing, record = written(world, UQ, key)
        assert record["partition_key"] == key
        inputs = [d["url"] for d in processing["data_processes"][0]["code"]["input_data"]]
        assert any(f"/analysis/ephys_units/dispatch/{key}/" in u for u in inputs)
        assert not any(
            f"/analysis/ephys_units/dispatch/{k}/" in u for u in inputs for k in batch if k != key
        )
