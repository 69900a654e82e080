"""A tiny code location for the production-profile test: one partitioned asset whose runs queue.

Each partition sleeps a few seconds and records when its body started and ended in
``$AIND_QUEUE_TEST_DIR/<partition>.json``, so the test can check how many ran at once. Its job
carries the run tag ``aind/flow: analysis``, so the flow's tag concurrency limit applies, and the
asset uses the ``object_store`` pool. Loaded by the daemon through a workspace file.
"""

import json
import os
import time
from pathlib import Path

import dagster as dg

PARTITIONS = [f"p{i}" for i in range(1, 7)]
SLEEP_SECONDS = float(os.environ.get("AIND_QUEUE_TEST_SLEEP", "3"))

partitions_def = dg.StaticPartitionsDefinition(PARTITIONS)


@dg.asset(
    partitions_def=partitions_def,
    tags={"aind/flow": "analysis"},
    pool="object_store",
)
def queued_partition(context: dg.AssetExecutionContext) -> None:
    start = time.time()
    print(f"queued partition {context.partition_key} started", flush=True)
    time.sleep(SLEEP_SECONDS)
    end = time.time()
    out = Path(os.environ["AIND_QUEUE_TEST_DIR"]) / f"{context.partition_key}.json"
    out.write_text(
        json.dumps(
            {"partition": context.partition_key, "start": start, "end": end, "pid": os.getpid()}
        )
    )
    context.add_output_metadata({"seconds": end - start})


queue_job = dg.define_asset_job(
    "queue_job",
    selection=[queued_partition],
    partitions_def=partitions_def,
    tags={"aind/flow": "analysis"},
)

defs = dg.Definitions(assets=[queued_partition], jobs=[queue_job])
