"""Batches of sessions (pure): which sessions share a run, that a first discovery of many
sessions queues bounded batches, and that a run works through subjects concurrently but the
sessions of one subject one after another, each session's failure its own."""

from __future__ import annotations

import threading
import time

import pytest

from aind_assets.hbcd.deid.batches import (
    attempted_and_failed,
    by_subject,
    fit_in_queue,
    request_batches,
    run_by_subject,
)
from aind_assets.hbcd.deid.discovery import EMPTY_DIGEST, LedgerEntry
from aind_assets.settings import Settings, SettingsError


def _keys(subjects: int, sessions: int = 2) -> list[str]:
    return [f"sub-RC{s:05d}_ses-V{v:02d}" for s in range(subjects) for v in range(sessions)]


def test_a_first_discovery_of_many_sessions_queues_bounded_batches() -> None:
    keys = _keys(50_000)  # 100k sessions
    batches = request_batches(keys, keys, 10)
    kept, deferred = fit_in_queue(batches, 8)
    assert [len(b) for b in kept] == [10] * 8
    assert deferred == 100_000 - 80
    assert [k for b in kept for k in b] == keys[:80]


def test_batches_are_ranges_of_the_registration_order_and_failed_sessions_run_alone() -> None:
    order = _keys(4)  # 8 keys
    wanted = [order[i] for i in (0, 1, 2, 4, 5, 7)]
    batches = request_batches(order, wanted, 3, alone=[order[4]])
    assert batches == [order[0:3], [order[5]], [order[7]], [order[4]]]
    kept, deferred = fit_in_queue(batches, 2)
    assert kept == [order[0:3], [order[5]]] and deferred == 2
    assert fit_in_queue(batches, 0) == ([], 6)


def test_attempted_and_failed_are_the_markers_without_a_current_ledger_entry() -> None:
    entries = {
        "sub-A_ses-V01": LedgerEntry("aaaa", EMPTY_DIGEST),  # batch-mate: its write completed
        "sub-A_ses-V02": LedgerEntry("old0", EMPTY_DIGEST),  # failed: ledger still the old one
        "sub-B_ses-V01": LedgerEntry(EMPTY_DIGEST, EMPTY_DIGEST),  # removed, done
    }
    digests = {"sub-A_ses-V01": "aaaa", "sub-A_ses-V02": "bbbb", "sub-C_ses-V01": "cccc"}
    writing = ["sub-A_ses-V01", "sub-A_ses-V02", "sub-B_ses-V01", "sub-C_ses-V01"]
    assert attempted_and_failed(writing, entries, digests) == {"sub-A_ses-V02", "sub-C_ses-V01"}


def test_subjects_run_concurrently_and_sessions_of_a_subject_one_after_another() -> None:
    keys = _keys(4, 3)
    assert by_subject(reversed(keys))["sub-RC00001"] == keys[3:6]
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    overall = [0, 0]
    lock = threading.Lock()
    order: list[str] = []
    # the first sessions of two subjects meet: proof that subjects run at the same time
    meet = threading.Barrier(2, timeout=30)

    def work(key: str) -> str:
        sub = key.split("_ses-")[0]
        with lock:
            running[sub] = running.get(sub, 0) + 1
            most[sub] = max(most.get(sub, 0), running[sub])
            overall[0] += 1
            overall[1] = max(overall[1], overall[0])
            order.append(key)
        if key in (keys[0], keys[3]):
            meet.wait()
        time.sleep(0.01)  # widen the window in which a second session of `sub` would show
        with lock:
            running[sub] -= 1
            overall[0] -= 1
        if key.endswith("V01") and sub == "sub-RC00002":
            raise ValueError(f"bad input in {key}")
        return key.upper()

    done = run_by_subject(keys, work, workers=3)
    assert set(most.values()) == {1}  # never two sessions of one subject at once
    assert 1 < overall[1] <= 3  # bounded, and concurrent
    assert [k for k in order if k.startswith("sub-RC00000")] == keys[0:3]  # in key order
    assert list(done.errors) == ["sub-RC00002_ses-V01"]
    assert "bad input" in str(done.errors["sub-RC00002_ses-V01"])
    # the failure of one session stops neither its subject's next session nor the others
    assert sorted(done.values) == sorted(k for k in keys if k != "sub-RC00002_ses-V01")
    assert done.values["sub-RC00002_ses-V02"] == "SUB-RC00002_SES-V02"


def test_the_batch_size_setting_defaults_to_the_platform_one_if_set(tmp_path) -> None:
    base = {"AIND_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).hbcd_run_batch_size == 50  # spread over the run slots
    assert Settings.from_env({**base, "AIND_RUN_BATCH_SIZE": "7"}).hbcd_run_batch_size == 7
    both = {**base, "AIND_RUN_BATCH_SIZE": "7", "HBCD_RUN_BATCH_SIZE": "3"}
    assert Settings.from_env(both).hbcd_run_batch_size == 3
    with pytest.raises(SettingsError, match="HBCD_RUN_BATCH_SIZE='0' is not a positive integer"):
        Settings.from_env({**base, "HBCD_RUN_BATCH_SIZE": "0"})
