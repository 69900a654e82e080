"""One job at a time (wrapper.py) on the real servers: de-duplication, races, redoing results
left without a record, dry runs, stale claims, and bad outputs."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import Field

from aind_assets import lineage
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.analysis.registry import AnalysisRegistry
from aind_assets.analysis.wrapper import (
    METADATA_FILE,
    AnalysisOutputError,
    claims_collection,
    run_job,
)

RESULTS = "analysis_results"


class CountSpec(AnalysisSpecification):
    factor: int = Field(2, ge=1)


class CountOutputs(AnalysisOutputs):
    total: int


REGISTRY = AnalysisRegistry()
GATES: dict[str, threading.Event] = {}
CALLS: list[str] = []


@REGISTRY.register(name="count_bytes", version="1.0", spec=CountSpec, outputs=CountOutputs)
def count_bytes(task, params, ctx):
    """Counts the bytes of the task's files, times ``factor``."""
    CALLS.append(task.asset_name[0])
    if gate := GATES.get("started"):
        gate.set()
        assert GATES["release"].wait(20)
    total = sum(len(ctx.open(u).read()) for u in task.file_location or [])
    (ctx.results_dir / "total.txt").write_text(str(total * params.factor))
    return CountOutputs(total=total * params.factor)


@REGISTRY.register(name="bad_outputs", version="1.0", spec=CountSpec, outputs=CountOutputs)
def bad_outputs(task, params, ctx):
    return {"total": "lots"}


def make_task(store, name: str = "asset_a", data: bytes = b"12345") -> AnalysisDispatchModel:
    location = store.url("data", name)
    store.put_bytes(f"{location}/x.bin", data)
    return AnalysisDispatchModel(
        s3_location=[location],
        asset_name=[name],
        docdb_record_id=[f"id-{name}"],
        file_location=[f"{location}/x.bin"],
    )


def job(store, docdb, task, analysis="count_bytes", **params):
    definition = REGISTRY.get(analysis)
    code = definition.job_code(task, params)  # params: the run-config layer
    merged = code.parameters.model_dump()
    kwargs = {
        "docdb": docdb,
        "store": store,
        "results_root": store.url("results"),
        "results_collection": RESULTS,
    }
    return lambda **kw: run_job(
        definition, task, definition.validate_parameters(merged), code=code, **{**kwargs, **kw}
    )


@pytest.fixture(autouse=True)
def _reset():
    GATES.clear()
    CALLS.clear()


def test_completed_then_skipped_and_a_parameter_change_is_new(store, docdb):
    task = make_task(store)
    first = job(store, docdb, task)()
    assert first.result.status == "completed"
    name = first.result.record_name
    assert first.result.results_location == store.url("results", name)
    listed = sorted(
        i.url.rsplit("/", 1)[-1] for i in store.list_objects(first.result.results_location)
    )
    assert listed == [METADATA_FILE, "total.txt"]
    doc = docdb.find_one(RESULTS, {"_id": name})
    code = doc["processing"]["data_processes"][0]["code"]
    # as merged (analysis code < run config + file_location), not default-filled: the package's
    assert code["parameters"] == {
        "analysis_name": "count_bytes",
        "file_location": task.file_location,
    }
    assert [d["url"] for d in code["input_data"]] == task.s3_location
    assert code["run_script"].endswith("test_wrapper.py")
    from aind_data_schema.components.identifiers import Code

    assert lineage.record_name(Code.model_validate(code)) == name

    second = job(store, docdb, task)()
    assert second.result.status == "skipped"
    assert second.result.record_name == name and name in second.result.note
    assert CALLS == ["asset_a"]  # the skipped job did not run the analysis
    assert docdb.count(RESULTS) == 1

    third = job(store, docdb, task, factor=3)()
    assert third.result.status == "completed" and third.result.record_name != name
    assert third.result.outputs == {"total": 15}
    assert docdb.count(RESULTS) == 2
    assert docdb.count(claims_collection(RESULTS)) == 0  # claims are released


def test_two_concurrent_runs_of_one_job_write_one_record(s3_store, docdb):
    task = make_task(s3_store)
    run = job(s3_store, docdb, task)
    barrier = threading.Barrier(2)
    outcomes = []

    def worker():
        barrier.wait()
        outcomes.append(run(run_id=threading.current_thread().name))

    threads = [threading.Thread(target=worker, name=f"run-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.result.status for o in outcomes) == ["completed", "skipped"]
    assert docdb.count(RESULTS) == 1
    assert len(CALLS) == 1


def test_a_run_finding_the_job_in_progress_skips_it(local_store, docdb):
    task = make_task(local_store)
    run = job(local_store, docdb, task)
    GATES["started"], GATES["release"] = threading.Event(), threading.Event()
    holder: list = []
    worker = threading.Thread(target=lambda: holder.append(run(run_id="first-run")))
    worker.start()
    assert GATES["started"].wait(20)
    GATES.pop("started")  # the second run must not wait
    second = run(run_id="second-run")
    assert second.result.status == "skipped"
    assert "in progress in run first-run" in second.result.note
    GATES["release"].set()
    worker.join(20)
    assert holder[0].result.status == "completed"
    assert docdb.count(RESULTS) == 1


def test_a_stale_claim_is_taken_over(local_store, docdb):
    task = make_task(local_store)
    run = job(local_store, docdb, task)
    name = run(dry_run=True).result.record_name
    docdb.insert_unique(
        claims_collection(RESULTS),
        {
            "_id": name,
            "name": name,
            "token": "dead",
            "run_id": "died",
            "claimed_at": time.time() - 99,
        },
    )
    assert run(claim_timeout_s=3600).result.status == "skipped"  # fresh enough: in progress
    assert run(claim_timeout_s=10).result.status == "completed"  # stale: taken over
    assert docdb.count(RESULTS) == 1


def test_results_left_without_a_record_are_redone(store, docdb):
    """A run that died after uploading (no record) does not block the job: it is redone."""
    task = make_task(store)
    run = job(store, docdb, task)
    name = run(dry_run=True).result.record_name
    store.put_bytes(store.url("results", name, "left-over.txt"), b"from a run that died")
    assert run().result.status == "completed"
    assert docdb.count(RESULTS) == 1
    listed = [
        i.relative_to(store.url("results", name))
        for i in store.list_objects(store.url("results", name))
    ]
    assert listed == [METADATA_FILE, "total.txt"]
    assert docdb.count(claims_collection(RESULTS)) == 0
    # results with their record are never overwritten: the job is skipped
    assert run().result.status == "skipped"


def test_dry_run_writes_nothing(local_store, docdb):
    task = make_task(local_store)
    outcome = job(local_store, docdb, task)(dry_run=True)
    assert outcome.result.status == "dry_run"
    assert outcome.result.outputs == {"total": 10}
    assert docdb.count(RESULTS) == 0 and docdb.count(claims_collection(RESULTS)) == 0
    assert local_store.list_objects(local_store.url("results")) == []


def test_outputs_that_do_not_validate_fail_without_a_record(local_store, docdb):
    task = make_task(local_store)
    with pytest.raises(AnalysisOutputError, match="CountOutputs"):
        job(local_store, docdb, task, analysis="bad_outputs")()
    assert docdb.count(RESULTS) == 0
    assert local_store.list_objects(local_store.url("results")) == []


def test_a_missing_input_file_is_named(local_store, docdb):
    task = make_task(local_store)
    local_store.delete(task.file_location)
    with pytest.raises(Exception, match=f"{task.file_location[0]}"):
        job(local_store, docdb, task)()
    assert docdb.count(RESULTS) == 0
