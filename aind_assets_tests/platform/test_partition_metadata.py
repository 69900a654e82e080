"""Per-partition metadata of a ranged run (``add_partition_metadata``): the same events as
Dagster's ``add_asset_metadata(..., partition_key=)``, with the run's keys looked up once per
step instead of once per call (each lookup loads every key of a dynamic partitions definition)."""

from collections import Counter
from collections.abc import Callable
from typing import Any

import dagster as dg
import pytest

from aind_assets.partition_metadata import add_partition_metadata

sessions = dg.DynamicPartitionsDefinition(name="test_sessions")
KNOWN = [f"ses-{i:04d}" for i in range(300)]
RANGE = KNOWN[10:30]  # 20 partitions of 300 known ones


def _asset(add: Callable[[dg.AssetExecutionContext, dict, str], None], name: str) -> Any:
    @dg.asset(name=name, partitions_def=sessions, backfill_policy=dg.BackfillPolicy.single_run())
    def _per_session(context: dg.AssetExecutionContext) -> None:
        for key in context.partition_keys:
            add(context, {"own": key, "length": len(key)}, key)

    return _per_session


def _public(context: dg.AssetExecutionContext, meta: dict, key: str) -> None:
    context.add_asset_metadata(meta, partition_key=key)


fast = _asset(add_partition_metadata, "fast")
public = _asset(_public, "public")


def _counting(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count the instance's dynamic-partition lookups (real calls, counted on the way)."""
    calls: Counter = Counter()
    for name in ("has_dynamic_partition", "get_dynamic_partitions"):
        method = getattr(instance, name)

        def counted(*args: Any, _m: Callable = method, _n: str = name, **kwargs: Any) -> Any:
            calls[_n] += 1
            return _m(*args, **kwargs)

        monkeypatch.setattr(instance, name, counted)
    return calls


def _run(asset: Any, instance: dg.DagsterInstance) -> dict[str | None, dict]:
    result = dg.materialize(
        [asset],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": RANGE[0],
            "dagster/asset_partition_range_end": RANGE[-1],
        },
    )
    assert result.success
    return {
        e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def test_same_events_as_dagster_with_one_lookup_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(sessions.name, KNOWN)
        calls = _counting(instance, monkeypatch)
        ours = _run(fast, instance)
        ours_calls, calls_before = sum(calls.values()), Counter(calls)
        theirs = _run(public, instance)
        theirs_calls = sum(calls.values()) - sum(calls_before.values())
    assert set(ours) == set(RANGE)
    assert ours == theirs  # each partition's own metadata, exactly as Dagster records it
    assert ours[RANGE[3]] == {"own": RANGE[3], "length": len(RANGE[3])}
    # Dagster's own per-call check: 3 lookups per partition (one loads all 300 keys) on top of
    # the run's; ours adds one range lookup for the whole step
    assert theirs_calls - ours_calls >= 3 * (len(RANGE) - 1)


@dg.asset(partitions_def=sessions, backfill_policy=dg.BackfillPolicy.single_run())
def outside(context: dg.AssetExecutionContext) -> None:
    add_partition_metadata(context, {"x": 1}, KNOWN[-1])


def test_a_key_outside_the_run_is_refused_as_dagster_refuses_it() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(sessions.name, KNOWN)
        with pytest.raises(dg.DagsterInvariantViolationError, match="not being targeted"):
            dg.materialize(
                [outside],
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": RANGE[0],
                    "dagster/asset_partition_range_end": RANGE[-1],
                },
            )
