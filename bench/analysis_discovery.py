"""Benchmark of the AIND analysis flow's discovery and file listing (not a test).

Part 1, discovery: DocDB holds ``--records`` (100k) data-asset records, seeded fast through
mongoeco's SQLite engine (in process, no wire) and then served by the platform's Mongo-wire server
(``aind_assets.servers.mongoeco_server``). The real discovery sensor runs against a real Dagster
instance (SQLite storage on disk): first discovery tick after tick until it has caught up, then a
steady tick with 0 new assets and one with 100 new assets. Each tick's requests are applied as the
daemon would (partitions added in chunks). Reported: seconds and DocDB documents read per tick.

Part 2, file listing on the real S3 server (SeaweedFS ``weed mini``): ``--assets`` (1,000) data
assets × ``--files`` (10) objects; the dispatch's concurrent listing
(``ObjectStoreResource.list_many`` + ``select_files``) against a serial per-asset
``glob("{location}/**/*.nwb")`` as analysis-pipeline-utils does it.

Run once, from the repository root::

    /work/venv/bin/python bench/analysis_discovery.py            # ~10 min on 2 cores
    /work/venv/bin/python bench/analysis_discovery.py --records 20000 --assets 200   # quick

It prints a Markdown report (ratios first) and writes it with the raw numbers as JSON to
``--out``. Performance is judged by ratios from one run on one machine, never by absolute times.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from aind_assets.analysis import paging
from aind_assets.analysis.files import select_files
from aind_assets.analysis.models import load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.demo.records import demo_asset_records
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import free_port, mongo_uri, mongoeco_server, seaweedfs_server

DATABASE = "bench"
ASSETS = "data_assets"
BUCKET_URL = "s3://bench-data/data-assets"
SPEC = {
    "name": "ephys_sessions",
    "query": {"data_description.project_name": "Ephys Platform"},
    "file_extension": ".nwb",
    "analyses": [{"name": "unit_quality"}],
}

#: Documents returned by DocDB per operation kind, reset per tick.
READS: Counter[str] = Counter()


class CountingDocDB(DocDBResource):
    """The platform's DocDB resource, counting the documents each call returns."""

    def aggregate(self, collection, pipeline, *, batch_size=1000):  # noqa: ANN001
        out = super().aggregate(collection, pipeline, batch_size=batch_size)
        READS[f"aggregate {collection}"] += len(out)
        return out

    def find_one(self, collection, filter):  # noqa: A002, ANN001
        out = super().find_one(collection, filter)
        READS[f"find_one {collection}"] += 1
        return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Part 1: discovery
# --------------------------------------------------------------------------------------------


def seed_engine(path: Path, records: list[dict[str, Any]], *, index: bool = True) -> float:
    """Insert records through mongoeco's engine directly (no wire server running): its bulk
    insert path is fast, where inserts through the wire scan the collection once per document."""
    from mongoeco import MongoClient
    from mongoeco.engines.sqlite import SQLiteEngine

    started = time.perf_counter()
    client = MongoClient(engine=SQLiteEngine(str(path)))
    try:
        collection = client[DATABASE][ASSETS]
        for i in range(0, len(records), 5000):
            collection.insert_many(records[i : i + 5000], ordered=False)
            if (i // 5000) % 4 == 3:
                log(f"  seeded {i + 5000} records")
        if index:
            collection.create_index([("last_modified", 1), ("_id", 1)])
    finally:
        client.close()
    return time.perf_counter() - started


def evaluate(sensor, instance, resource, cursor):
    READS.clear()
    started = time.perf_counter()
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"analysis": resource}
    ) as context:
        result = sensor(context)
    tick_s = time.perf_counter() - started
    started = time.perf_counter()
    added = 0
    for request in result.dynamic_partitions_requests:  # what the daemon does after a tick
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        added += len(request.partition_keys)
    return result, {
        "tick_s": round(tick_s, 2),
        "apply_s": round(time.perf_counter() - started, 2),
        "partitions_added": added,
        "run_requests": len(result.run_requests),
        "docdb_documents_read": sum(READS.values()),
        "reads": dict(READS),
    }


