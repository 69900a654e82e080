"""What the fault tests run and count: a two-asset IO-manager flow, one analysis job, and the
checks that after a re-run no output, ``processing.json`` or DocDB record is missing, orphaned
or duplicated. Imported by the tests and by ``run_flow`` (the run process that gets killed)."""

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from aind_data_schema.core.processing import Processing
from pydantic import Field

from aind_assets import lineage
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.analysis.registry import AnalysisRegistry
from aind_assets.analysis.wrapper import METADATA_FILE, JobOutcome, claims_collection, run_job
from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.copies import META_SOURCE_ETAG
from aind_assets.hbcd.deid import files as deid_files
from aind_assets.hbcd.deid.assets import deidentified_session
from aind_assets.hbcd.deid.checks import session_has_no_identifiers
from aind_assets.hbcd.deid.commit import sessions_being_written
from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.ledger import discover_sessions
from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.identity.replace import deidentify_path, session_partition_key
from aind_assets.hbcd.keys import BIDS_SESSIONS_NAME
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.processing.assets import session_derivatives
from aind_assets.hbcd.release import specs
from aind_assets.hbcd.release.plan import MARKER, RECORD
from aind_assets.hbcd.release.resources import RELEASES_NAME, HbcdReleaseResource
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.hbcd.storage import object_metadata
from aind_assets.io_managers.commit import POINTER, VERSIONS, list_versions, read_pointer
from aind_assets.io_managers.store_io_manager import StoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets_tests.hbcd.release.support import SPEC_YAML, build_release_data

RECORDS = "processing_records"
RESULTS = "analysis_results"
COMMIT_LEASE_TTL_S = 2.0
CLAIM_TIMEOUT_S = 2.0
PARTITION = "p1"
LEASE = "hbcd/release_staging/r1"
LEASE_TTL_S = 2.0
OUTPUTS = [f"source_value/{PARTITION}", f"derived/{PARTITION}"]
MAP = "identifiers/release_identifiers.csv"

parts = dg.StaticPartitionsDefinition([PARTITION, "p2"])


@dg.asset(partitions_def=parts)
def source_value(context: dg.AssetExecutionContext) -> dict:
    return {"partition": context.partition_key, "values": [1, 2, 3]}


@dg.asset(partitions_def=parts)
def derived(source_value: dict) -> pd.DataFrame:
    return pd.DataFrame({"v": source_value["values"]})


@dataclass
class Env:
    """Where one test's flow writes: its bucket and database on the fault servers."""

    store: ObjectStoreResource
    docdb: DocDBResource

    @property
    def root(self) -> str:
        return self.store.url("io")


def io_manager(env: Env, checkpoint: Callable[[str], None] | None = None) -> StoreIOManager:
    return StoreIOManager(
        base_path=env.store.upath(env.root),
        docdb=env.docdb,
        records_collection=RECORDS,
        checkpoint=checkpoint,
        commit_lease_ttl_s=COMMIT_LEASE_TTL_S,
    )


