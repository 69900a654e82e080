"""Run tags and queue rules every flow shares.

* Every run carries its flow's tag (``aind/flow``): the production profile limits concurrency
  per flow by it.
* Runs that sensors and schedules request carry a lower ``dagster/priority`` than the default
  (0) of runs people launch from the UI, the CLI or GraphQL: the queued run coordinator dequeues
  higher priorities first, so a person's run never waits behind a sensor's backlog.
* A sensor never puts more than a bounded number of its flow's runs in the queue: it requests
  up to the room left and defers the rest to later ticks (the flows' ledgers and cursors say
  what is still to do), so a first discovery of a large source queues bounded batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

FLOW_TAG = "aind/flow"
PRIORITY_TAG = "dagster/priority"
#: Priority of sensor and schedule runs; people's runs have Dagster's default, 0.
AUTOMATED_PRIORITY = -10
#: Runs of one flow a sensor may leave waiting in the queue (setting:
#: ``AIND_MAX_QUEUED_RUNS_PER_FLOW``).
DEFAULT_MAX_QUEUED_RUNS = 8
#: The op pool of assets that read or write much object-store data (deploy/dagster.yaml limits
#: it: ``default_limit``, or ``dagster instance concurrency set object_store N``).
OBJECT_STORE_POOL = "object_store"
_WAITING = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED]


def flow_tags(flow: str) -> dict[str, str]:
    """The tags of a person's run of ``flow`` (job tags)."""
    return {FLOW_TAG: flow}


def automated_tags(flow: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of a run a sensor or schedule requests for ``flow``: below people's runs."""
    return {**flow_tags(flow), PRIORITY_TAG: str(AUTOMATED_PRIORITY), **(extra or {})}


def waiting_runs(instance: dg.DagsterInstance, flow: str) -> int:
    """Runs of ``flow`` not started yet (queued, or created and about to be queued)."""
    return instance.get_runs_count(dg.RunsFilter(statuses=_WAITING, tags={FLOW_TAG: flow}))


def room_in_queue(instance: dg.DagsterInstance, flow: str, limit: int) -> int:
    """How many more runs of ``flow`` a sensor may request now without exceeding ``limit``."""
    return max(0, limit - waiting_runs(instance, flow))


def flow_run_slots(instance: dg.DagsterInstance, flow: str) -> int | None:
    """How many runs of ``flow`` the run queue starts at once: the ``aind/flow`` tag limit of
    the instance's run queue (``dagster.yaml``); ``None`` when it sets none."""
    try:
        queue = instance.get_concurrency_config().run_queue_config
    except Exception:  # noqa: BLE001 - an instance without a run queue configuration
        return None
    for limit in (queue.tag_concurrency_limits if queue is not None else None) or []:
        if limit.get("key") == FLOW_TAG and limit.get("value") == flow:
            return max(1, int(limit["limit"]))
    return None
