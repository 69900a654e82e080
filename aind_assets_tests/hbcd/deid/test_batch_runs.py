"""Batched de-identification runs: a run over a range of sessions writes, for each session, what
a run of that session alone writes (materialization metadata, ``processing.json``, DocDB record,
leak check result), times and run ids aside; one failing session fails that session only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aind_assets import lineage
from aind_assets.batches import RANGE_END, RANGE_START
from aind_assets.hbcd.deid.commit import sessions_being_written
from aind_assets.hbcd.deid.ledger import read_ledger
from aind_assets.hbcd.deid.sensors import (
    deidentification_job,
    hbcd_daily_deidentification,
    hbcd_session_discovery,
    session_request,
)
from aind_assets.hbcd.keys import DEIDENTIFIED_SESSION
from aind_assets.io_managers.commit import committed_folder
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.flow_support import (
    RECORDS,
    World,
    make_world,
    scan_instance_storage,
)
from aind_assets_tests.support import VOLATILE_METADATA, normalized

ASSET = DEIDENTIFIED_SESSION.to_user_string()


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key == DEIDENTIFIED_SESSION:
            meta = {k: v.value for k, v in mat.metadata.items() if k not in VOLATILE_METADATA}
            out[str(mat.partition)] = normalized(meta)
    return out


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            e = event.event_specific_data
            if e.asset_key == DEIDENTIFIED_SESSION:
                meta = {k: getattr(v, "value", v) for k, v in e.metadata.items()}
                out[e.partition] = (e.passed, e.description, normalized(meta))
    return out


def written(world: World, docdb: DocDBResource, key: str) -> tuple[Any, Any]:
    folder = committed_folder(world.store.upath(f"{world.io_root}/{ASSET}/{key}"))
    processing = json.loads((folder / "processing.json").read_text())
    record = docdb.find_one(
        RECORDS, {"asset_key": ASSET, "partition_key": key, "status": "current"}
    )
    assert record is not None
    record = {k: v for k, v in record.items() if k not in ("_id", "name", "run_id", "version")}
    return normalized(processing), normalized(record)


def forget_everything(world: World, docdb: DocDBResource) -> None:
    """Back to before any de-identification (same source, same partitions)."""
    for collection in (RECORDS, f"{RECORDS}_commits"):
        docdb.delete_many(collection, {})
    state = world.layout.ledger_root.rsplit("/", 1)[0]
    for url in (world.layout.deidentified_root, state, world.io_root):
        world.store.delete(url, recursive=True)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure
    )


@pytest.fixture
def world(local_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield make_world(
            local_store, docdb, instance, tmp_path, n_subjects=2, sessions=("V02", "V03")
        )


def test_a_batch_run_writes_for_each_session_what_a_one_session_run_writes(
    world: World, docdb: DocDBResource
) -> None:
    assert hbcd_session_discovery.job_name == deidentification_job.name
    tick = world.tick(hbcd_session_discovery)
    [batch] = [r for r in tick.run_requests if DEIDENTIFIED_SESSION in r.asset_selection]
    keys = list(world.instance.get_dynamic_partitions("bids_sessions"))
    assert len(keys) == 4
    assert (batch.partition_key, batch.tags[RANGE_START], batch.tags[RANGE_END]) == (
        None,
        keys[0],
        keys[-1],
    )
    ranged = world.run(batch)
    assert ranged.success, failure_text(ranged)
    ranged_meta = materializations(ranged)
    ranged_checks = evaluations(ranged)
    ranged_files = {k: written(world, docdb, k) for k in keys}
    assert sorted(ranged_meta) == sorted(ranged_checks) == sorted(keys)
    assert sessions_being_written(world.store, world.layout.deidentified_root) == set()

    forget_everything(world, docdb)
    alone_meta: dict[str, Any] = {}
    alone_checks: dict[str, Any] = {}
    for key in keys:
        one = world.run(session_request(key, "alone"))
        assert one.success, failure_text(one)
        alone_meta.update(materializations(one))
        alone_checks.update(evaluations(one))
    alone_files = {k: written(world, docdb, k) for k in keys}

    for key in keys:
        # each session's own inputs and counts, never the run's
        assert ranged_meta[key][lineage.META_INPUTS] == [f"{world.identified_bids}#{key}"], key
        assert ranged_meta[key] == alone_meta[key], key
        assert ranged_checks[key] == alone_checks[key], key
        assert ranged_files[key] == alone_files[key], key
    _, hits = scan_instance_storage(Path(world.instance.root_directory), world.idmap)
    assert hits == []


def _batched_world(store: ObjectStoreResource, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield make_world(store, None, instance, tmp_path, n_subjects=3, sessions=("V02", "V03"))


@pytest.fixture
def batched(local_store: ObjectStoreResource, tmp_path: Path):
    yield from _batched_world(local_store, tmp_path)


def test_one_bad_session_fails_alone_and_the_others_are_kept(batched: World) -> None:
    w = batched
    row = w.idmap.rows[1]
    bad = f"sub-{row.rc_id}_ses-V02"
    rel = f"sub-{row.dccid}/ses-V02/func/sub-{row.dccid}_ses-V02_task-rest_run-001_bold.json"
    w.store.put_bytes(w.source_url(rel), b'{"PatientID": "' + row.dccid.encode() + b'", broken')
    tick = w.tick(hbcd_session_discovery)
    [batch] = [r for r in tick.run_requests if DEIDENTIFIED_SESSION in r.asset_selection]
    keys = list(w.instance.get_dynamic_partitions("bids_sessions"))
    assert len(keys) == 6 and bad in keys

    result = w.run(batch)
    assert not result.success
    text = failure_text(result)
    assert "1 of 6 session(s) failed" in text and f"session {bad}:" in text
    assert "invalid JSON" in text
    assert row.dccid not in text and row.pscid not in text
    # the other sessions' outputs are kept: written and recorded as done in the ledger
    good = [k for k in keys if k != bad]
    ledger = read_ledger(w.store, w.layout).entries
    assert set(good) <= set(ledger) and bad not in ledger

    # next time the failed session runs alone; the others in a batch of their own, which
    # completes (their files are unchanged: nothing is rewritten) and commits them
    with dg.build_schedule_context(
        instance=w.instance, resources={"hbcd": w.hbcd}, repository_def=w.defs.get_repository_def()
    ) as ctx:
        requests = hbcd_daily_deidentification(ctx)
    sessions = [r for r in requests if DEIDENTIFIED_SESSION in r.asset_selection]

    def covered(r: dg.RunRequest) -> list[str]:
        if r.partition_key:
            return [r.partition_key]
        return keys[keys.index(r.tags[RANGE_START]) : keys.index(r.tags[RANGE_END]) + 1]

    [alone] = [r for r in sessions if bad in covered(r)]
    assert covered(alone) == [bad]
    others = [r for r in sessions if r is not alone]
    assert sorted(k for r in others for k in covered(r)) == sorted(good)
    assert any(len(covered(r)) > 1 for r in others)  # still batched
    for request in others:
        again = w.run(request)
        assert again.success, failure_text(again)
        assert all(m["files written"] == 0 for m in materializations(again).values())
    assert sessions_being_written(w.store, w.layout.deidentified_root) == {bad}
    assert not w.run(alone).success  # still bad: fails alone, holds nobody back
    _, hits = scan_instance_storage(Path(w.instance.root_directory), w.idmap)
    assert hits == []


def test_a_leak_in_one_session_of_a_batch_fails_that_session_only(batched: World) -> None:
    w = batched
    tick = w.tick(hbcd_session_discovery)
    for request in tick.run_requests:
        assert w.run(request).success
    keys = list(w.instance.get_dynamic_partitions("bids_sessions"))
    row = w.idmap.rows[0]
    leaky = f"sub-{row.rc_id}_ses-V03"
    url = f"{w.layout.deidentified_bids}/sub-{row.rc_id}/ses-V03/sub-{row.rc_id}_ses-V03_scans.tsv"
    meta = dict(w.store.info(url).metadata)
    w.store.put_bytes(url, w.store.get_bytes(url) + f"x\t{row.pscid}\n".encode(), metadata=meta)

    request = dg.RunRequest(
        asset_selection=[DEIDENTIFIED_SESSION],
        tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
    )
    result = w.run(request)
    assert not result.success
    checks = evaluations(result)
    assert sorted(checks) == sorted(keys)
    assert {k for k, (passed, _, _) in checks.items() if not passed} == {leaky}
    assert checks[leaky][2]["findings by kind"] == {"PSCID": 1}
    assert row.pscid not in str(checks)
    # the leaking object is gone, its session not done and not committed; the others are
    assert not w.store.exists(url)
    assert leaky not in read_ledger(w.store, w.layout).entries
    assert sessions_being_written(w.store, w.layout.deidentified_root) == {leaky}
    _, hits = scan_instance_storage(Path(w.instance.root_directory), w.idmap)
    assert hits == []
