"""Orchestration cost of HBCD de-identification: Dagster the production way vs plain functions.

The tree of ``bench/hbcd_deid.py`` (``--sessions`` sessions, its generator) is uploaded twice to
SeaweedFS (``weed mini``), once per identified side, so each way finds every session new:

* **plain functions** — ``bench/hbcd_deid.py``'s ``deidentify_all``: discovery, then every
  session (``--workers`` at a time) and the dataset-level files, no Dagster;
* **Dagster** — a real ``dagster-daemon`` on an instance with the repository's local profile
  (``dagster.yaml``: ``QueuedRunCoordinator``, 4 runs, 2 of the HBCD flow; each run its own
  process), DocDB on the platform's Mongo-wire server (mongoeco), the ``hbcd_session_discovery``
  sensor requesting runs as it does on main (batches spread over the flow's run slots; the
  harness counts runs and sessions, not either alone). The sensor's queue bound
  (``AIND_MAX_QUEUED_RUNS_PER_FLOW``) is raised to the number of sessions so the first tick
  requests every session; the other sensors and the schedule are stopped so only
  de-identification runs.

Two clocks. The headline (``orchestration_ratio_vs_plain_functions``) starts once the daemon is
up and idle, as it is for weeks in production, when the discovery sensor is switched on: its
first tick, the queue, the run processes and their steps, to the last run's end. The second
(``orchestration_ratio_incl_daemon_start``) starts when the daemon process is started, so it
adds the daemon's own start (importing Dagster and the code location, its first loops) and the
``dagster sensor start`` command in between. A third
(``orchestration_ratio_from_first_tick``) starts at the sensor's first tick: the daemon looks at
its sensors every 5 s, so the headline includes a wait of 0-5 s that is polling, not work. The
plain baseline is the same in all three.

Where the time goes: ``run_phases_mean_s`` (queue, process start, steps),
``steps_of_the_first_run`` (per step, when each kind of event came: compute until
``STEP_OUTPUT``, the IO manager's commits until the materializations, the check results) and
``cpu_seconds`` per process kind (daemon, code server, runs) from the sensor's start.

The package is byte-compiled first, as an installed one is (with ``PYTHONDONTWRITEBYTECODE``
set, a checkout would be compiled again by every process the daemon starts).

``BENCH_EXTRA_PATH``: a folder put on the daemon's and the runs' ``PYTHONPATH`` as well (a
profiler's ``sitecustomize.py``, say).

Run from the repository root (about ``sessions x 5 s`` on 2 cores)::

    PYTHONPATH=. .venv/bin/python bench/hbcd_orchestration.py --sessions 100

Writes ``--out`` (``bench/hbcd_orchestration_results.json``). Read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aind_assets.hbcd.identity.idmap import parse_identity_map
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import free_port, mongo_uri, mongoeco_server, seaweedfs_server
from bench.cpu import GroupCpuSampler, group_cpu, process_cpu
from bench.hbcd_deid import BUCKET, KEY, SECRET, deidentify_all, generate
from bench.runs_at_scale import LoadSampler, load_average

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Sensors and schedules stopped for the measurement (only de-identification runs).
OTHERS = (
    ("sensor", "hbcd_session_discovery"),  # started once the daemon is up (the headline clock)
    ("sensor", "hbcd_derivatives_sensor"),
    ("sensor", "hbcd_cbrain_observer"),
    ("schedule", "hbcd_daily_deidentification"),
)
DEID_ASSETS = ("hbcd/deidentified_session", "hbcd/deidentified_dataset")


def _runs(instance: Any) -> list[Any]:
    import dagster as dg

    return list(instance.get_runs(filters=dg.RunsFilter(tags={"aind/flow": "hbcd"})))


def _timeline(instance: Any, runs: list[Any]) -> dict[str, float]:
    """When the runs were created, waited and ran (seconds, from the run records): how much of
    the total is the daemon's start and first tick, the queue, and the runs themselves."""
    records = instance.get_run_records()
    mine = [r for r in records if r.dagster_run.run_id in {run.run_id for run in runs}]
    created = [r.create_timestamp.timestamp() for r in mine]
    started = [r.start_time for r in mine if r.start_time]
    ended = [r.end_time for r in mine if r.end_time]
    durations = [r.end_time - r.start_time for r in mine if r.start_time and r.end_time]
    return {
        "first_run_created_to_last_run_ended_s": round(max(ended) - min(created), 2),
        "run_process_seconds_sum": round(sum(durations), 2),
        "run_seconds_max": round(max(durations), 2),
        "queue_wait_max_s": round(
            max(r.start_time - r.create_timestamp.timestamp() for r in mine if r.start_time), 2
        ),
        "first_created_epoch": min(created),
        "first_started_epoch": min(started),
        "last_ended_epoch": max(ended),
    }


