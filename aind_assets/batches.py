"""Batches of partitions for one run each (pure: no Dagster).

A run over several partitions of a dynamic partitions definition names a *range*
(``dagster/asset_partition_range_start`` / ``_end``): every key registered between the two.
So a batch must be keys that are consecutive in registration order; :func:`contiguous_batches`
cuts the keys to run into such batches of at most ``size`` keys. Keys are only ever appended to
a dynamic partitions definition, so consecutive keys stay consecutive until the run starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Partitions per run that sensors request by default (setting ``AIND_RUN_BATCH_SIZE``).
DEFAULT_BATCH_SIZE = 10
#: The run tags that name a partition range (Dagster's; a run over ``start`` ... ``end``).
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def spread_size(n: int, slots: int, most: int) -> int:
    """The batch size that spreads ``n`` keys over ``slots`` runs (as many as run at once), so a
    tick's work starts at once instead of in waves of runs that each pay a process start, never
    more than ``most`` keys per run."""
    return max(1, min(most, -(-n // max(1, slots))))


def contiguous_batches(order: Sequence[str], keys: Iterable[str], size: int) -> list[list[str]]:
    """``keys`` in ``order``'s order, cut into runs of consecutive positions of ``order`` of at
    most ``size`` keys each (a key missing from ``order`` is a batch of its own, last)."""
    position = {key: i for i, key in enumerate(order)}
    wanted = set(keys)
    known = sorted((position[k], k) for k in wanted if k in position)
    batches: list[list[str]] = []
    last = -2
    for pos, key in known:
        if batches and pos == last + 1 and len(batches[-1]) < max(1, size):
            batches[-1].append(key)
        else:
            batches.append([key])
        last = pos
    batches.extend([k] for k in sorted(wanted - set(position)))
    return batches
