"""Leases in a DocDB shared by two Dagster deployments: a holder of another deployment is never
taken as ended (its runs are unknown here) until its lease expires; a holder cut off from
DocDB learns it lost the lease before it changes anything more."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from aind_assets.io_managers.deployment import deployment_id, ended_here
from aind_assets.resources.docdb import LeaseHeldError, LeaseLostError
from aind_assets_tests.faults.conftest import FaultServers, run_killed
from aind_assets_tests.faults.flows import LEASE, LEASE_TTL_S, Env


def test_a_lease_of_another_deployment_waits_for_its_expiry(
    fault_servers: FaultServers, env: Env
) -> None:
    a, b = dg.DagsterInstance.ephemeral(), dg.DagsterInstance.ephemeral()
    here_a, here_b = deployment_id(a), deployment_id(b)
    assert here_a != here_b and deployment_id(a) == here_a  # stable per instance
    # a run of deployment A takes the lease and is killed holding it
    assert run_killed("lease", here_a, fault_servers, env) == -signal.SIGKILL
    held = env.docdb.find_one("leases", {"name": LEASE})
    assert held is not None and held["deployment"] == here_a

    # B does not know A's run: before, that counted as ended; now B waits for the expiry
    with (
        pytest.raises(LeaseHeldError, match=f"held by run-of-a of deployment {here_a}"),
        env.docdb.lease(
            LEASE, "run-of-b", ttl_s=LEASE_TTL_S, deployment=here_b, is_stale=ended_here(b, here_b)
        ),
    ):
        pass
    with env.docdb.lease(
        LEASE,
        "run-of-b",
        ttl_s=LEASE_TTL_S,
        deployment=here_b,
        is_stale=ended_here(b, here_b),
        wait_s=60,
    ) as lease:
        taken_at = datetime.now(UTC)
        assert taken_at >= held["expires_at"]  # only once A's lease expired
        doc = env.docdb.find_one("leases", {"name": LEASE})
        assert doc is not None and (doc["holder"], doc["deployment"]) == ("run-of-b", here_b)
        lease.check()
    assert env.docdb.count("leases", {"name": LEASE}) == 0


def test_a_holder_cut_off_from_docdb_stops_and_cannot_release_a_new_holder(
    fault_servers: FaultServers, env: Env
) -> None:
    here = deployment_id(dg.DagsterInstance.ephemeral())
    first = env.docdb.lease(LEASE, "run-1", ttl_s=LEASE_TTL_S, deployment=here)
    lease = first.__enter__()
    fault_servers.mongo.kill()
    deadline = time.monotonic() + 60
    while not lease.lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)  # the heartbeat cannot renew; past the expiry the lease is lost
    with pytest.raises(LeaseLostError, match=f"lease {LEASE} of run-1 expired"):
        lease.check()  # what the staging calls before promoting: it stops there
    fault_servers.restart("mongo")
    # meanwhile another run takes the expired lease over ...
    with env.docdb.lease(LEASE, "run-2", ttl_s=30, deployment=here, wait_s=60):
        # ... and the first run, ending late, does not release it
        first.__exit__(None, None, None)
        doc = env.docdb.find_one("leases", {"name": LEASE})
        assert doc is not None and doc["holder"] == "run-2"
    assert env.docdb.count("leases", {"name": LEASE}) == 0
