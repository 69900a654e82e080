"""Pure helpers of batched, parallel execution: batches of consecutive partitions, and the
bounded pool that runs a step's jobs (one failure is kept with its key, the others finish)."""

from __future__ import annotations

import threading
import time

from aind_assets.batches import contiguous_batches, spread_size
from aind_assets.parallel import run_bounded


def test_batches_are_consecutive_registered_keys_of_bounded_size() -> None:
    order = list("abcdefghij")
    assert contiguous_batches(order, "abcdefg", 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    # a gap in registration order ends a batch; input order does not matter
    assert contiguous_batches(order, "jihbca", 10) == [["a", "b", "c"], ["h", "i", "j"]]
    assert contiguous_batches(order, "ace", 1) == [["a"], ["c"], ["e"]]
    assert contiguous_batches(order, ["b", "new"], 5) == [["b"], ["new"]]
    assert contiguous_batches(order, [], 5) == []


def test_a_tick_is_spread_over_the_runs_that_start_at_once() -> None:
    assert spread_size(100, 2, 50) == 50  # 2 runs that start together, not waves of small ones
    assert spread_size(101, 2, 50) == 50  # (a third run of 1: the most per run wins)
    assert spread_size(7, 2, 50) == 4  # 4 + 3
    assert spread_size(1000, 2, 50) == 50
    assert spread_size(1, 4, 50) == 1 and spread_size(0, 2, 50) == 1
    assert spread_size(10, 0, 3) == 3  # no slots known: the batch size


def test_the_pool_is_bounded_and_keeps_every_outcome_by_key() -> None:
    lock = threading.Lock()
    running, peak = 0, 0

    def job(i: int):
        def call() -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                time.sleep(0.05)
                if i == 3:
                    raise ValueError(f"job {i} failed")
                return i * 10
            finally:
                with lock:
                    running -= 1

        return call

    done = run_bounded({("p", i): job(i) for i in range(8)}, workers=3)
    assert 1 < peak <= 3
    assert set(done.errors) == {("p", 3)} and "job 3 failed" in str(done.errors[("p", 3)])
    assert done.values == {("p", i): i * 10 for i in range(8) if i != 3}
    serial = run_bounded({i: job(i) for i in (1, 3)}, workers=1)
    assert serial.values == {1: 10} and set(serial.errors) == {3}
