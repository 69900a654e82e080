"""A capsule-style analysis that needs numpy 1.x (the platform has numpy 2): it runs in its own
environment (requirements.txt beside it) through Dagster Pipes. Not imported by the platform."""

import json
import os
import time

import numpy as np


def run(task, params, ctx):
    if params.mode == "crash":
        raise ValueError(f"bad input for {task.asset_name}")
    if params.mode == "hog":
        hog = bytearray(params.hog_mb * 1024 * 1024)  # beyond the memory limit: MemoryError
        return {"numpy_version": np.__version__, "n_files": len(hog)}
    if params.mode == "exit":
        os._exit(7)
    if params.mode == "sleep":  # beyond the job's time limit: killed by the platform
        time.sleep(params.sleep_s)
    n = len(task.file_location or [])
    (ctx.results_dir / "summary.json").write_text(
        json.dumps({"numpy": np.__version__, "n_files": n, "scale": params.scale})
    )
    ctx.log.info(f"old numpy {np.__version__} on {n} file(s)")
    return {"numpy_version": np.__version__, "n_files": n}
