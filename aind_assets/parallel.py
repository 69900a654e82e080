"""Bounded concurrency inside one step (pure: no Dagster), shared by the flows.

:func:`run_bounded` runs independent work items (the analysis jobs of the partitions of a step,
the HBCD sessions of a de-identification batch) on at most ``workers`` threads and returns every
item's value or error, keyed like its input: one item's failure never stops or discards the
others. The work is I/O-bound (object-store reads and writes, DocDB); the analysis flow's NWB
reads go through its ``h5safe`` module, safe across threads.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

#: Items run at once in a step when neither settings nor run config say otherwise
#: (setting ``AIND_NUM_PARALLEL_WORKERS``).
DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Done[K: Hashable]:
    """What became of the work items: values and errors, each keyed like the items."""

    values: dict[K, Any]
    errors: dict[K, BaseException]


def run_bounded[K: Hashable](
    items: Mapping[K, Callable[[], Any]], workers: int = DEFAULT_WORKERS
) -> Done[K]:
    """Call every item (at most ``workers`` at once); collect values and errors by key."""
    values: dict[K, Any] = {}
    errors: dict[K, BaseException] = {}
    if workers <= 1 or len(items) <= 1:
        for key, call in items.items():
            try:
                values[key] = call()
            except Exception as exc:  # noqa: BLE001 - reported with its key by the caller
                errors[key] = exc
        return Done(values, errors)
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = {key: pool.submit(call) for key, call in items.items()}
        for key, future in futures.items():
            error = future.exception()
            if error is None:
                values[key] = future.result()
            else:
                errors[key] = error
    return Done(values, errors)
