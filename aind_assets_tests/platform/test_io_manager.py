"""The IO manager on the real S3 server and on a local directory: output first, record last."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from aind_data_schema.core.processing import Processing
from pydantic import BaseModel

from aind_assets import lineage
from aind_assets.io_managers import commit
from aind_assets.io_managers.commit import committed_folder, url_of
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource

RECORDS = "processing_records"


class Summary(BaseModel):
    subject: str
    units: int


keys = dg.StaticPartitionsDefinition(["s1", "s2"])


@dg.asset(partitions_def=keys, code_version="3")
def summary(context: dg.AssetExecutionContext) -> Summary:
    return Summary(subject=context.partition_key, units=len(context.partition_key) * 7)


@dg.asset(partitions_def=keys)
def summary_table(context: dg.AssetExecutionContext, summary: Summary) -> pd.DataFrame:
    return pd.DataFrame({"subject": [summary.subject], "units": [summary.units]})


@dg.asset(ins={"summary": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
def all_subjects(summary: dict[str, Summary]) -> dict:
    return {"total_units": sum(s.units for s in summary.values()), "subjects": sorted(summary)}


@dg.asset
def plain_config(context: dg.AssetExecutionContext) -> dict:
    context.add_output_metadata({lineage.META_PARAMETERS: {"threshold": 0.5}})
    return {"a": 1}


def _io(store: ObjectStoreResource, docdb: DocDBResource, root: str) -> ObjectStoreIOManager:
    return ObjectStoreIOManager(
        object_store=store, docdb=docdb, root=root, records_collection=RECORDS
    )


def current(store: ObjectStoreResource, url: str) -> str:
    """The committed version folder of the output at ``url`` (what its CURRENT.json names)."""
    return url_of(committed_folder(store.upath(url)))


def test_round_trip_partitioned_and_not(store: ObjectStoreResource, docdb: DocDBResource) -> None:
    root = store.url("io")
    resources = {"io_manager": _io(store, docdb, root)}
    for key in ("s1", "s2"):
        result = dg.materialize([summary, summary_table], partition_key=key, resources=resources)
        assert result.success
    result = dg.materialize(
        [summary.to_source_asset(), all_subjects, plain_config], resources=resources
    )
    assert result.success
    assert result.output_for_node("all_subjects") == {"total_units": 28, "subjects": ["s1", "s2"]}

    # layout: <root>/<asset key>/<partition key>/versions/<id>/ with processing.json beside the
    # value, and CURRENT.json naming that version
    value = json.loads(store.get_bytes(f"{current(store, f'{root}/summary/s1')}/value.json"))
    assert value == {"subject": "s1", "units": 14}
    table = current(store, f"{root}/summary_table/s2")
    assert [
        i.relative_to(f"{root}/summary_table/s2")
        for i in store.list_objects(f"{root}/summary_table/s2")
    ] == [
        "CURRENT.json",
        f"versions/{table.rsplit('/', 1)[1]}/processing.json",
        f"versions/{table.rsplit('/', 1)[1]}/value.parquet",
    ]
    total = json.loads(store.get_bytes(f"{current(store, f'{root}/all_subjects')}/value.json"))
    assert total["total_units"] == 28

    # the record beside the output and the one in DocDB are the same valid Processing
    for path in ("summary/s1", "summary_table/s2", "all_subjects", "plain_config"):
        version = current(store, f"{root}/{path}")
        on_disk = Processing.model_validate_json(store.get_bytes(f"{version}/processing.json"))
        process = on_disk.data_processes[0]
        assert process.output_parameters.model_dump()["output_location"] == version
        assert str(process.output_path) == version.removeprefix(f"{root}/")
        assert process.start_date_time <= process.end_date_time
        assert process.resources.ram > 0
        doc = docdb.find_one(RECORDS, {"location": f"{root}/{path}"})
        assert doc is not None
        assert (doc["status"], doc["version_location"]) == ("current", version)
        assert Processing.model_validate(doc["processing"]) == on_disk
        assert doc["_id"] == lineage.record_name(process.code)

    def record(path: str) -> Processing:
        version = current(store, f"{root}/{path}")
        return Processing.model_validate_json(store.get_bytes(f"{version}/processing.json"))

    s1 = record("summary/s1")
    assert s1.data_processes[0].code.version == "3"
    assert s1.data_processes[0].code.parameters.model_dump()["partition_key"] == "s1"
    # the downstream record names the upstream version it read
    inputs = record("summary_table/s2").data_processes[0].code.input_data
    assert [d.url for d in inputs] == [current(store, f"{root}/summary/s2")]
    agg = record("all_subjects")
    assert [d.url for d in agg.data_processes[0].code.input_data] == [
        current(store, f"{root}/summary/s1"),
        current(store, f"{root}/summary/s2"),
    ]
    plain = record("plain_config")
    assert plain.data_processes[0].code.parameters.model_dump() == {"threshold": 0.5}


def test_failed_write_leaves_no_record(s3_store: ObjectStoreResource, docdb: DocDBResource) -> None:
    """The store refuses the write (wrong secret): the run fails and no record exists."""
    root = s3_store.url("io")
    refusing = ObjectStoreResource(
        root=s3_store.root,
        endpoint_url=s3_store.endpoint_url,
        access_key_id="aind-test-key",
        secret_access_key="not-the-secret",
    )
    result = dg.materialize(
        [plain_config], resources={"io_manager": _io(refusing, docdb, root)}, raise_on_error=False
    )
    assert not result.success
    assert docdb.count(RECORDS) == 0
    assert not s3_store.exists(f"{root}/plain_config/CURRENT.json")


def test_incomplete_output_is_not_loaded(
    local_store: ObjectStoreResource, docdb: DocDBResource
) -> None:
    root = local_store.url("io")
    resources = {"io_manager": _io(local_store, docdb, root)}
    assert dg.materialize([summary], partition_key="s1", resources=resources).success
    # as if every commit of it had crashed before its pointer: versions, but no CURRENT.json
    local_store.delete(f"{root}/summary/s1/CURRENT.json")
    result = dg.materialize(
        [summary.to_source_asset(), summary_table],
        partition_key="s1",
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "not completely written" in failure.event_specific_data.error.to_string()


def test_record_names_are_stable_and_parameter_sensitive() -> None:
    a = lineage.build_code(name="x", version="1", parameters={"t": 1}, input_data=["s3://b/a"])
    b = lineage.build_code(name="x", version="1", parameters={"t": 1}, input_data=["s3://b/a"])
    c = lineage.build_code(name="x", version="1", parameters={"t": 2}, input_data=["s3://b/a"])
    assert lineage.record_name(a) == lineage.record_name(b)
    assert lineage.record_name(a) != lineage.record_name(c)
    assert len(lineage.record_name(a)) == 64


@pytest.mark.parametrize("bad", [None])
def test_naive_start_is_rejected(bad: None) -> None:
    from datetime import datetime

    code = lineage.build_code(name="x")
    with pytest.raises(ValueError, match="timezone-aware"):
        lineage.build_processing(code=code, start=datetime(2025, 1, 1))


@dg.asset
def report_folder(context: dg.AssetExecutionContext) -> Path:
    out = Path(tempfile.mkdtemp()) / "report"
    (out / "plots").mkdir(parents=True)
    (out / "summary.txt").write_text("3 units\n")
    (out / "plots" / "rates.png").write_bytes(b"\x89PNG fake-bytes-for-layout")
    return out


@dg.asset
def report_size(report_folder) -> int:
    """Loads the stored folder back (a UPath on either backend) and reads it."""
    return sum(p.stat().st_size for p in report_folder.rglob("*") if p.is_file())


def test_files_and_folders_are_stored_as_themselves(
    store: ObjectStoreResource, docdb: DocDBResource
) -> None:
    root = store.url("io")
    result = dg.materialize(
        [report_folder, report_size], resources={"io_manager": _io(store, docdb, root)}
    )
    assert result.success
    version = current(store, f"{root}/report_folder")
    names = sorted(i.relative_to(version) for i in store.list_objects(version))
    assert names == ["data/report/plots/rates.png", "data/report/summary.txt", "processing.json"]
    assert store.get_bytes(f"{version}/data/report/summary.txt") == b"3 units\n"
    assert result.output_for_node("report_size") == len(b"3 units\n") + len(
        b"\x89PNG fake-bytes-for-layout"
    )


three = dg.StaticPartitionsDefinition(["s1", "s2", "s3"])


@dg.asset(partitions_def=three, backfill_policy=dg.BackfillPolicy.single_run())
def per_subject(context: dg.AssetExecutionContext) -> dict[str, dict]:
    for key in context.partition_keys:
        context.add_asset_metadata(
            {lineage.META_PARAMETERS: {"subject": key}, "own": key}, partition_key=key
        )
    return {key: {"subject": key} for key in context.partition_keys}


@dg.asset(partitions_def=three, backfill_policy=dg.BackfillPolicy.single_run())
def per_subject_units(
    context: dg.AssetExecutionContext, per_subject: dict[str, dict]
) -> dict[str, int]:
    return {key: len(per_subject[key]["subject"]) for key in context.partition_keys}


def _processing(store: ObjectStoreResource, url: str) -> Processing:
    return Processing.model_validate_json(store.get_bytes(f"{current(store, url)}/processing.json"))


def test_one_run_over_several_partitions_writes_each_with_its_own_lineage(
    local_store: ObjectStoreResource, docdb: DocDBResource
) -> None:
    root = local_store.url("io")
    result = dg.materialize(
        [per_subject, per_subject_units],
        resources={"io_manager": _io(local_store, docdb, root)},
        tags={
            "dagster/asset_partition_range_start": "s1",
            "dagster/asset_partition_range_end": "s3",
        },
    )
    assert result.success
    events = [e.materialization for e in result.get_asset_materialization_events()]
    mats = {(m.asset_key.path[-1], m.partition): m.metadata for m in events}
    for key in ("s1", "s2", "s3"):
        version = current(local_store, f"{root}/per_subject/{key}")
        assert json.loads(local_store.get_bytes(f"{version}/value.json")) == {"subject": key}
        # each partition's event and record describe that partition only
        meta = mats[("per_subject", key)]
        assert meta["own"].value == key
        assert meta["path"].value == version
        code = _processing(local_store, f"{root}/per_subject/{key}").data_processes[0].code
        assert code.parameters.model_dump() == {"subject": key, "partition_key": key}
        units = _processing(local_store, f"{root}/per_subject_units/{key}").data_processes[0]
        assert [d.url for d in units.code.input_data or []] == [version]
        assert mats[("per_subject_units", key)]["path"].value == current(
            local_store, f"{root}/per_subject_units/{key}"
        )
    assert docdb.count(RECORDS) == 6


def test_outputs_and_records_are_links_and_a_table(
    store: ObjectStoreResource, docdb: DocDBResource
) -> None:
    """On an S3 server the output and its processing.json are links on that endpoint; the
    DocDB record is a table of its key fields, named by its collection and _id. On a local
    store they are file:// links."""
    root = store.url("io-links")
    result = dg.materialize(
        [summary], partition_key="s1", resources={"io_manager": _io(store, docdb, root)}
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    version = current(store, f"{root}/summary/s1")
    if store.endpoint_url:  # the S3 server: the object's URL on that endpoint
        base = f"{store.endpoint_url}/{version.removeprefix('s3://')}"
    else:  # a local store: file:// URLs of files that exist
        base = Path(version).as_uri()
        assert Path(version, "processing.json").is_file()
    assert isinstance(meta["output"], dg.UrlMetadataValue)
    assert meta["output"].value == f"{base}/"
    assert meta["processing_record"].value == f"{base}/processing.json"
    rows = {r.data["field"]: r.data["value"] for r in meta["record"].value.records}
    doc = docdb.find_one(RECORDS, {"location": f"{root}/summary/s1", "status": "current"})
    assert rows["DocDB record"] == f"{RECORDS} / {doc['name']}"
    assert rows["partition"] == "s1" and rows["code"] == "summary 3"


def test_browse_urls_for_aws_another_endpoint_and_a_local_path() -> None:
    from aind_assets.resources.urls import browse_url

    assert browse_url("s3://aind-open-data/ecephys_1/results/plot 1.png") == (
        "https://s3.console.aws.amazon.com/s3/object/aind-open-data"
        "?prefix=ecephys_1/results/plot%201.png"
    )
    assert browse_url("s3://aind-open-data/ecephys_1/results", folder=True) == (
        "https://s3.console.aws.amazon.com/s3/buckets/aind-open-data?prefix=ecephys_1/results/"
    )
    assert (
        browse_url("s3://b/k/x.json", "http://127.0.0.1:8333/")
        == "http://127.0.0.1:8333/b/k/x.json"
    )
    assert browse_url("/data/store/x y.json") == "file:///data/store/x%20y.json"


@pytest.mark.parametrize("chunk", [200, 2], ids=["one-batch", "chunks-of-2"])
def test_a_ranged_commit_supersedes_and_cleans_each_output_on_its_own(
    local_store: ObjectStoreResource,
    docdb: DocDBResource,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partitions of a ranged run are committed together (one DocDB request per protocol
    step, at most ``COMMIT_CHUNK`` outputs at a time), yet each output's records are settled as
    its own commit would: s1's earlier current record is superseded, s2's record left pending by
    a crashed write is removed, s3 is new."""
    monkeypatch.setattr(commit, "COMMIT_CHUNK", chunk)
    root = local_store.url("io")
    loc = {k: f"{root}/per_subject/{k}" for k in ("s1", "s2", "s3")}
    docdb.upsert(RECORDS, {"_id": "old-s1"}, {"location": loc["s1"], "status": "current"})
    docdb.upsert(RECORDS, {"_id": "crashed-s2"}, {"location": loc["s2"], "status": "pending"})
    result = dg.materialize(
        [per_subject],
        resources={"io_manager": _io(local_store, docdb, root)},
        tags={
            "dagster/asset_partition_range_start": "s1",
            "dagster/asset_partition_range_end": "s3",
        },
    )
    assert result.success
    meta = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta["s1"]["replaced"].value.startswith("1 record(s) superseded, 0 left by crashed")
    assert meta["s2"]["replaced"].value.startswith("0 record(s) superseded, 1 left by crashed")
    assert "replaced" not in meta["s3"]
    for key in ("s1", "s2", "s3"):
        current = list(docdb.find(RECORDS, {"location": loc[key], "status": "current"}))
        assert [d["_id"] for d in current] == [meta[key]["record_name"].value]
        assert current[0]["version"] == meta[key]["version"].value
        written = Path(current[0]["version_location"])
        assert meta[key]["bytes written"].value == sum(
            f.stat().st_size for f in written.rglob("*") if f.is_file()
        )
    old = docdb.find_one(RECORDS, {"_id": "old-s1"})
    assert old is not None and old["status"] == "superseded"
    assert old["superseded_by"] == meta["s1"]["record_name"].value
    assert docdb.find_one(RECORDS, {"_id": "crashed-s2"}) is None
    assert docdb.count(f"{RECORDS}_commits") == 0  # every commit lease released
