"""Each partition's own metadata and newest events in a run over many partitions, at O(1) a call.

``context.add_asset_metadata(metadata, partition_key=k)`` is how a ranged run (a sensor batch,
``--partition-range``, a single-run backfill) gives each partition its own metadata. Dagster
checks ``k`` on every call by recomputing the run's keys from the instance: for the dynamic
partitions of both flows that is two lookups plus a load of *every* key of the definition, each
a round trip to the event-log storage (a new SQLite connection per query in the local profile).
A batch of n partitions out of N known ones paid O(n x N) for metadata it already had.

:func:`add_partition_metadata` makes the same check once per step (the run's keys, computed as
Dagster computes them) and then records the metadata exactly as ``add_asset_metadata`` does, so
the events are the same. Anything it cannot vouch for (a key outside the run, a multi-asset
without ``asset_key``, a Dagster without the accumulator) goes through the public call, which
raises Dagster's own error.

:func:`newest_by_partition` reads the newest materialization or observation of each partition
of a batch in two event-log queries, where a query per partition would cost the same round
trip n times.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping
from typing import Any

import dagster as dg

#: step context -> the partition keys its run targets (computed once per step)
_TARGETED: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def _step(context: Any) -> Any:
    """The step execution context of an asset or op context (an ``OutputContext``'s
    ``step_context`` is one already)."""
    get = getattr(context, "get_step_execution_context", None)
    return get() if get is not None else context


def _targeted(step: Any) -> frozenset[str]:
    keys = _TARGETED.get(step)
    if keys is None:
        partitions_def = step.assets_def.partitions_def if step.assets_def else None
        if partitions_def is None:
            keys = frozenset()
        else:
            with dg.partition_loading_context(dynamic_partitions_store=step.instance):
                keys = frozenset(
                    partitions_def.get_partition_keys_in_range(step.partition_key_range)
                )
        _TARGETED[step] = keys
    return keys


def add_partition_metadata(
    context: Any,
    metadata: Mapping[str, Any],
    partition_key: str,
    asset_key: dg.AssetKey | None = None,
) -> None:
    """``context.add_asset_metadata(metadata, partition_key=partition_key)`` for an asset or
    IO-manager step context (``AssetExecutionContext``, ``OpExecutionContext`` or the
    ``StepExecutionContext`` of an ``OutputContext``), checked once per step."""
    step = _step(context)
    assets_def = step.assets_def
    accumulator = getattr(step, "_metadata_accumulator", None)
    key = asset_key or (assets_def.key if assets_def and len(assets_def.keys) == 1 else None)
    if (
        accumulator is None
        or not hasattr(accumulator, "with_additional_asset_metadata")
        or assets_def is None
        or key not in assets_def.keys
        or partition_key not in _targeted(step)
    ):
        step.add_asset_metadata(metadata, asset_key=asset_key, partition_key=partition_key)
        return
    step._metadata_accumulator = accumulator.with_additional_asset_metadata(  # noqa: SLF001
        asset_key=key, metadata=metadata, partition_key=partition_key
    )


def newest_by_partition(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    event_type: dg.DagsterEventType,
    partitions: Collection[str],
) -> dict[str, dg.EventLogRecord]:
    """The newest ``ASSET_MATERIALIZATION`` or ``ASSET_OBSERVATION`` record of each of
    ``partitions`` that has one: the newest storage id of each, then those records."""
    if not partitions:
        return {}
    newest = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, event_type, partitions=set(partitions)
    )
    if not newest:
        return {}
    fetch = (
        instance.fetch_observations
        if event_type == dg.DagsterEventType.ASSET_OBSERVATION
        else instance.fetch_materializations
    )
    records = fetch(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(newest.values())),
        limit=len(newest),
    ).records
    return {r.partition_key: r for r in records if r.partition_key is not None}