def _first_tick_epoch(instance: Any, sensor: str) -> float | None:
    """When the sensor's first tick started (the daemon looks at its sensors every few seconds:
    how long after ``dagster sensor start`` that comes is polling, not orchestration)."""
    for state in instance.all_instigator_state():
        if state.instigator_name == sensor:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
            if ticks:
                return min(t.timestamp for t in ticks)
    return None


def _phases(instance: Any, runs: list[Any]) -> dict[str, float]:
    """Where a run's time goes, from its event log (mean seconds over the runs): waiting in the
    queue, the launch (a process started: Dagster, the code location and the instance loaded),
    each step, and the end of the run after its last step."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.RUN_ENQUEUED: "enqueued",
        dg.DagsterEventType.RUN_STARTING: "starting",
        dg.DagsterEventType.RUN_START: "start",
        dg.DagsterEventType.RUN_SUCCESS: "end",
        dg.DagsterEventType.RUN_FAILURE: "end",
    }
    sums: dict[str, float] = {}
    for run in runs:
        at: dict[str, float] = {}
        steps: dict[str, list[float]] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type in kinds:
                at.setdefault(kinds[event.event_type], entry.timestamp)
            elif event.event_type in (
                dg.DagsterEventType.STEP_START,
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                steps.setdefault(event.step_key or "?", []).append(entry.timestamp)
        if not {"enqueued", "starting", "start", "end"} <= set(at) or not steps:
            continue
        first = min(t[0] for t in steps.values())
        last = max(t[-1] for t in steps.values())
        for name, value in (
            ("queue_s", at["starting"] - at["enqueued"]),
            ("process_start_s", at["start"] - at["starting"]),
            ("start_to_first_step_s", first - at["start"]),
            ("steps_s", last - first),
            ("last_step_to_run_end_s", at["end"] - last),
        ):
            sums[name] = sums.get(name, 0.0) + value
    return {k: round(v / max(1, len(runs)), 2) for k, v in sums.items()}


def _step_events(instance: Any, run: Any) -> dict[str, dict[str, list[float]]]:
    """Inside each step of a run: per event type, [first, last] seconds after the step's start
    and how many (where a step's time goes: compute, storing outputs, events, checks)."""
    out: dict[str, dict[str, list[float]]] = {}
    started: dict[str, float] = {}
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        step = entry.step_key
        if step is None:
            continue
        name = event.event_type_value if event is not None else "log"
        if name == "STEP_START":
            started[step] = entry.timestamp
        t = round(entry.timestamp - started.get(step, entry.timestamp), 2)
        slot = out.setdefault(step, {}).setdefault(name, [t, t, 0])
        slot[1], slot[2] = t, slot[2] + 1
    return out


def _cpu_now(servers: dict[str, int], group: int | None = None) -> dict[str, float]:
    """CPU seconds so far: this process (the plain functions), each server, the daemon's group."""
    t = os.times()
    out = {"this process": t.user + t.system, **{k: process_cpu(p) for k, p in servers.items()}}
    out["dagster processes"] = group_cpu(group) if group is not None else 0.0
    return out


def _process_kind(cmdline: str) -> str:
    if "dagster-daemon" in cmdline:
        return "daemon"
    if "dagster api grpc" in cmdline:
        return "code servers"
    if "multiprocessing" in cmdline:
        return "runs"
    return "other (dagster CLI, workers)"


def _cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(b[k] - a[k], 2) for k in a if round(b[k] - a[k], 2)}


