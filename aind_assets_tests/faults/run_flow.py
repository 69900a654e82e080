"""The run process the fault tests kill: ``python -m aind_assets_tests.faults.run_flow FLOW
STEP ENDPOINT BUCKET MONGO_URI DATABASE`` runs FLOW (``io``, ``analysis`` or ``hbcd``) and
SIGKILLs itself when the write reaches STEP (for ``hbcd``: as the STEP-th file of the session
starts), as a crash (OOM, lost node) would. FLOW ``lease`` takes
the release lease for deployment STEP and dies holding it."""

from __future__ import annotations

import os
import signal
import sys

import dagster as dg

from aind_assets.hbcd.identity.idmap import parse_identity_map
from aind_assets.hbcd.identity.replace import session_partition_key
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets_tests.faults import flows


def main(argv: list[str]) -> int:
    flow, step, endpoint, bucket, uri, database, key, secret = argv

    def die(at: str) -> None:
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    env = flows.Env(
        ObjectStoreResource(
            root=f"s3://{bucket}",
            endpoint_url=endpoint,
            access_key_id=key,
            secret_access_key=secret,
            max_attempts=1,
        ),
        DocDBResource(uri=uri, database=database, server_selection_timeout_ms=3000),
    )
    if flow == "lease":  # hold a release lease of deployment `step`, then die holding it
        with env.docdb.lease(
            flows.LEASE, "run-of-a", ttl_s=flows.LEASE_TTL_S, deployment=step
        ) as lease:
            lease.renew()
            os.kill(os.getpid(), signal.SIGKILL)
    if flow == "hbcd":  # de-identify the first session, dying as its `step`-th file starts
        layout = flows.hbcd_layout(env)
        idmap = parse_identity_map(
            env.store.get_bytes(join_url(layout.identified_root, flows.MAP)).decode(), "map"
        )
        key = session_partition_key(idmap.rows[0].rc_id, "V02")
        with flows.on_file(int(step), lambda: die(step)):
            result = flows.run_hbcd(env, dg.DagsterInstance.ephemeral(), key, flows.HBCD_SESSION)
        return 0 if result.success else 1
    if flow == "io":
        result = flows.materialize(env, [flows.source_value], checkpoint=die)
        return 0 if result.success else 1
    flows.run_analysis(env, checkpoint=die)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
