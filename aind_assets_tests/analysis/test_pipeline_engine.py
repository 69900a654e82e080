"""The pipelines run on demo records in mongoeco's in-process engine (a MongoDB implementation in
Python: no server, no socket). They check what the pipelines *select*, including incremental
paging: paging through DocDB must end in the same dispatch rows as one full query."""

from __future__ import annotations

from collections import Counter

import pytest
from mongoeco import MongoClient

from aind_assets.analysis.files import build_dispatch_models, select_files
from aind_assets.analysis.models import load_dispatch_config
from aind_assets.analysis.paging import (
    decode_cursor,
    encode_cursor,
    next_cursor,
    partition_key_for,
    pipeline_for_changes,
    pipeline_for_page,
)
from aind_assets.analysis.queries import build_pipeline
from aind_assets.demo.records import demo_asset_records, demo_nwb_files
from aind_assets_tests.analysis.test_models import EXAMPLE

BUCKET = "s3://aind-demo-data"
RECORDS = demo_asset_records(24, bucket_url=BUCKET)
BY_NAME = {r["name"]: r for r in RECORDS}


@pytest.fixture
def collection():
    client = MongoClient()
    yield client["metadata_index"]["data_assets"]
    client.close()


def run(collection, pipeline):
    return list(collection.aggregate(pipeline))


def latest_names(records):
    latest = {}
    for r in records:
        key = r["data_description"]["input_data_name"]
        if key not in latest or r["created"] > latest[key]["created"]:
            latest[key] = r
    return {r["name"] for r in latest.values()}


def test_plain_query_returns_one_row_per_record(collection):
    collection.insert_many(RECORDS)
    rows = run(collection, build_pipeline({"data_description.modalities.abbreviation": "ecephys"}))
    ecephys = [r for r in RECORDS if r["name"].startswith("ecephys_")]
    assert sorted(row["asset_name"][0] for row in rows) == sorted(r["name"] for r in ecephys)
    for row in rows:
        record = BY_NAME[row["asset_name"][0]]
        assert row["s3_location"] == [record["location"]]
        assert row["docdb_record_id"] == [record["_id"]]


def test_filter_latest_keeps_the_newest_version(collection):
    collection.insert_many(RECORDS)
    spec = load_dispatch_config(EXAMPLE)["ephys_units"]
    rows = run(collection, spec.pipeline())
    ecephys = [r for r in RECORDS if r["name"].startswith("ecephys_")]
    names = {row["asset_name"][0] for row in rows}
    assert names == latest_names(ecephys)
    assert len(names) < len(ecephys)  # some versions were dropped


def test_group_by_subject_with_latest_versions(collection):
    collection.insert_many(RECORDS)
    spec = load_dispatch_config(EXAMPLE)["foraging_by_subject"]
    rows = run(collection, spec.pipeline())
    behavior = [r for r in RECORDS if r["data_description"]["project_name"] == "Dynamic Foraging"]
    expected = {}
    for name in latest_names(behavior):
        expected.setdefault(BY_NAME[name]["subject"]["subject_id"], set()).add(name)
    got = {row["group_metadata"]["subject__subject_id"]: set(row["asset_name"]) for row in rows}
    assert got == expected
    assert all(row["_id"] == [row["group_metadata"]["subject__subject_id"]] for row in rows)
    assert all("subject__subject_id" not in row for row in rows)


def test_unwind_groups_records_under_each_list_element(collection):
    collection.insert_many(RECORDS)
    rows = run(
        collection,
        build_pipeline(
            {},
            group_by=["data_description.modalities.abbreviation"],
            unwind_list_fields=["data_description.modalities"],
        ),
    )
    groups = {
        row["group_metadata"]["data_description__modalities__abbreviation"]: len(row["asset_name"])
        for row in rows
    }
    n_ecephys = sum(r["name"].startswith("ecephys_") for r in RECORDS)
    assert groups == {"ecephys": n_ecephys, "behavior": len(RECORDS)}


def test_drop_null_groups(collection):
    collection.insert_many(RECORDS)
    orphan = dict(RECORDS[0], _id="orphan", name="orphan", subject={})
    collection.insert_one(orphan)
    kept = run(
        collection, build_pipeline({}, group_by=["subject.subject_id"], drop_null_groups=False)
    )
    dropped = run(collection, build_pipeline({}, group_by=["subject.subject_id"]))  # default
    assert len(kept) == 5 and len(dropped) == 4
    nulls = [r for r in kept if r["group_metadata"] == {"subject__subject_id": None}]
    assert [r["asset_name"] for r in nulls] == [["orphan"]]