def materialize(
    env: Env,
    assets: list[Any],
    checkpoint: Callable[[str], None] | None = None,
) -> dg.ExecuteInProcessResult:
    manager = dg.IOManagerDefinition.hardcoded_io_manager(io_manager(env, checkpoint))
    return dg.materialize(
        assets, partition_key=PARTITION, resources={"io_manager": manager}, raise_on_error=False
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    errors = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    return "\n".join(err.to_string() for err in errors if err is not None)


@dataclass
class Counts:
    outputs: int = 0
    pointers: int = 0
    versions: int = 0
    processing_files: int = 0
    current_records: int = 0
    superseded_records: int = 0
    notes: list[str] = field(default_factory=list)


def check_outputs(env: Env, outputs: list[str] = OUTPUTS) -> Counts:
    """Every output committed once, whole, and agreeing with its one current record."""
    counts = Counts()
    locations = {f"{env.root}/{rel}" for rel in outputs}
    for location in sorted(locations):
        part = env.store.upath(location)
        pointer = read_pointer(part)
        assert pointer is not None, f"{location}: no {POINTER}"
        counts.outputs += 1
        counts.pointers += 1
        version = pointer["version"]
        versions = list_versions(part)
        assert version in versions, f"{location}: the pointer names a missing version"
        assert set(versions) <= {version, pointer.get("previous")}, (
            f"{location}: debris left: {versions} (current {version})"
        )
        counts.versions += len(versions)
        names = [i.relative_to(location) for i in env.store.list_objects(location)]
        assert all(n == POINTER or n.startswith(f"{VERSIONS}/") for n in names), names
        folder = f"{location}/{VERSIONS}/{version}"
        inside = [i.relative_to(folder) for i in env.store.list_objects(folder)]
        assert "processing.json" in inside and any(
            n.startswith(("value.", "data/")) for n in inside
        )
        for v in versions:
            assert env.store.exists(f"{location}/{VERSIONS}/{v}/processing.json")
            counts.processing_files += 1
        on_disk = Processing.model_validate_json(env.store.get_bytes(f"{folder}/processing.json"))
        assert lineage.record_name(on_disk.data_processes[0].code) == pointer["record"]
        records = list(env.docdb.find(RECORDS, {"location": location}))
        current = [r for r in records if r.get("status") == "current"]
        assert len(current) == 1, f"{location}: {len(current)} current records"
        assert current[0]["_id"] == pointer["record"] and current[0]["version"] == version
        assert Processing.model_validate(current[0]["processing"]) == on_disk
        ids = {r["_id"] for r in records}
        for r in records:
            if r is not current[0]:
                assert r.get("status") == "superseded" and r.get("superseded_by") in ids, r
        counts.current_records += 1
        counts.superseded_records += len(records) - 1
    every = list(env.docdb.find(RECORDS, {}))
    orphans = [r["_id"] for r in every if r.get("location") not in locations]
    assert not orphans, f"records of no output: {orphans}"
    assert env.docdb.count(f"{RECORDS}_commits") == 0, "a commit lease was left behind"
    return counts


# -- one analysis job -------------------------------------------------------------------------
class FaultSpec(AnalysisSpecification):
    factor: int = Field(2, ge=1)


class FaultOutputs(AnalysisOutputs):
    total: int


REGISTRY = AnalysisRegistry()


@REGISTRY.register(name="fault_count", version="1.0", spec=FaultSpec, outputs=FaultOutputs)
def fault_count(task, params, ctx):  # noqa: ANN001, ANN201 - a run function
    """Writes two result files (so an upload can stop halfway)."""
    total = sum(len(ctx.open(u).read()) for u in task.file_location or [])
    (ctx.results_dir / "total.txt").write_text(str(total * params.factor))
    (ctx.results_dir / "detail.json").write_text(json.dumps({"total": total}))
    return FaultOutputs(total=total * params.factor)


def analysis_task(env: Env) -> AnalysisDispatchModel:
    location = env.store.url("data", "asset_a")
    if not env.store.exists(f"{location}/x.bin"):
        env.store.put_bytes(f"{location}/x.bin", b"12345")
    return AnalysisDispatchModel(
        s3_location=[location],
        asset_name=["asset_a"],
        docdb_record_id=["id-asset_a"],
        file_location=[f"{location}/x.bin"],
    )


def run_analysis(env: Env, checkpoint: Callable[[str], None] | None = None) -> JobOutcome:
    definition = REGISTRY.get("fault_count")
    task = analysis_task(env)
    params = {**definition.code_defaults(), "file_location": task.file_location}
    return run_job(
        definition,
        task,
        definition.validate_parameters(params),
        docdb=env.docdb,
        store=env.store,
        results_root=env.store.url("results"),
        results_collection=RESULTS,
        claim_timeout_s=CLAIM_TIMEOUT_S,
        checkpoint=checkpoint,
    )


def check_results(env: Env) -> int:
    """One record per results folder, each folder whole (metadata last), no claim left."""
    records = list(env.docdb.find(RESULTS, {}))
    folders = {
        i.relative_to(env.store.url("results")).split("/", 1)[0]
        for i in env.store.list_objects(env.store.url("results"))
    }
    assert folders == {r["_id"] for r in records}, (folders, [r["_id"] for r in records])
    for r in records:
        url = env.store.url("results", r["_id"])
        names = sorted(i.relative_to(url) for i in env.store.list_objects(url))
        assert names == ["detail.json", METADATA_FILE, "total.txt"], names
        assert r["location"] == url
    assert env.docdb.count(claims_collection(RESULTS)) == 0, "a claim was left behind"
    return len(records)


# -- the HBCD flow: one session de-identified, processed; one release staged ------------------
def serial_store(store: ObjectStoreResource) -> ObjectStoreResource:
    """``store`` writing one object at a time (so "after the n-th file" is exact)."""
    return ObjectStoreResource(
        root=store.root,
        endpoint_url=store.endpoint_url,
        access_key_id=store.access_key_id,
        secret_access_key=store.secret_access_key,
        max_attempts=store.max_attempts,
        max_concurrency=1,
    )


def hbcd_layout(env: Env) -> HbcdLayout:
    return HbcdLayout(env.store.url("pr"), env.store.url("deid"))


def hbcd_setup(env: Env, tmp: Path) -> tuple[IdentityMap, str]:
    """The identified demo tree (one subject, one session) and its map; (map, partition key)."""
    map_path = write_identified_bids(tmp / "source", n_subjects=1, sessions=("V02",))
    layout = hbcd_layout(env)
    env.store.put_tree(tmp / "source" / "assembly_bids", layout.identified_bids)
    env.store.put_file(map_path, join_url(layout.identified_root, MAP))
    idmap = parse_identity_map(map_path.read_text(), "fault map")
    return idmap, session_partition_key(idmap.rows[0].rc_id, "V02")


def change_source(env: Env, idmap: IdentityMap) -> int:
    """A new acquisition note in every JSON sidecar of the session: files to rewrite."""
    prefix = join_url(hbcd_layout(env).identified_bids, f"sub-{idmap.rows[0].dccid}/ses-V02")
    changed = 0
    for info in env.store.list_objects(prefix):
        if info.url.endswith(".json"):
            body = json.loads(env.store.get_bytes(info.url))
            env.store.put_bytes(info.url, json.dumps({**body, "AcquisitionNote": "v2"}).encode())
            changed += 1
    return changed


def run_hbcd(
    env: Env,
    instance: dg.DagsterInstance,
    key: str,
    assets: Sequence[Any],
    checkpoint: Callable[[str], None] | None = None,
) -> dg.ExecuteInProcessResult:
    layout = hbcd_layout(env)
    store = serial_store(env.store)
    hbcd = HbcdResource(
        object_store=store,
        identity_map=IdentityMapResource(
            object_store=store, url=join_url(layout.identified_root, MAP)
        ),
        identified_root=layout.identified_root,
        deidentified_root=layout.deidentified_root,
    )
    instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, [key])
    manager = dg.IOManagerDefinition.hardcoded_io_manager(io_manager(env, checkpoint))
    return dg.materialize(
        list(assets),
        partition_key=key,
        resources={"hbcd": hbcd, "io_manager": manager},
        instance=instance,
        raise_on_error=False,
    )


