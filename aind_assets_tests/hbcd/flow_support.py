"""Helpers for the HBCD Dagster-flow tests: a world on a real store, sensor ticks applied the
way the daemon applies them, runs executed in process, and a scan of a Dagster instance's
storage for identifiers."""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.definitions import ASSETS, CHECKS, JOBS, SCHEDULES, SENSORS
from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.keys import AUTOMATED_TAGS
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.leaks.scan import scan_for_identifiers
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

RECORDS = "processing_records"


@dataclass
class World:
    store: ObjectStoreResource
    layout: HbcdLayout
    idmap: IdentityMap
    hbcd: HbcdResource
    defs: dg.Definitions
    instance: dg.DagsterInstance
    io_root: str
    source_dir: Path
    cursors: dict[str, str | None] = field(default_factory=dict)
    automation_cursor: Any = None
    messages: list[str] = field(default_factory=list)

    @property
    def identified_bids(self) -> str:
        return self.layout.identified_bids

    def source_url(self, rel: str) -> str:
        return join_url(self.layout.identified_bids, rel)

    # -- sensors --------------------------------------------------------------------------
    def tick(self, sensor: dg.SensorDefinition) -> dg.SensorResult | dg.SkipReason:
        """Evaluate a sensor and apply its result as the daemon would (partitions, asset
        events, cursor). Returns the result; its run requests are not executed."""
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(sensor.name),
            resources={"hbcd": self.hbcd},
            definitions=self.defs,
        ) as ctx:
            result = sensor(ctx)
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests or []:
                self.instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
            for event in result.asset_events or []:
                self.instance.report_runless_asset_event(event)
            if result.cursor is not None:
                self.cursors[sensor.name] = result.cursor
            if result.skip_reason is not None:
                self.messages.append(result.skip_reason.skip_message or "")
            # what the daemon would store with the tick and the runs
            for request in result.run_requests or []:
                self.messages.append(f"{request.run_key} {request.partition_key} {request.tags}")
            for event in result.asset_events or []:
                self.messages.append(repr(event))
        return result

    def automate(self) -> list[dg.RunRequest]:
        """One tick of the automation-condition sensor (``hbcd_automation``): evaluate the
        declared conditions (cursor kept) and group what they request into runs, one per
        partition, as the sensor would. Returns the run requests (not executed)."""
        result = dg.evaluate_automation_conditions(
            self.defs, self.instance, cursor=self.automation_cursor
        )
        self.automation_cursor = result.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for r in result.results:
            if isinstance(r.key, dg.AssetKey):
                for partition in result.get_requested_partitions(r.key):
                    by_partition.setdefault(partition, []).append(r.key)
        return [
            dg.RunRequest(partition_key=p, asset_selection=sorted(keys), tags=AUTOMATED_TAGS)
            for p, keys in sorted(by_partition.items(), key=lambda kv: kv[0] or "")
        ]

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Execute one run request in process (asset and check selection as requested)."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        checks = request.asset_check_keys
        if checks is None:
            checks = [
                c.check_key
                for c in CHECKS
                if c.check_key.asset_key in set(request.asset_selection or [])
            ]
        subset = job.get_subset(
            asset_selection=set(request.asset_selection or []), asset_check_selection=set(checks)
        )
        return subset.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=dict(request.tags),
            raise_on_error=False,
        )

    def sessions_of(self, request: dg.RunRequest) -> list[str]:
        """The session partitions a run request covers (its key, or its range of keys)."""
        if request.partition_key:
            return [request.partition_key]
        start = request.tags.get("dagster/asset_partition_range_start")
        if start is None:
            return []
        order = list(self.instance.get_dynamic_partitions("bids_sessions"))
        end = request.tags["dagster/asset_partition_range_end"]
        return order[order.index(start) : order.index(end) + 1]

    def run_all(self, requests: Iterable[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
        return [self.run(r) for r in requests]


def make_world(
    store: ObjectStoreResource,
    docdb: DocDBResource | None,
    instance: dg.DagsterInstance,
    tmp: Path,
    *,
    n_subjects: int = 3,
    sessions: tuple[str, ...] = ("V02", "V03"),
    **hbcd_options: Any,
) -> World:
    """Write the identified demo tree and map to ``store`` and build the definitions."""
    source = tmp / "source"
    map_path = write_identified_bids(source, n_subjects=n_subjects, sessions=sessions)
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    store.put_tree(source / "assembly_bids", layout.identified_bids)
    map_url = join_url(layout.identified_root, "identifiers/release_identifiers.csv")
    store.put_file(map_path, map_url)
    hbcd = HbcdResource(
        object_store=store,
        identity_map=IdentityMapResource(object_store=store, url=map_url),
        identified_root=layout.identified_root,
        deidentified_root=layout.deidentified_root,
        **hbcd_options,
    )
    io_root = store.url("io")
    resources: dict[str, object] = {
        "hbcd": hbcd,
        "io_manager": ObjectStoreIOManager(
            object_store=store,
            docdb=docdb if docdb is not None else DocDBResource(uri="mongodb://x", database="x"),
            root=io_root,
            records_collection=RECORDS,
            write_records_to_docdb=docdb is not None,
        ),
    }
    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        sensors=SENSORS,
        schedules=SCHEDULES,
        jobs=JOBS,
        resources=resources,
    )
    return World(
        store=store,
        layout=layout,
        idmap=parse_identity_map(map_path.read_text(), "test map"),
        hbcd=hbcd,
        defs=defs,
        instance=instance,
        io_root=io_root,
        source_dir=source,
    )


# -- scanning for identifiers -------------------------------------------------------------


def identifier_hits(text_or_bytes: str | bytes, idmap: IdentityMap, where: str) -> list[str]:
    """Findings (token rule, as the leak check) plus PSCIDs anywhere as substrings."""
    data = (
        text_or_bytes.encode("utf-8", "surrogateescape")
        if isinstance(text_or_bytes, str)
        else text_or_bytes
    )
    hits = [f"{where}: {f}" for f in scan_for_identifiers("x", data, idmap)]
    lowered = data.lower()
    for row in idmap.rows:
        if row.pscid.lower().encode() in lowered:
            hits.append(f"{where}: PSCID substring")
    return hits


def _cells(path: Path) -> Iterable[tuple[str, str | bytes]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in con.execute(f'select * from "{table}"'):  # noqa: S608 - test code
                for value in row:
                    if isinstance(value, bytes):
                        # Dagster stores snapshots zlib-compressed: scan what they hold (the
                        # compressed bytes would hide an identifier and show random ones)
                        with contextlib.suppress(zlib.error):
                            value = zlib.decompress(value)
                    if isinstance(value, str | bytes):
                        yield table, value
    finally:
        con.close()


def scan_instance_storage(
    root: Path, idmap: IdentityMap, expect: Iterable[str] = ()
) -> tuple[int, list[str]]:
    """Every SQLite table cell and every other file under a Dagster instance directory. Each
    string of ``expect`` (e.g. a release-candidate ID) must be found somewhere: proof that the
    scan sees the stored events."""
    hits: list[str] = []
    missing = {e.encode() for e in expect}
    n = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        n += 1
        if p.suffix == ".db":
            for table, value in _cells(p):
                hits += identifier_hits(value, idmap, f"{p.name}:{table}")
                data = value.encode() if isinstance(value, str) else value
                missing = {m for m in missing if m not in data}
        elif not p.name.endswith(("-wal", "-shm", "-journal")):
            data = p.read_bytes()
            hits += identifier_hits(data, idmap, p.name)
            missing = {m for m in missing if m not in data}
    assert not missing, f"expected in the instance storage but not found: {missing}"
    return n, hits


def scan_store(
    store: ObjectStoreResource, prefix: str, idmap: IdentityMap
) -> tuple[int, list[str]]:
    """Names and contents of every object under ``prefix`` with the leak scanner."""
    hits: list[str] = []
    infos = store.list_objects(prefix)
    for info in infos:
        rel = info.relative_to(prefix)
        with store.open(info.url, "rb") as f:
            hits += [str(x) for x in scan_for_identifiers(rel, f, idmap)]
        for row in idmap.rows:
            if row.pscid.lower() in rel.lower():
                hits.append(f"{rel}: PSCID substring in name")
    return len(infos), hits