def _sensor(env: dict[str, str], action: str, name: str, kind: str = "sensor") -> None:
    """``dagster sensor|schedule start|stop <name>`` on the bench's instance."""
    subprocess.run(
        [str(BIN / "dagster"), kind, action, name, "-m", "aind_assets.definitions"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def wait_for_daemon(instance: Any, timeout: float) -> float:
    """Until the daemon's sensor and run-queue loops have reported in (``perf_counter`` then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = instance.get_daemon_heartbeats()
        if {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(beats):
            return time.perf_counter()
        time.sleep(0.2)
    raise SystemExit("timeout: the daemon did not start")


def wait_for_runs(instance: Any, expected_sessions: int, timeout: float) -> dict[str, Any]:
    """Until every requested HBCD run ended and the sessions de-identified reach the number
    expected; the runs, their statuses and the sessions they covered."""
    import dagster as dg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(instance)
        done = [r for r in runs if r.is_finished]
        keys = instance.get_materialized_partitions(dg.AssetKey(DEID_ASSETS[0].split("/")))
        if runs and len(done) == len(runs) and len(keys) >= expected_sessions:
            statuses: dict[str, int] = {}
            for r in runs:
                statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
            return {
                "runs": len(runs),
                "statuses": statuses,
                "sessions": len(keys),
                "timeline": _timeline(instance, runs),
                "run_phases_mean_s": _phases(instance, runs),
                # get_runs lists the newest first
                "steps_of_the_first_run": _step_events(instance, runs[-1]),
            }
        time.sleep(1.0)
    raise SystemExit(f"timeout: {len(_runs(instance))} runs, not all done")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4, help="plain run: sessions at once")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sessions per sensor run (HBCD_RUN_BATCH_SIZE; default: the setting's default)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "hbcd_orchestration_results.json")
    args = ap.parse_args(argv)
    # An installed package is byte-compiled (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile the package again in every process it starts
    # (~0.5 s each, the daemon's and every run's): measure the platform as installed.
    compileall.compile_dir(REPO / "aind_assets", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="hbcd-orchestration-"))
    bids, _rows = generate(work / "source", args.sessions, 0.1)
    map_text = (work / "source/release_identifiers.csv").read_text()
    idmap = parse_identity_map(map_text)
    weed = seaweedfs_server(work / "weed", work / "weed.log", KEY, SECRET).start(timeout=120)
    port = free_port()
    mongo = mongoeco_server(work / "docdb.sqlite", port, work / "mongoeco.log").start(timeout=120)
    daemon = None
    try:
        endpoint = f"http://127.0.0.1:{weed.port}"
        store = ObjectStoreResource(
            root=f"s3://{BUCKET}",
            endpoint_url=endpoint,
            access_key_id=KEY,
            secret_access_key=SECRET,
        )
        store.ensure_root()
        plain = HbcdLayout(f"s3://{BUCKET}/plain-pr", f"s3://{BUCKET}/plain-deid")
        flow = HbcdLayout(f"s3://{BUCKET}/pr", f"s3://{BUCKET}/deid")
        for layout in (plain, flow):
            store.put_tree(bids, layout.identified_bids)
        map_url = f"{flow.identified_root}/identifiers/release_identifiers.csv"
        store.put_bytes(map_url, map_text.encode())

        home = work / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("BENCH_EXTRA_PATH")])]
            ),
            "DAGSTER_HOME": str(home),
            "AIND_DATA_DIR": str(work / "data"),
            "AIND_STORE_ROOT": f"s3://{BUCKET}/store",
            "AIND_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AIND_DOCDB_URI": mongo_uri(port),
            "AIND_DOCDB_DATABASE": "bench",
            "HBCD_IDENTIFIED_ROOT": flow.identified_root,
            "HBCD_DEIDENTIFIED_ROOT": flow.deidentified_root,
            "HBCD_IDENTITY_MAP": map_url,
            "AIND_MAX_QUEUED_RUNS_PER_FLOW": str(args.sessions + 10),
        }
        if args.batch_size is not None:
            env["HBCD_RUN_BATCH_SIZE"] = str(args.batch_size)
        for kind, name in OTHERS:
            _sensor(env, "stop", name, kind)
        os.environ["DAGSTER_HOME"] = str(home)
        import dagster as dg

        instance = dg.DagsterInstance.get()
        with LoadSampler() as load:
            load_before = load_average()
            servers = {"seaweedfs": weed.proc.pid, "docdb (mongoeco)": mongo.proc.pid}
            cpu0 = _cpu_now(servers)
            plain_s, keys, outcomes = deidentify_all(store, plain, idmap, args.workers)
            cpu1 = _cpu_now(servers)
            t0 = time.perf_counter()
            started_epoch = time.time()
            with (work / "daemon.log").open("wb") as log:
                daemon = subprocess.Popen(
                    [str(BIN / "dagster-daemon"), "run", "-m", "aind_assets.definitions"],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                sampler = GroupCpuSampler(daemon.pid, _process_kind)
                sampler.start()
                ready_s = wait_for_daemon(instance, args.timeout) - t0
                # the daemon is up and idle, as it is for weeks in production: the sessions are
                # discovered from here (the sensor's first tick comes with its next iteration)
                _sensor(env, "start", "hbcd_session_discovery")
                t1 = time.perf_counter()
                discovery_started_epoch = time.time()
                kinds0 = sampler.by_kind()
                done = wait_for_runs(instance, len(keys), args.timeout)
                cpu2 = _cpu_now(servers, group=daemon.pid)
                kinds = sampler.by_kind()
                sampler.stop()
            end = time.perf_counter()
            dagster_s = end - t1
            with_daemon_start_s = end - t0
            timeline = done.pop("timeline")
            phases = done.pop("run_phases_mean_s")
            first_run_steps = done.pop("steps_of_the_first_run")
            first_created = timeline.pop("first_created_epoch")
            last_ended = timeline.pop("last_ended_epoch")
            first_tick = _first_tick_epoch(instance, "hbcd_session_discovery")
            timeline["sensor_started_to_first_tick_s"] = (
                round(first_tick - discovery_started_epoch, 2) if first_tick else None
            )
            from_tick_s = last_ended - first_tick if first_tick else None
            timeline["daemon_start_to_ready_s"] = round(ready_s, 2)
            timeline["sensor_started_to_first_run_created_s"] = round(
                first_created - discovery_started_epoch, 2
            )
            timeline["daemon_start_to_first_run_created_s"] = round(
                first_created - started_epoch, 2
            )
            timeline.pop("first_started_epoch")
            load_after = load_average()
        overhead = dagster_s - plain_s
        result = {
            "what": f"{len(keys)} HBCD sessions de-identified (tree of bench/hbcd_deid.py): "
            "dagster-daemon + sensor + queued runs (each its own process) vs the plain functions",
            "sessions": len(keys),
            "plain_functions_s": round(plain_s, 2),
            "plain_functions_workers": args.workers,
            "dagster_s": round(dagster_s, 2),
            "orchestration_ratio_vs_plain_functions": round(dagster_s / plain_s, 2),
            # the same, from the sensor's first tick: without the daemon's polling interval
            # (a uniform 0-5 s wait for its next look at the sensors)
            "dagster_from_first_tick_s": round(from_tick_s, 2) if from_tick_s else None,
            "orchestration_ratio_from_first_tick": (
                round(from_tick_s / plain_s, 2) if from_tick_s else None
            ),
            "dagster_incl_daemon_start_s": round(with_daemon_start_s, 2),
            "orchestration_ratio_incl_daemon_start": round(with_daemon_start_s / plain_s, 2),
            "goal_ratio": 1.3,
            "batch_size": args.batch_size or "default (HBCD_RUN_BATCH_SIZE, 50)",
            "runs": done["runs"],
            "sessions_per_run": round(done["sessions"] / max(1, done["runs"]), 2),
            "run_statuses": done["statuses"],
            "timeline": timeline,
            "run_phases_mean_s": phases,
            "steps_of_the_first_run": first_run_steps,
            "per_run_overhead_s": round(overhead / max(1, done["runs"]), 2),
            "per_session_overhead_s": round(overhead / max(1, len(keys)), 2),
            "files_written_plain": outcomes,
            "cpu_seconds": {
                "plain_functions": _cpu_delta(cpu0, cpu1),
                "dagster_incl_daemon_start": _cpu_delta(cpu1, cpu2),
                # sampled per process (approximate: a process's last < 0.2 s may be missed)
                "dagster_from_sensor_start_by_process": _cpu_delta(
                    {k: kinds0.get(k, 0.0) for k in kinds}, kinds
                ),
                "dagster_daemon_start_by_process": {k: round(v, 2) for k, v in kinds0.items()},
            },
            "run_coordinator": "QueuedRunCoordinator, 4 runs at once, 2 of aind/flow=hbcd "
            "(dagster.yaml, the local profile); DefaultRunLauncher (a process per run)",
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "load_1min_samples": load.summary(),
            "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=60)
        mongo.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
