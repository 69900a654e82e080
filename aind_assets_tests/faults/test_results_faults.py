"""Analysis results under faults: S3 killed halfway through the upload, DocDB killed before the
record, the run process killed halfway; the re-run redoes the job instead of being blocked."""

from __future__ import annotations

import signal
import time

import pytest

from aind_assets.analysis.wrapper import claims_collection
from aind_assets.resources.docdb import DocDBError
from aind_assets_tests.faults import flows
from aind_assets_tests.faults.conftest import FaultServers, run_killed
from aind_assets_tests.faults.flows import Env

CASES = [
    ("s3", "files_uploaded"),  # result files uploaded, metadata.nd.json not
    ("mongo", "uploaded"),  # whole results, no record
    ("run", "files_uploaded"),  # the run dies with half its results uploaded and its claim held
]


def _wait_for_stale_claims(env: Env) -> None:
    """A dead run's claim is taken over once it missed four heartbeats: wait for that."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        claims = list(env.docdb.find(claims_collection(flows.RESULTS), {}))
        if all(time.time() - c["claimed_at"] > 4 * c["heartbeat_s"] + 0.5 for c in claims):
            return
        time.sleep(0.2)
    raise AssertionError("the claim of the dead run never went stale")


@pytest.mark.parametrize(("dies", "step"), CASES, ids=[f"{d}-at-{s}" for d, s in CASES])
def test_a_half_written_result_never_blocks_the_rerun(
    fault_servers: FaultServers, env: Env, dies: str, step: str
) -> None:
    if dies == "run":
        assert run_killed("analysis", step, fault_servers, env) == -signal.SIGKILL
    else:
        server = fault_servers.server(dies)

        def kill(at: str) -> None:
            if at == step:
                server.kill()

        expected = (
            (Exception, "endpoint")  # botocore EndpointConnectionError names the endpoint URL
            if dies == "s3"
            else (DocDBError, f"DocDB at 127.0.0.1:{server.port}")
        )
        with pytest.raises(expected[0]) as failure:
            flows.run_analysis(env, checkpoint=kill)
        assert expected[1] in str(failure.value) and f"127.0.0.1:{server.port}" in str(
            failure.value
        )
        fault_servers.restart(dies, env)
    assert env.docdb.count(flows.RESULTS) == 0  # no record of a job that did not finish
    _wait_for_stale_claims(env)
    outcome = flows.run_analysis(env)
    assert outcome.result.status == "completed", outcome.result.note
    assert flows.check_results(env) == 1
    assert flows.run_analysis(env).result.status == "skipped"  # done is done
