"""What the fault tests run and count: a two-asset IO-manager flow, one analysis job, and the
checks that after a re-run no output, ``processing.json`` or DocDB record is missing, orphaned
or duplicated. Imported by the tests and by ``run_flow`` (the run process that gets killed)."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
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
from aind_assets.io_managers.commit import POINTER, VERSIONS, list_versions, read_pointer
from aind_assets.io_managers.store_io_manager import StoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource

RECORDS = "processing_records"
RESULTS = "analysis_results"
COMMIT_LEASE_TTL_S = 2.0
CLAIM_TIMEOUT_S = 2.0
PARTITION = "p1"
LEASE = "hbcd/release_staging/r1"
LEASE_TTL_S = 2.0
OUTPUTS = [f"source_value/{PARTITION}", f"derived/{PARTITION}"]

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
