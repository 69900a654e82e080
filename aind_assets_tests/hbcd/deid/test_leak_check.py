"""The blocking leak check, and failures that must neither leak nor leave half-written output
(local store: fast; the S3 path is covered end to end in test_flow_end_to_end)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.ledger import discover_sessions, read_ledger
from aind_assets.hbcd.deid.sensors import (
    hbcd_daily_deidentification,
    hbcd_session_discovery,
    session_request,
)
from aind_assets.hbcd.keys import DEIDENTIFIED_SESSION, LEAK_CHECK_KEY, SESSION_DERIVATIVES
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.flow_support import World, make_world, scan_instance_storage


@pytest.fixture
def world(local_store: ObjectStoreResource, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        w = make_world(local_store, None, instance, tmp_path, n_subjects=2, sessions=("V02",))
        tick = w.tick(hbcd_session_discovery)
        for request in tick.run_requests:
            assert w.run(request).success
        yield w


def _check_evaluations(result: dg.ExecuteInProcessResult) -> list:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def _with_downstream(key: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=key,
        asset_selection=[DEIDENTIFIED_SESSION, SESSION_DERIVATIVES],
        asset_check_keys=[LEAK_CHECK_KEY],
    )


def test_planted_leak_fails_the_check_and_blocks_downstream(world: World) -> None:
    w, row = world, world.idmap.rows[0]
    key = f"sub-{row.rc_id}_ses-V02"
    # a leak written straight into the de-identified side, with metadata that makes the
    # session asset consider the object up to date (so it survives into the check)
    url = f"{w.layout.deidentified_bids}/sub-{row.rc_id}/ses-V02/sub-{row.rc_id}_ses-V02_scans.tsv"
    meta = dict(w.store.info(url).metadata)
    leaked = w.store.get_bytes(url) + f"extra\t{row.pscid}\n".encode()
    w.store.put_bytes(url, leaked, metadata=meta)

    result = w.run(_with_downstream(key))
    assert not result.success
    [evaluation] = _check_evaluations(result)
    assert evaluation.passed is False
    meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    assert meta["findings by kind"] == {"PSCID": 1}
    assert meta["locations (redacted)"] == [
        f"sub-{row.rc_id}/ses-V02/sub-{row.rc_id}_ses-V02_scans.tsv: PSCID in content@"
        + str(leaked.index(row.pscid.encode()))
    ]
    assert row.pscid not in str(meta)
    # downstream was blocked, the leaking object removed, the session marked not done
    materialized = {
        e.asset_key for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert materialized == {DEIDENTIFIED_SESSION}
    assert not w.store.exists(url)
    assert key not in read_ledger(w.store, w.layout).entries
    # processing refuses a session whose latest leak check failed (its write is not complete:
    # the writing marker stays until a leak check passes)
    refused = w.run(dg.RunRequest(partition_key=key, asset_selection=[SESSION_DERIVATIVES]))
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    text = failure.event_specific_data.error.to_string()
    assert "de-identification of 1 session(s) did not complete" in text and key in text

    # the sensor does not retry a failed request in a loop; the daily schedule redoes it
    assert w.tick(hbcd_session_discovery).run_requests == []
    with dg.build_schedule_context(
        instance=w.instance, resources={"hbcd": w.hbcd}, repository_def=w.defs.get_repository_def()
    ) as ctx:
        requests = hbcd_daily_deidentification(ctx)
    assert [r.partition_key for r in requests] == [key]
    result = w.run(_with_downstream(key))
    assert result.success
    assert [e.passed for e in _check_evaluations(result)] == [True]
    assert w.store.get_bytes(url) != leaked

    _, hits = scan_instance_storage(Path(w.instance.root_directory), w.idmap)
    assert hits == []


def test_unscannable_object_fails_the_check(world: World) -> None:
    w, row = world, world.idmap.rows[1]
    key = f"sub-{row.rc_id}_ses-V02"
    url = f"{w.layout.deidentified_bids}/sub-{row.rc_id}/ses-V02/anat/sub-{row.rc_id}_ses-V02_run-001_T1w.nii.gz"
    w.store.put_bytes(url, w.store.get_bytes(url)[:40], metadata=dict(w.store.info(url).metadata))
    result = w.run(session_request(key, "x"))
    [evaluation] = _check_evaluations(result)
    assert evaluation.passed is False
    assert evaluation.metadata["findings by kind"].value == {"unscannable": 1}


def test_bad_source_file_fails_clearly_without_identifiers(world: World) -> None:
    w, row = world, world.idmap.rows[0]
    key = f"sub-{row.rc_id}_ses-V02"
    rel = f"sub-{row.dccid}/ses-V02/func/sub-{row.dccid}_ses-V02_task-rest_run-001_bold.json"
    w.store.put_bytes(w.source_url(rel), b'{"PatientID": "' + row.dccid.encode() + b'", broken')
    old_copy = (
        f"{w.layout.deidentified_bids}/sub-{row.rc_id}/ses-V02/func/"
        f"sub-{row.rc_id}_ses-V02_task-rest_run-001_bold.json"
    )
    assert w.store.exists(old_copy)
    result = w.run(session_request(key, "y"))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = failure.event_specific_data.error.to_string()
    assert (
        f"sub-{row.rc_id}/ses-V02/func/sub-{row.rc_id}_ses-V02_task-rest_run-001_bold.json" in text
    )
    assert "invalid JSON" in text
    assert row.dccid not in text and row.pscid not in text
    # the copy of the old source version is not left as if current, and the session is still
    # due (the ledger was not updated), so the daily schedule retries it
    assert not w.store.exists(old_copy)
    found = discover_sessions(w.store, w.layout, w.idmap)
    assert key in plan_requests(found.discovery, found.ledger, w.idmap).sessions
    _, hits = scan_instance_storage(Path(w.instance.root_directory), w.idmap)
    assert hits == []
