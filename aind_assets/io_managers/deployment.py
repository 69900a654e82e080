"""Which Dagster deployment this is: a stable id kept in the instance's own run storage.

Leases in a DocDB shared by several deployments name the deployment of their holder, so a run
id unknown to this instance is not mistaken for an ended run of this one.
"""

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

KEY = "aind/deployment_id"


def deployment_id(instance: dg.DagsterInstance) -> str:
    """The id of ``instance``'s deployment, created on first use (one per run storage)."""
    storage = instance.run_storage
    found = storage.get_cursor_values({KEY}).get(KEY)
    if found:
        return found
    storage.set_cursor_values({KEY: f"dagster-{uuid.uuid4().hex[:12]}"})
    return storage.get_cursor_values({KEY})[KEY]  # a concurrent first writer wins: read back


def run_finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run of this instance ended; an unknown run is not known to have ended."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def ended_here(instance: dg.DagsterInstance, here: str) -> Callable[[Mapping[str, Any]], bool]:
    """The ``is_stale`` rule of a run lease: one of this deployment (or of a version that
    named none) whose run ended is free at once; one of another deployment, whose runs are
    unknown here, only once it expires."""

    def stale(lease: Mapping[str, Any]) -> bool:
        return lease.get("deployment") in (here, None) and run_finished(
            instance, str(lease.get("holder"))
        )

    return stale
