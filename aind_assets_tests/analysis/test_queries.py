"""Pipelines, query inputs, paging and partition keys of aind_assets.analysis.queries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from aind_assets.analysis.paging import (
    affected_restriction,
    decode_cursor,
    encode_cursor,
    get_path_values,
    group_key,
    incremental_match,
    next_cursor,
    partition_key_for,
    pipeline_for_changes,
    pipeline_for_page,
)
from aind_assets.analysis.queries import QueryError, build_pipeline, parse_query, query_from_csv

PROJECT = {
    "$project": {
        "s3_location": ["$location"],
        "docdb_record_id": ["$_id"],
        "asset_name": ["$name"],
    }
}


# ------------------------------------------------------------------------------------------
# build_pipeline
# ------------------------------------------------------------------------------------------


def test_plain_query_projects_one_element_lists():
    assert build_pipeline({"subject.subject_id": "741213"}) == [
        {"$match": {"subject.subject_id": "741213"}},
        PROJECT,
    ]


def test_build_pipeline_does_not_alias_the_query():
    query = {"a": 1}
    pipeline = build_pipeline(query)
    pipeline[0]["$match"]["b"] = 2
    assert query == {"a": 1}


def test_group_by_dotted_field_is_carried_then_folded_into_group_metadata():
    pipeline = build_pipeline(
        {"data_description.project_name": "Ephys Platform"},
        group_by=["subject.subject_id", "data_description.project_name"],
        drop_null_groups=False,
    )
    assert pipeline == [
        {"$match": {"data_description.project_name": "Ephys Platform"}},
        {
            "$group": {
                "_id": ["$subject.subject_id", "$data_description.project_name"],
                "s3_location": {"$push": "$location"},
                "docdb_record_id": {"$push": "$_id"},
                "asset_name": {"$push": "$name"},
                "subject__subject_id": {"$first": "$subject.subject_id"},
                "data_description__project_name": {"$first": "$data_description.project_name"},
            }
        },
        {
            "$addFields": {
                "group_metadata": {
                    "subject__subject_id": "$subject__subject_id",
                    "data_description__project_name": "$data_description__project_name",
                }
            }
        },
        {"$project": {"subject__subject_id": 0, "data_description__project_name": 0}},
    ]


def test_drop_null_groups_covers_filter_by_and_group_by_fields():
    pipeline = build_pipeline(
        {"q": 1}, group_by=["session"], filter_by=["subject.subject_id"], drop_null_groups=True
    )
    assert pipeline[:2] == [
        {"$match": {"q": 1}},
        {"$match": {"subject.subject_id": {"$ne": None}, "session": {"$ne": None}}},
    ]
    # It is the default (as in analysis-pipeline-utils); turned off, no null-dropping stage.
    assert build_pipeline({"q": 1}, group_by=["session"])[1] == {
        "$match": {"session": {"$ne": None}}
    }
    off = build_pipeline({"q": 1}, group_by=["session"], drop_null_groups=False)
    assert off[1]["$group"]["_id"] == ["$session"]


def test_drop_null_groups_without_group_fields_adds_nothing():
    assert build_pipeline({"q": 1}, drop_null_groups=True) == [{"$match": {"q": 1}}, PROJECT]


def test_filter_latest_true_sorts_on_created_and_keeps_first_per_filter_by():
    assert build_pipeline(
        {"status": "complete"},
        filter_latest=True,
        filter_by=["data_description.input_data_name"],
        drop_null_groups=False,
    ) == [
        {"$match": {"status": "complete"}},
        {"$sort": {"created": -1}},
        {
            "$group": {
                "_id": ["$data_description.input_data_name"],
                "record": {"$first": "$$ROOT"},
            }
        },
        {"$replaceRoot": {"newRoot": "$record"}},
        PROJECT,
    ]


def test_filter_latest_field_name_as_in_analysis_pipeline_utils():
    pipeline = build_pipeline(
        {"status": "complete"},
        filter_latest="created_at",
        filter_by=["session_id"],
        drop_null_groups=True,
    )
    assert pipeline == [
        {"$match": {"status": "complete"}},
        {"$match": {"session_id": {"$ne": None}}},
        {"$sort": {"created_at": -1}},
        {"$group": {"_id": ["$session_id"], "record": {"$first": "$$ROOT"}}},
        {"$replaceRoot": {"newRoot": "$record"}},
        PROJECT,
    ]


@pytest.mark.parametrize("filter_by", [None, []])
def test_filter_latest_without_filter_by_is_a_clear_error(filter_by):
    with pytest.raises(ValueError, match="filter_latest needs filter_by"):
        build_pipeline({}, filter_latest=True, filter_by=filter_by)


def test_filter_by_without_filter_latest_only_feeds_null_dropping():
    assert build_pipeline({}, filter_by=["x"], drop_null_groups=False) == [{"$match": {}}, PROJECT]
    assert build_pipeline({}, filter_by=["x"]) == [
        {"$match": {}},
        {"$match": {"x": {"$ne": None}}},
        PROJECT,
    ]


def test_unwind_wraps_non_arrays_then_unwinds_before_grouping():
    pipeline = build_pipeline(
        {"status": "complete"},
        group_by=["metadata.animal_id"],
        unwind_list_fields=["tags", "data_description.modalities"],
        drop_null_groups=False,
    )
    assert pipeline[:5] == [
        {"$match": {"status": "complete"}},
        {
            "$addFields": {
                "tags": {"$cond": {"if": {"$isArray": "$tags"}, "then": "$tags", "else": ["$tags"]}}
            }
        },
        {"$unwind": "$tags"},
        {
            "$addFields": {
                "data_description.modalities": {
                    "$cond": {
                        "if": {"$isArray": "$data_description.modalities"},
                        "then": "$data_description.modalities",
                        "else": ["$data_description.modalities"],
                    }
                }
            }
        },
        {"$unwind": "$data_description.modalities"},
    ]
    assert pipeline[5]["$group"]["_id"] == ["$metadata.animal_id"]
    assert pipeline[-1] == {"$project": {"metadata__animal_id": 0}}


def test_all_options_in_order():
    pipeline = build_pipeline(
        {"q": 1},
        group_by=["subject.subject_id"],
        filter_latest=True,
        filter_by=["data_description.input_data_name"],
        unwind_list_fields=["tags"],
        drop_null_groups=True,
    )
    assert [next(iter(stage)) for stage in pipeline] == [
        "$match",
        "$match",
        "$sort",
        "$group",
        "$replaceRoot",
        "$addFields",
        "$unwind",
        "$group",
        "$addFields",
        "$project",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_by": "subject.subject_id"}, "group_by must be a list"),
        ({"unwind_list_fields": ["$tags"]}, "unwind_list_fields"),
        ({"filter_latest": "", "filter_by": ["x"]}, "filter_latest must be"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(QueryError, match=message):
        build_pipeline({}, **kwargs)


def test_query_must_be_a_mapping():
    with pytest.raises(QueryError, match="mapping"):
        build_pipeline([{"a": 1}])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# CSV of asset ids, query JSON
# ------------------------------------------------------------------------------------------


def test_csv_file_with_blank_rows_and_spaces(tmp_path):
    path = tmp_path / "assets.csv"
    path.write_text("asset_id,note\n  abc-1 ,x\n,blank\n   ,spaces\nabc-2,y\nabc-1,dup\n\n")
    assert query_from_csv(path) == {"external_links.Code Ocean.0": {"$in": ["abc-1", "abc-2"]}}
    # A str naming a file is read too.
    assert query_from_csv(str(path)) == query_from_csv(path)


def test_csv_text_and_bom():
    assert query_from_csv("\ufeffasset_id\nx1\nx2\n") == {
        "external_links.Code Ocean.0": {"$in": ["x1", "x2"]}
    }


def test_csv_missing_asset_id_column_names_file_and_columns(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(QueryError, match="has no 'asset_id' column") as info:
        query_from_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert "asset_id" in message and "'id', 'name'" in message


def test_csv_with_only_blank_ids_is_an_error(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("asset_id\n \n\n")
    with pytest.raises(QueryError, match="no values"):
        query_from_csv(path)


def test_parse_query_text_file_and_mapping(tmp_path):
    assert parse_query('{"name": {"$regex": "^behavior_741213"}}') == {
        "name": {"$regex": "^behavior_741213"}
    }
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"subject.subject_id": {"$in": ["643634"]}}))
    assert parse_query(path) == {"subject.subject_id": {"$in": ["643634"]}}
    assert parse_query(str(path)) == {"subject.subject_id": {"$in": ["643634"]}}
    assert parse_query({"a": 1}) == {"a": 1}


def test_parse_query_bad_json_names_line_and_column(tmp_path):
    with pytest.raises(QueryError, match=r"query text at line 2 column 8"):
        parse_query('{"a": 1,\n  "b": }')
    path = tmp_path / "q.json"
    path.write_text('{"a": [1, 2}\n')
    with pytest.raises(QueryError, match="invalid JSON in .*q.json") as info:
        parse_query(path)
    assert str(path) in str(info.value) and "line 1 column 12" in str(info.value)


def test_parse_query_must_be_an_object():
    with pytest.raises(QueryError, match="must be a JSON object"):
        parse_query("[1, 2]")


# ------------------------------------------------------------------------------------------
# Incremental paging
# ------------------------------------------------------------------------------------------

LM = datetime(2025, 6, 8, 3, 49, 49, tzinfo=UTC)


def test_incremental_match():
    assert incremental_match(None) is None
    assert incremental_match((LM, "id-9")) == {
        "$match": {
            "$or": [
                {"last_modified": {"$gt": LM}},
                {"last_modified": LM, "_id": {"$gt": "id-9"}},
            ]
        }
    }


def test_pipeline_for_page_first_page_and_with_cursor():
    query = {"data_description.modalities.abbreviation": "ecephys"}
    assert pipeline_for_page(query, None, 100) == [
        {"$match": query},
        {"$sort": {"last_modified": 1, "_id": 1}},
        {"$limit": 100},
        {"$project": {"_id": 1, "last_modified": 1, "name": 1}},
    ]
    page = pipeline_for_page(
        query, (LM, "id-9"), 50, group_by=["subject.subject_id"], unwind_list_fields=["x"]
    )
    assert page == [
        {"$match": {"$and": [query, incremental_match((LM, "id-9"))["$match"]]}},
        {"$sort": {"last_modified": 1, "_id": 1}},
        {"$limit": 50},
        {"$project": {"_id": 1, "last_modified": 1, "name": 1, "subject.subject_id": 1}},
    ]
    # An empty user query is just the cursor.
    assert pipeline_for_page({}, (LM, "a"), 5)[0] == incremental_match((LM, "a"))


def test_pipeline_for_page_projects_filter_by_and_avoids_path_collisions():
    page = pipeline_for_page(
        {}, None, 10, filter_latest=True, filter_by=["subject", "subject.subject_id"]
    )
    assert page[-1] == {"$project": {"_id": 1, "last_modified": 1, "name": 1, "subject": 1}}
    with pytest.raises(QueryError, match="filter_by"):
        pipeline_for_page({}, None, 10, filter_latest=True)
    with pytest.raises(QueryError, match="page_size"):
        pipeline_for_page({}, None, 0)
    with pytest.raises(TypeError, match="unknown pipeline option"):
        pipeline_for_page({}, None, 10, groupby=["x"])
    with pytest.raises(TypeError, match="unknown pipeline option"):
        pipeline_for_changes({}, [{"_id": "a"}], split_files=True)


def test_next_cursor():
    rows = [{"_id": "a", "last_modified": LM}, {"_id": "b", "last_modified": LM}]
    assert next_cursor(rows) == (LM, "b")
    assert next_cursor([], previous=(LM, "a")) == (LM, "a")
    with pytest.raises(QueryError, match="no last_modified"):
        next_cursor([{"_id": "c"}])


def test_cursor_round_trip():
    naive = datetime(2025, 6, 8, 3, 49, 49, 123000)
    text = encode_cursor((naive, "id-1"))
    assert isinstance(text, str)
    assert decode_cursor(text) == (naive.replace(tzinfo=UTC), "id-1")
    assert decode_cursor(encode_cursor((LM, "z"))) == (LM, "z")
    assert decode_cursor(encode_cursor(("2025-06-08T03:49:49Z", "z"))) == (
        "2025-06-08T03:49:49Z",
        "z",
    )
    assert encode_cursor(None) is None and decode_cursor(None) is None and decode_cursor("") is None
    with pytest.raises(QueryError, match="not a discovery cursor: '{not json'"):
        decode_cursor("{not json")


def test_affected_restriction_per_record_and_per_group():
    rows = [
        {"_id": "a", "subject": {"subject_id": "1"}, "mods": [{"ab": "e"}, {"ab": "b"}]},
        {"_id": "b", "subject": {"subject_id": "2"}, "mods": [{"ab": "e"}]},
        {"_id": "a", "subject": {}, "mods": []},
    ]
    assert affected_restriction(rows) == {"_id": {"$in": ["a", "b"]}}
    assert affected_restriction([]) is None
    assert affected_restriction(rows, group_by=["subject.subject_id", "mods.ab"]) == {
        "subject.subject_id": {"$in": ["1", "2", None]},
        "mods.ab": {"$in": ["b", "e", None]},
    }
    assert affected_restriction(rows, filter_latest=True, filter_by=["subject.subject_id"]) == {
        "subject.subject_id": {"$in": ["1", "2", None]}
    }


def test_pipeline_for_changes_restricts_to_the_page():
    rows = [{"_id": "a", "last_modified": LM}, {"_id": "b", "last_modified": LM}]
    assert pipeline_for_changes({"q": 1}, rows) == [
        {"$match": {"$and": [{"q": 1}, {"_id": {"$in": ["a", "b"]}}]}},
        PROJECT,
    ]
    assert pipeline_for_changes({"q": 1}, []) is None


def test_pipeline_for_changes_grouped_with_unwind_restricts_again_after_unwind():
    rows = [{"_id": "a", "last_modified": LM, "mods": [{"ab": "e"}]}]
    pipeline = pipeline_for_changes(
        {"q": 1}, rows, group_by=["mods.ab"], unwind_list_fields=["mods"], drop_null_groups=False
    )
    restriction = {"mods.ab": {"$in": ["e"]}}
    assert pipeline[0] == {"$match": {"$and": [{"q": 1}, restriction]}}
    assert pipeline[1:3] == build_pipeline({}, unwind_list_fields=["mods"])[1:3]
    assert pipeline[3] == {"$match": restriction}
    assert pipeline[4]["$group"]["_id"] == ["$mods.ab"]


def test_get_path_values_follows_arrays_like_mongodb():
    doc = {
        "a": {"b": [{"c": 1}, {"c": [2, 3]}, {"d": 4}]},
        "links": {"Code Ocean": ["x", "y"]},
    }
    assert get_path_values(doc, "a.b.c") == [1, 2, 3]
    assert get_path_values(doc, "links.Code Ocean.0") == ["x"]
    assert get_path_values(doc, "links.Code Ocean") == ["x", "y"]
    assert get_path_values(doc, "a.missing") == []


# ------------------------------------------------------------------------------------------
# Group identity and partition keys
# ------------------------------------------------------------------------------------------


def test_group_key_is_canonical():
    assert group_key({"b": 1, "a": "x"}) == group_key({"a": "x", "b": 1}) == '{"a":"x","b":1}'
    assert group_key(["741213", None]) == '["741213",null]'
    with pytest.raises(QueryError, match="group values must be a mapping or a list, not a string"):
        group_key("741213")


DAGSTER_FORBIDDEN = ["...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0"]


def _dagster_safe(key: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*", key))
        and not any(s in key for s in DAGSTER_FORBIDDEN)
        and len(key) <= 200
    )


def test_partition_key_keeps_aind_asset_names():
    name = "ecephys_741213_2025-06-07_14-31-15_sorted_2025-06-08_03-49-49"
    assert partition_key_for(name) == name


def test_partition_key_for_group_values():
    assert partition_key_for({"subject__subject_id": "741213"}) == "741213"
    assert partition_key_for(["741213", 3]) == "741213+3"
    key = partition_key_for({"p": "Ephys Platform", "s": "741213"})
    assert (
        key.startswith("Ephys_Platform+741213__") and len(key) == len("Ephys_Platform+741213") + 10
    )
    assert partition_key_for({"p": "Ephys Platform"}) == partition_key_for({"p": "Ephys Platform"})
    assert partition_key_for(["x"], prefix="ephys_units") == "ephys_units+x"


@pytest.mark.parametrize(
    "item",
    [
        "a,b[c]{d}*e",
        "weird...name\nwith\ttabs",
        "s3://bucket/path/x.nwb",
        "-leading",
        ".hidden",
        "",
        "x" * 500,
        ["a+b", "c"],
        [None],
        ["null"],
        [True, 1.5, {"k": [1, 2]}],
        [datetime(2025, 6, 7, 14, 31, 15, tzinfo=UTC)],
        {},
    ],
)
def test_partition_keys_are_dagster_safe_and_deterministic(item):
    key = partition_key_for(item)
    assert _dagster_safe(key), key
    assert partition_key_for(item) == key


def test_partition_keys_stay_distinct_when_sanitised():
    items = [
        "a b",
        "a_b",
        "a/b",
        ["a+b", "c"],
        ["a", "b+c"],
        ["a", "b", "c"],
        [None],
        ["null"],
        "x" * 300,
        "x" * 301,
    ]
    keys = [partition_key_for(i) for i in items]
    assert len(set(keys)) == len(keys), keys


def test_partition_keys_pass_dagsters_own_check():
    import dagster as dg  # here only: the module under test must not need Dagster

    raw = ["a...b", "x\ny", "t\tab"]
    keys = [partition_key_for(i) for i in [*raw, ["p", "q"]]]
    # a partitions definition checks its keys with Dagster's own rule: these pass it
    assert dg.StaticPartitionsDefinition(keys).get_partition_keys() == keys
    # ...which the raw values do not
    for value in raw:
        with pytest.raises(
            dg.DagsterInvalidDefinitionError, match="are invalid substrings in a partition key"
        ):
            dg.StaticPartitionsDefinition([value])


def test_pure_modules_do_not_import_dagster():
    code = (
        "import sys; import aind_assets.analysis.models, aind_assets.analysis.queries, "
        "aind_assets.analysis.files, aind_assets.demo.records, aind_assets.analysis.config, "
        "aind_assets.analysis.registry, aind_assets.analysis.wrapper, "
        "aind_assets.analysis.discovery, aind_assets.analysis.dispatch, "
        "aind_assets.analysis.results, aind_assets.analysis.examples; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
