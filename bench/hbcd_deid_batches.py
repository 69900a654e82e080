"""Benchmark: HBCD de-identification through Dagster, one run per session vs batched runs, against
the plain functions on the same tree (not part of the tests).

    python bench/hbcd_deid_batches.py [--subjects 10] [--workers 4]

A demo identified BIDS tree (``--subjects`` x 2 sessions) on a local store. Each variant starts
from an empty de-identified side and does the same work per session: de-identify, leak-scan,
commit (the writing marker removed):

* ``bare_loop``: the plain functions in a Python loop (``deidentify_session``,
  ``scan_session``, ``commit_session_write``), one session after another;
* ``one_run_per_session``: ``execute_in_process`` of the asset + its blocking leak check, once
  per session (what the sensor requested before batching; in production each run is also a
  process, which costs more);
* ``batched_run``: one run over the range of all sessions (``--workers`` subjects at once).

Prints and writes ``bench/hbcd_deid_batches_results.json``: seconds, the ratios against the bare
loop, and the per-run and per-session overhead in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from aind_assets.batches import RANGE_END, RANGE_START
from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.deid.assets import deidentified_session
from aind_assets.hbcd.deid.checks import session_has_no_identifiers
from aind_assets.hbcd.deid.commit import commit_session_write, sessions_being_written
from aind_assets.hbcd.deid.ledger import discover_sessions
from aind_assets.hbcd.deid.scanning import scan_session
from aind_assets.hbcd.deid.store import deidentify_session
from aind_assets.hbcd.keys import BIDS_SESSIONS_NAME
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

OUT = Path(__file__).with_name("hbcd_deid_batches_results.json")


def _reset(store: ObjectStoreResource, layout: HbcdLayout, io_root: str) -> None:
    state = layout.ledger_root.rsplit("/", 1)[0]
    for url in (layout.deidentified_root, state, io_root):
        store.delete(url, recursive=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = ObjectStoreResource(root=str(tmp / "store"))
        map_path = write_identified_bids(tmp / "src", n_subjects=args.subjects)
        layout = HbcdLayout(store.url("pr"), store.url("deid"))
        store.put_tree(tmp / "src" / "assembly_bids", layout.identified_bids)
        map_url = join_url(layout.identified_root, "identifiers/release_identifiers.csv")
        store.put_file(map_path, map_url)
        hbcd = HbcdResource(
            object_store=store,
            identity_map=IdentityMapResource(object_store=store, url=map_url),
            identified_root=layout.identified_root,
            deidentified_root=layout.deidentified_root,
            num_parallel_workers=args.workers,
        )
        io_root = store.url("io")
        resources = {
            "hbcd": hbcd,
            "io_manager": ObjectStoreIOManager(
                object_store=store,
                docdb=DocDBResource(uri="mongodb://unused", database="unused"),
                root=io_root,
                write_records_to_docdb=False,
            ),
        }
        idmap = hbcd.idmap()
        keys = sorted(discover_sessions(store, layout, idmap).discovery.sessions)
        assets = [deidentified_session, session_has_no_identifiers]
        times: dict[str, float] = {}
        (tmp / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp / "home")) as instance:
            instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, keys)

            started = time.perf_counter()
            for key in keys:
                deidentify_session(store, layout, idmap, key)
                assert scan_session(store, layout, idmap, key).clean
                commit_session_write(store, layout.deidentified_root, key)
            times["bare_loop"] = time.perf_counter() - started

            _reset(store, layout, io_root)
            started = time.perf_counter()
            for key in keys:
                r = dg.materialize(
                    assets, partition_key=key, instance=instance, resources=resources
                )
                assert r.success
            times["one_run_per_session"] = time.perf_counter() - started
            assert not sessions_being_written(store, layout.deidentified_root)

            _reset(store, layout, io_root)
            started = time.perf_counter()
            r = dg.materialize(
                assets,
                instance=instance,
                resources=resources,
                tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
            )
            assert r.success
            times["batched_run"] = time.perf_counter() - started
            assert not sessions_being_written(store, layout.deidentified_root)
    n = len(keys)
    bare = times["bare_loop"]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "sessions": n,
        "workers": args.workers,
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "one_run_per_session_ratio_vs_bare_loop": round(times["one_run_per_session"] / bare, 2),
        "batched_run_ratio_vs_bare_loop": round(times["batched_run"] / bare, 2),
        "batched_speedup_vs_one_run_per_session": round(
            times["one_run_per_session"] / times["batched_run"], 2
        ),
        "overhead_per_run_s_one_run_per_session": round(
            (times["one_run_per_session"] - bare) / n, 3
        ),
        "overhead_per_session_s_batched": round((times["batched_run"] - bare) / n, 3),
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