HBCD_SESSION = [deidentified_session, session_has_no_identifiers]
HBCD_ALL = [*HBCD_SESSION, session_derivatives]


@contextmanager
def on_file(n: int, action: Callable[[], None]) -> Iterator[None]:
    """Call ``action`` once, as the de-identification of a session starts its ``n``-th file
    (with :func:`serial_store`, the files before it are written)."""
    original = deid_files.deidentify_file
    count = itertools.count(1)

    def deidentify(*args: Any, **kwargs: Any) -> Any:
        if next(count) == n:
            action()
        return original(*args, **kwargs)

    deid_files.deidentify_file = deidentify  # type: ignore[assignment]
    try:
        yield
    finally:
        deid_files.deidentify_file = original


def hbcd_outputs(key: str) -> list[str]:
    return [f"hbcd/deidentified_session/{key}", f"hbcd/session_derivatives/{key}"]


def from_current_source(env: Env, idmap: IdentityMap) -> dict[str, bool]:
    """Each de-identified file of the subject: whether it was made from its current source."""
    layout = hbcd_layout(env)
    row = idmap.rows[0]
    etags = {
        deidentify_path(i.relative_to(layout.identified_bids), idmap): i.etag
        for i in env.store.list_objects(join_url(layout.identified_bids, f"sub-{row.dccid}"))
    }
    return {
        rel: object_metadata(env.store, i).get(META_SOURCE_ETAG) == etags.get(rel)
        for i in env.store.list_objects(join_url(layout.deidentified_bids, f"sub-{row.rc_id}"))
        if (rel := i.relative_to(layout.deidentified_bids))
    }