def bench_discovery(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    total = args.records + 400  # room for the "new" records
    log(f"generating {total} demo records")
    records = demo_asset_records(total, bucket_url=BUCKET_URL)
    existing, later = records[: args.records], records[args.records :]
    matching = [r for r in later if r["data_description"]["project_name"] == "Ephys Platform"]
    cut = later.index(matching[99]) + 1  # the next records, up to the 100th matching one
    new = later[:cut]

    db_path = work / "docdb.sqlite"
    log(f"seeding {len(existing)} records through mongoeco's SQLite engine")
    seed_s = seed_engine(db_path, existing)
    log(f"seeded in {seed_s:.0f} s")

    config_path = work / "dispatch.yaml"
    config_path.write_text(yaml.safe_dump([SPEC]))
    registry = load_analyses()
    config = load_dispatch_config(config_path, known_analyses=registry.names())
    spec = config["ephys_sessions"]
    sensor = build_discovery_sensor(
        spec,
        "analysis_ephys_sessions",
        minimum_interval_seconds=30,
        running=False,
    )

    def serve():
        port = free_port()
        server = mongoeco_server(db_path, port, work / "mongoeco.log").start(timeout=120)
        docdb = CountingDocDB(uri=mongo_uri(port), database=DATABASE)
        docdb.ping()
        resource = AnalysisResource(
            docdb=docdb,
            object_store=ObjectStoreResource(root=str(work / "store")),
            assets_collection=ASSETS,
            results_collection="analysis_results",
            results_root=str(work / "results"),
            dispatch_config=str(config_path),
            page_size=args.page_size,
            tick_budget_s=args.tick_budget,
        )
        return server, docdb, resource

    home = work / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        server, docdb, resource = serve()
        try:
            first: list[dict[str, Any]] = []
            cursor = None
            while True:
                result, numbers = evaluate(sensor, instance, resource, cursor)
                cursor = result.cursor
                first.append(numbers)
                log(f"first discovery tick {len(first)}: {numbers}")
                if not result.run_requests:
                    first.pop()  # a tick that found nothing: discovery had caught up
                    break
            registered = len(instance.get_dynamic_partitions(spec.name))
            log(f"{registered} partitions registered")
            _, steady0 = evaluate(sensor, instance, resource, cursor)
            log(f"steady tick, 0 new: {steady0}")
        finally:
            docdb.close()
            server.stop()
        # New records arrive (written through the engine while the server is down: a wire
        # insert into a 100k collection costs mongoeco a scan per document).
        seed_engine(db_path, new, index=False)
        server, docdb, resource = serve()
        try:
            # A freshly started mongoeco answers its first queries several times slower (cold
            # caches); a long-running DocDB is warm: warm up with the probe of an empty page.
            far = (datetime(2999, 1, 1, tzinfo=UTC), "")
            docdb.aggregate(ASSETS, paging.pipeline_for_page(spec.resolved_query(), far, 1))
            result, steady100 = evaluate(sensor, instance, resource, cursor)
            log(f"steady tick, 100 new assets: {steady100}")
            assert steady100["partitions_added"] == 100, steady100
            _, steady0_after = evaluate(sensor, instance, resource, result.cursor)
            log(f"steady tick, 0 new (same server, after the 100): {steady0_after}")
        finally:
            docdb.close()
            server.stop()
    first_total = sum(t["tick_s"] for t in first)
    return {
        "records": args.records,
        "matching_records": sum(
            1 for r in existing if r["data_description"]["project_name"] == "Ephys Platform"
        ),
        "partitions": registered,
        "page_size": args.page_size,
        "tick_budget_s": args.tick_budget,
        "seed_s": round(seed_s, 1),
        "first_discovery": {
            "ticks": len(first),
            "total_tick_s": round(first_total, 1),
            "max_tick_s": max(t["tick_s"] for t in first),
            "total_apply_s": round(sum(t["apply_s"] for t in first), 1),
            "documents_read": sum(t["docdb_documents_read"] for t in first),
            "per_tick": first,
        },
        "steady_0_new": steady0,
        "steady_100_new": {**steady100, "records_inserted": len(new)},
        "steady_0_new_after": steady0_after,
    }


# --------------------------------------------------------------------------------------------
# Part 2: file listing
# --------------------------------------------------------------------------------------------


def bench_listing(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    key, secret = "bench-key", "bench-secret"
    server = seaweedfs_server(work / "weed", work / "weed.log", key, secret)
    server.start(timeout=120)
    try:
        store = ObjectStoreResource(
            root="s3://bench-files",
            endpoint_url=f"http://127.0.0.1:{server.port}",
            access_key_id=key,
            secret_access_key=secret,
            max_concurrency=16,
        )
        store.ensure_root()
        locations = [store.url("data-assets", f"asset_{i:05d}") for i in range(args.assets)]
        n_nwb = max(1, args.files * 6 // 10)
        objects = []
        for location in locations:
            for j in range(args.files):
                name = f"nwb/block_{j}.nwb" if j < n_nwb else f"meta/file_{j}.json"
                objects.append(f"{location}/{name}")
        log(f"uploading {len(objects)} objects to SeaweedFS")
        started = time.perf_counter()
        store.map_concurrently(lambda url: store.put_bytes(url, b"x" * 128), objects)
        upload_s = time.perf_counter() - started
        log(f"uploaded in {upload_s:.1f} s")

        started = time.perf_counter()
        listing = store.list_many(locations)
        concurrent = select_files(locations, ".nwb", lambda loc: [i.url for i in listing[loc]])
        concurrent_s = time.perf_counter() - started
        log(f"concurrent list_many + select_files: {concurrent_s:.2f} s")

        started = time.perf_counter()
        serial_list = {loc: [i.url for i in store.list_objects(loc)] for loc in locations}
        serial_list_s = time.perf_counter() - started
        log(f"serial list per asset: {serial_list_s:.2f} s")

        # analysis-pipeline-utils: s3fs glob("{location}/**/*{ext}"), one asset after another
        fs = store.fs_for(locations[0])
        started = time.perf_counter()
        globbed = {loc: [f"s3://{f}" for f in fs.glob(f"{loc}/**/*.nwb")] for loc in locations}
        serial_glob_s = time.perf_counter() - started
        log(f"serial glob per asset: {serial_glob_s:.2f} s")

        assert all(len(v) == n_nwb for v in concurrent.values())
        assert all(sorted(globbed[loc]) == concurrent[loc] for loc in locations)
        assert all(len(v) == args.files for v in serial_list.values())
    finally:
        server.stop()
    return {
        "assets": args.assets,
        "files_per_asset": args.files,
        "nwb_per_asset": n_nwb,
        "upload_s": round(upload_s, 1),
        "concurrent_list_many_s": round(concurrent_s, 2),
        "serial_list_s": round(serial_list_s, 2),
        "serial_glob_s": round(serial_glob_s, 2),
        "max_concurrency": 16,
    }


# --------------------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    d, f = result["discovery"], result["listing"]
    first, s0, s100 = d["first_discovery"], d["steady_0_new"], d["steady_100_new"]
    lines = [
        f"Machine: {result['machine']}; DocDB = mongoeco wire server; S3 = SeaweedFS.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| records in DocDB / matching the spec / partitions | {d['records']:,} / "
        f"{d['matching_records']:,} / {d['partitions']:,} |",
        f"| first discovery: ticks (page {d['page_size']:,}, budget {d['tick_budget_s']:g} s) | "
        f"{first['ticks']} ticks, {first['total_tick_s']:g} s in all, longest {first['max_tick_s']:g} s |",
        f"| first discovery: DocDB documents read | {first['documents_read']:,} |",
        f"| steady tick, 0 new (before / after the 100) | {s0['tick_s']:g} s / "
        f"{d['steady_0_new_after']['tick_s']:g} s, {s0['docdb_documents_read']} documents read |",
        f"| steady tick, 100 new assets | {s100['tick_s']:g} s, {s100['docdb_documents_read']} "
        f"documents read, {s100['partitions_added']} partitions, {s100['run_requests']} runs |",
        f"| **steady tick (0 new) / longest first-discovery tick** | "
        f"**{s0['tick_s'] / first['max_tick_s']:.2f}** |",
        f"| **steady tick (100 new) / steady tick (0 new)** | "
        f"**{s100['tick_s'] / max(d['steady_0_new_after']['tick_s'], 1e-9):.2f}** |",
        f"| **documents read: steady (100 new) / first discovery** | "
        f"**{s100['docdb_documents_read'] / max(first['documents_read'], 1):.4f}** |",
        f"| listing {f['assets']:,} assets x {f['files_per_asset']} files: concurrent list_many | "
        f"{f['concurrent_list_many_s']:g} s |",
        f"| serial list per asset / serial glob per asset | {f['serial_list_s']:g} s / "
        f"{f['serial_glob_s']:g} s |",
        f"| **serial glob / concurrent list_many** | "
        f"**{f['serial_glob_s'] / f['concurrent_list_many_s']:.1f}x** |",
        f"| **serial list / concurrent list_many** | "
        f"**{f['serial_list_s'] / f['concurrent_list_many_s']:.1f}x** |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--tick-budget", type=float, default=30.0)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--skip-discovery", action="store_true")
    parser.add_argument("--skip-listing", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("analysis_discovery_results.json")
    )
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "arguments": vars(args) | {"out": str(args.out)},
    }
    with tempfile.TemporaryDirectory(prefix="aind-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_listing:
            result["listing"] = bench_listing(args, work)
        if not args.skip_discovery:
            result["discovery"] = bench_discovery(args, work)
    if "listing" in result and "discovery" in result:
        result["report"] = report(result)
        print(result["report"])
    args.out.write_text(json.dumps(result, indent=2, default=str))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
