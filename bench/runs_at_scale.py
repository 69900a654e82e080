"""Orchestration cost of the AIND analysis flow at scale (not a test).

N partitions (``--partitions``, default 1,000) of a trivial analysis (``bench/trivial_analysis.py``:
one NWB-named file per data asset, one small result file per job) on real servers: SeaweedFS
(``weed mini``) for the object store and the platform's Mongo-wire server (mongoeco) for DocDB,
both started by :mod:`aind_assets.servers`. Two ways over the same data assets, each writing to
its own collections and prefixes (so neither finds the other's results):

* **bare loop** — one Python loop, per partition: ``dispatch_partitions``, the dispatch output
  committed (value, ``processing.json``, record, pointer: :mod:`aind_assets.io_managers.commit`),
  ``run_job`` for each job (results and result record), the analysis output committed the same
  way. No Dagster.
* **the documented CLI backfill** (docs/analysis.md "Backfills from the command line"):
  ``aind-assets partitions sync`` registers the partitions, then one ranged run
  ``dg launch --partition-range`` when ``dg`` is installed, else
  ``dagster asset materialize --partition-range`` (in-process executor), against a Dagster
  instance on SQLite storage (``DAGSTER_HOME`` in the work folder).

Both ways first run one partition untimed (imports, connections, the instance's first use).
Per-run overhead is measured with one more partition, alone, both ways (CLI run minus bare loop);
per-partition overhead is what the N-partition run costs beyond the bare loop and that per-run
overhead, divided by N. Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/runs_at_scale.py --partitions 100    # ~2 min
    PYTHONPATH=. .venv/bin/python bench/runs_at_scale.py                     # 1,000

Writes ``--out`` (``bench/runs_at_scale_results.json``). Read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic_core
import yaml

from aind_assets import lineage
from aind_assets.analysis.dispatch import dispatch_partitions
from aind_assets.analysis.keys import analysis_key, dispatch_key
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.wrapper import run_job
from aind_assets.io_managers import commit
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import free_port, mongo_uri, mongoeco_server, seaweedfs_server

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABASE = "bench"
ASSETS = "data_assets"
SPEC = "bench_scale"
PROJECT = "Runs at scale bench"
ANALYSIS = "bench_trivial"
#: The two assets of the benchmark's dispatch spec (one partition set per spec).
DISPATCH_ASSET = dispatch_key(SPEC).to_user_string()
ANALYSIS_ASSET = analysis_key(SPEC, ANALYSIS).to_user_string()
KEY, SECRET = "bench-key", "bench-secret"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds while it runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(round(os.getloadavg()[0], 2))
            self._stop.wait(every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        s = self.samples or [0.0]
        return {"min": min(s), "max": max(s), "mean": round(sum(s) / len(s), 2), "n": len(s)}


# --------------------------------------------------------------------------------------------
# The world: N data assets with one file each, their records, the dispatch config
# --------------------------------------------------------------------------------------------


def records(n: int, bucket: str) -> list[dict[str, Any]]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        name = f"bench_{i:05d}_2025-01-01_00-00-00"
        when = start + timedelta(minutes=i)
        out.append(
            {
                "_id": f"00000000-0000-4000-8000-{i:012d}",
                "name": name,
                "location": f"{bucket}/{name}",
                "created": when,
                "last_modified": when,
                "data_description": {"project_name": PROJECT, "name": name},
            }
        )
    return out


def dispatch_config(path: Path) -> Path:
    spec = {
        "name": SPEC,
        "query": {"data_description.project_name": PROJECT},
        "file_extension": ".nwb",
        "analyses": [{"name": ANALYSIS}],
    }
    path.write_text(yaml.safe_dump([spec]))
    return path


# --------------------------------------------------------------------------------------------
# The bare loop
# --------------------------------------------------------------------------------------------


def _write_output(
    store: ObjectStoreResource,
    docdb: DocDBResource,
    root: str,
    collection: str,
    asset: str,
    key: str,
    value: Any,
    inputs: list[str],
    started: datetime,
) -> None:
    """What the IO manager writes for one output: version folder, record, pointer."""
    partition = store.upath(f"{root}/{asset}/{key}")
    version = commit.new_version_id("bare")
    folder = commit.version_path(partition, version)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "value.json").open("wb") as f:
        f.write(pydantic_core.to_json(value, indent=2))
    code = lineage.build_code(
        name=asset,
        version="1",
        parameters={"partition_key": key},
        input_data=inputs,
        commit=lineage.git_commit(),
    )
    processing = lineage.build_processing(
        code=code,
        start=started,
        output_location=commit.url_of(partition),
        output_path=f"{asset}/{key}",
        notes="bare loop",
    )
    with (folder / commit.RECORD_FILE).open("w") as f:
        f.write(processing.model_dump_json(indent=2))
    name = lineage.record_name(code)
    document = lineage.record_document(
        processing,
        name,
        asset_key=asset,
        partition_key=key,
        run_id="bare",
        location=commit.url_of(partition),
        written_at=datetime.now(UTC),
    )
    commit.commit_many(
        [commit.Write(partition, version, document)], docdb=docdb, collection=collection
    )


def bare_loop(resource: AnalysisResource, keys: list[str], io_root: str, records: str) -> float:
    """Dispatch, jobs and outputs of each partition with the plain functions; seconds."""
    config, registry = resource.load()
    definition = registry.get(ANALYSIS)
    pmap = resource.partition_map()
    store, docdb = resource.object_store, resource.docdb
    t0 = time.perf_counter()
    for key in keys:
        started = datetime.now(UTC)
        result = dispatch_partitions(
            {key: pmap.get(key)},
            config=config,
            registry=registry,
            docdb=docdb,
            store=store,
            assets_collection=resource.assets_collection,
        )[key]
        models = [m.model_dump(mode="json") for m in result.models]
        _write_output(store, docdb, io_root, records, DISPATCH_ASSET, key, models, [], started)
        dispatch_url = commit.url_of(store.upath(f"{io_root}/{DISPATCH_ASSET}/{key}"))
        jobs = []
        for task in result.models:
            code = definition.job_code(task, {})
            params = definition.validate_parameters(
                code.parameters.model_dump() if code.parameters else {}, where=key
            )
            outcome = run_job(
                definition,
                task,
                params,
                code=code,
                docdb=docdb,
                store=store,
                results_root=resource.results_root,
                results_collection=resource.results_collection,
                run_id="bare",
            )
            jobs.append(outcome.result.model_dump(mode="json"))
        _write_output(
            store,
            docdb,
            io_root,
            records,
            ANALYSIS_ASSET,
            key,
            {"partition_key": key, "jobs": jobs},
            [dispatch_url],
            started,
        )
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------


def cli_command(first: str, last: str) -> list[str]:
    """The documented ranged run: ``dg launch`` if installed, else ``dagster asset materialize``."""
    select = f"{DISPATCH_ASSET},{ANALYSIS_ASSET}"
    if (BIN / "dg").exists():
        return [
            str(BIN / "dg"),
            "launch",
            "--assets",
            select,
            "--partition-range",
            f"{first}...{last}",
        ]
    return [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "aind_assets.definitions",
        "--select",
        select,
        "--partition-range",
        f"{first}...{last}",
        "--config-json",
        json.dumps({"execution": {"config": {"in_process": {}}}}),
    ]


def run_cli(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({done.returncode}): see {log}")
    return seconds


def check_outputs(docdb: DocDBResource, records: str, results: str, keys: list[str]) -> None:
    """Both ways wrote, for every partition, its two outputs' records and its result."""
    for asset in (DISPATCH_ASSET, ANALYSIS_ASSET):
        found = docdb.count(records, {"asset_key": asset, "status": "current"})
        if found != len(keys):
            raise SystemExit(f"{records}: {found} current {asset} records, expected {len(keys)}")
    if (found := docdb.count(results, {})) != len(keys):
        raise SystemExit(f"{results}: {found} result records, expected {len(keys)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "runs_at_scale_results.json")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    n = args.partitions
    work = Path(tempfile.mkdtemp(prefix="runs-at-scale-"))
    weed = seaweedfs_server(work / "weed", work / "weed.log", KEY, SECRET).start(timeout=120)
    port = free_port()
    mongo = mongoeco_server(work / "docdb.sqlite", port, work / "mongoeco.log").start(timeout=120)
    try:
        endpoint = f"http://127.0.0.1:{weed.port}"
        store = ObjectStoreResource(
            root="s3://bench",
            endpoint_url=endpoint,
            access_key_id=KEY,
            secret_access_key=SECRET,
            max_concurrency=16,
        )
        store.ensure_root()
        docdb = DocDBResource(uri=mongo_uri(port), database=DATABASE)
        docdb.ping()
        config_path = dispatch_config(work / "dispatch.yaml")
        home = work / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            yaml.safe_dump({"telemetry": {"enabled": False}, "python_logs": {}})
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DAGSTER_HOME": str(home),
            "AIND_DATA_DIR": str(work / "data"),
            "AIND_STORE_ROOT": "s3://bench",
            "AIND_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AIND_DOCDB_URI": mongo_uri(port),
            "AIND_DOCDB_DATABASE": DATABASE,
            "AIND_ANALYSIS_DISPATCH_CONFIG": str(config_path),
            "AIND_ANALYSIS_MODULES": "bench.trivial_analysis",
            "AIND_ANALYSIS_SENSOR_RUNNING": "0",
        }
        # the data assets: N for the ranged run, one for the one-partition runs, one to warm up
        recs = records(n + 2, store.url("data-assets"))
        t0 = time.perf_counter()
        store.map_concurrently(
            lambda r: store.put_bytes(f"{r['location']}/nwb/{r['name']}.nwb", b"\x89HDF\r\n"),
            recs,
        )
        docdb.bulk_upsert(ASSETS, recs)
        seed_s = time.perf_counter() - t0
        log = work / "cli.log"
        t0 = time.perf_counter()
        synced = subprocess.run(
            [str(BIN / "aind-assets"), "partitions", "sync", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        sync_s = time.perf_counter() - t0
        keys: list[str] = json.loads(synced.stdout)["keys"]
        assert len(keys) == n + 2, len(keys)
        warm, single, ranged = keys[-1], keys[-2], keys[:n]

        def resource(prefix: str) -> AnalysisResource:
            return AnalysisResource(
                docdb=docdb,
                object_store=store,
                assets_collection=ASSETS,
                results_collection=f"{prefix}_results",
                results_root=store.url(f"{prefix}-results"),
                dispatch_config=str(config_path),
                analysis_modules=["bench.trivial_analysis"],
            )

        bare = resource("bare")
        cli_cmd = cli_command(ranged[0], ranged[-1])
        with LoadSampler() as load:
            load_before = load_average()
            # untimed: imports, connections, the instance's first use
            bare_loop(bare, [warm], store.url("bare-io"), "bare_records")
            run_cli(cli_command(warm, warm), env, log)
            bare_one_s = bare_loop(bare, [single], store.url("bare-io"), "bare_records")
            cli_one_s = run_cli(cli_command(single, single), env, log)
            bare_s = bare_loop(bare, ranged, store.url("bare-io"), "bare_records")
            cli_s = run_cli(cli_cmd, env, log)
            load_after = load_average()
        check_outputs(docdb, "bare_records", "bare_results", [*ranged, single, warm])
        check_outputs(docdb, "processing_records", "analysis_results", [*ranged, single, warm])
        per_run = cli_one_s - bare_one_s
        per_partition = (cli_s - bare_s - per_run) / n
        result = {
            "what": f"{n} partitions of a trivial analysis ({ANALYSIS}), one ranged CLI run vs a "
            "bare loop over the plain functions, same servers (SeaweedFS, mongoeco)",
            "cli": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cli_cmd[:3])),
            "partitions": n,
            "jobs_per_partition": 1,
            "bare_loop_s": round(bare_s, 2),
            "cli_ranged_run_s": round(cli_s, 2),
            "orchestration_ratio_vs_bare_loop": round(cli_s / bare_s, 2),
            "goal_ratio": 1.5,
            "one_partition_bare_loop_s": round(bare_one_s, 2),
            "one_partition_cli_run_s": round(cli_one_s, 2),
            "per_run_overhead_s": round(per_run, 2),
            "per_partition_overhead_s": round(per_partition, 4),
            "bare_loop_per_partition_s": round(bare_s / n, 4),
            "seed_s": round(seed_s, 2),
            "partitions_sync_s": round(sync_s, 2),
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "load_1min_samples": load.summary(),
            "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "storage": "Dagster instance on SQLite (DAGSTER_HOME in the work folder)",
        }
    finally:
        mongo.stop()
        weed.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