def check_session(env: Env, idmap: IdentityMap, key: str) -> int:
    """The session's de-identified files are exactly those of its current source, each made
    from the current source object; its ledger entry matches; no writing marker; nothing left
    to redo. Returns the number of files."""
    layout = hbcd_layout(env)
    row = idmap.rows[0]
    src_prefix = join_url(layout.identified_bids, f"sub-{row.dccid}")
    sources = {
        deidentify_path(i.relative_to(layout.identified_bids), idmap): i
        for i in env.store.list_objects(src_prefix)
    }
    dst_prefix = join_url(layout.deidentified_bids, f"sub-{row.rc_id}")
    written = {
        i.relative_to(layout.deidentified_bids): i for i in env.store.list_objects(dst_prefix)
    }
    assert set(written) == set(sources), (sorted(written), sorted(sources))
    stale = [rel for rel, current in from_current_source(env, idmap).items() if not current]
    assert not stale, f"not made from the current source: {stale}"
    assert sessions_being_written(env.store, layout.deidentified_root) == set()
    found = discover_sessions(env.store, layout, idmap)
    entry = found.ledger.get(key)
    assert entry is not None and entry.session_digest == found.discovery.sessions[key].digest
    assert not plan_requests(found.discovery, found.ledger, idmap).sessions
    return len(written)


def materializations(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int:
    return len(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=100
        ).records
    )


def release_resources(env: Env, tmp: Path) -> tuple[HbcdReleaseResource, dict[str, Any]]:
    """The release test data (de-identified and processed) on ``env``, and run resources."""
    data = build_release_data(tmp)
    deid = env.store.url("hbcd-deid")
    env.store.put_tree(data.deidentified, deid)
    map_url = env.store.url("hbcd-pr", MAP)
    env.store.put_bytes(map_url, data.map_csv.encode())
    res = HbcdReleaseResource(
        object_store=env.store,
        deidentified_root=deid,
        staging_root=env.store.url("hbcd-staging"),
        specs_root=env.store.url("specs"),
        identity_map=IdentityMapResource(object_store=env.store, url=map_url),
    )
    manager = dg.IOManagerDefinition.hardcoded_io_manager(io_manager(env))
    return res, {"hbcd_release": res, "docdb": env.docdb, "io_manager": manager}


def register(res: HbcdReleaseResource, instance: dg.DagsterInstance) -> str:
    spec = load_release_spec(SPEC_YAML, "fault spec")
    specs.write_spec(res.object_store, res.specs_root, res.staging_root, spec)
    instance.add_dynamic_partitions(RELEASES_NAME, [spec.release])
    return spec.release


def check_release(env: Env, res: HbcdReleaseResource, release: str) -> int:
    """Exactly the planned files under ``<release>/hbcd/``, one processing.json, one
    ``_COMPLETE`` naming them, no temporary folder, the lease free; the number of files."""
    url = res.release_url(release)
    names = sorted(i.relative_to(url) for i in env.store.list_objects(url))
    marker = json.loads(env.store.get_bytes(f"{url}/{MARKER}"))
    planned = sorted(f["path"] for f in marker["files"])
    assert len(planned) == marker["counts"]["files"] > 0
    assert names == sorted([*planned, MARKER, RECORD]), names  # no .staging-*, nothing else
    for f in marker["files"]:
        assert env.store.info(f"{url}/{f['path']}").size == f["size"]
    Processing.model_validate_json(env.store.get_bytes(f"{url}/{RECORD}"))
    assert env.docdb.count("leases", {}) == 0, "the staging lease was left behind"
    return len(planned)