@pytest.mark.parametrize("spec_name", ["ephys_units", "foraging_by_subject", "unwound", "plain"])
def test_incremental_paging_matches_a_full_query(collection, spec_name):
    if spec_name in {"ephys_units", "foraging_by_subject"}:
        spec = load_dispatch_config(EXAMPLE)[spec_name]
        query, options = spec.resolved_query(), spec.pipeline_options()
    elif spec_name == "unwound":
        query = {}
        options = {
            "group_by": ["data_description.modalities.abbreviation"],
            "unwind_list_fields": ["data_description.modalities"],
        }
    else:
        query, options = {"subject.subject_id": {"$in": ["741213", "774659"]}}, {}

    def identity(row):
        """What a row stands for: its group, the versioned data (filter_latest) or its asset."""
        if "group_metadata" in row:
            return partition_key_for(row["group_metadata"])
        name = row["asset_name"][0]
        if options.get("filter_latest"):
            return BY_NAME[name]["data_description"]["input_data_name"]
        return name

    def rows_by_identity(rows):
        # Members sorted: $push order is not defined.
        return {
            identity(row): sorted(
                zip(row["s3_location"], row["asset_name"], row["docdb_record_id"], strict=True)
            )
            for row in rows
        }

    state: dict = {}
    probed: list[str] = []

    def discover(cursor_text):
        """One sensor tick: page until nothing is new; returns the new cursor text."""
        cursor = decode_cursor(cursor_text)
        while True:
            page = run(collection, pipeline_for_page(query, cursor, 3, **options))
            if not page:
                return encode_cursor(cursor)
            probed.extend(row["_id"] for row in page)
            state.update(
                rows_by_identity(run(collection, pipeline_for_changes(query, page, **options)))
            )
            cursor = next_cursor(page, cursor)

    # Records arrive in batches (a second version after its first was dispatched, groups growing
    # over ticks); after every tick, the incremental state equals a full query.
    cursor = None
    for batch_start in range(0, len(RECORDS), 5):
        batch = RECORDS[batch_start : batch_start + 5]
        collection.insert_many(batch)
        before = len(probed)
        cursor = discover(cursor)
        assert state == rows_by_identity(run(collection, build_pipeline(query, **options)))
        # Each tick only looked at the new records.
        assert set(probed[before:]) <= {r["_id"] for r in batch}
    assert len(probed) == len(set(probed))
    assert len(state) > 1

    # A modified record (last_modified bumped) is seen again; nothing else is.
    edited = RECORDS[2]
    collection.update_one(
        {"_id": edited["_id"]}, {"$set": {"last_modified": RECORDS[-1]["last_modified"]}}
    )
    before = len(probed)
    discover(cursor)
    assert probed[before:] in ([edited["_id"]], [])  # [] when the spec does not select it
    assert state == rows_by_identity(run(collection, build_pipeline(query, **options)))


def test_rows_to_dispatch_models_with_demo_files(collection):
    collection.insert_many(RECORDS)
    spec = load_dispatch_config(EXAMPLE)["ephys_units"]
    rows = run(collection, spec.pipeline())
    files = demo_nwb_files(RECORDS)
    listing = {r["location"]: [f"{r['location']}/{p}" for p in files[r["name"]]] for r in RECORDS}
    selected = select_files([row["s3_location"][0] for row in rows], ".nwb", listing.__getitem__)
    built = build_dispatch_models(rows, selected, split_files=True, query=spec.resolved_query())
    no_nwb = [n for n in (row["asset_name"][0] for row in rows) if not files[n]]
    assert built.skipped == no_nwb and no_nwb
    assert len(built.models) == sum(len(files[row["asset_name"][0]]) for row in rows)
    assert Counter(len(m.file_location) for m in built.models) == {1: len(built.models)}
    assert all(m.query == spec.query_json() for m in built.models)


def test_changes_never_emit_partial_groups_of_unwound_lists(collection):
    def record(i, tags, day):
        return {
            "_id": f"r{i}",
            "name": f"asset_{i}",
            "location": f"{BUCKET}/asset_{i}",
            "tags": tags,
            "last_modified": RECORDS[day]["last_modified"],
        }

    collection.insert_many([record(1, ["x", "y"], 0), record(3, ["x", "z"], 1)])
    new = record(2, "y", 2)  # a scalar: wrapped into a list before unwinding
    collection.insert_one(new)
    options = {"group_by": ["tags"], "unwind_list_fields": ["tags"]}
    page = run(
        collection, pipeline_for_page({}, (RECORDS[1]["last_modified"], "r3"), 10, **options)
    )
    assert [row["_id"] for row in page] == ["r2"]
    rows = run(collection, pipeline_for_changes({}, page, **options))
    # Only the group the new record is in, complete: r1 shares it; group "x" (r1, r3) is untouched.
    assert [(row["group_metadata"], sorted(row["asset_name"])) for row in rows] == [
        ({"tags": "y"}, ["asset_1", "asset_2"])
    ]
