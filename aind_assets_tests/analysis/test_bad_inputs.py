"""Bad analysis-flow inputs: each fails (or, for blank/repeated ids, warns) with a message naming
the input (file, spec, record or partition) and what is wrong; a broken config fails when the
code location loads; other partitions are unaffected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.config_checks import validate_dispatch_config
from aind_assets.analysis.defs import build_analysis_definitions
from aind_assets.analysis.discovery import discover_page
from aind_assets.analysis.dispatch import dispatch_partition
from aind_assets.analysis.inputs import AssetIdsWarning, row_problems
from aind_assets.analysis.models import DispatchConfigError, load_dispatch_config
from aind_assets.analysis.queries import QueryError, read_asset_ids_csv
from aind_assets.analysis.registry import load_analyses
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import Settings

ID1, ID2 = "0b9e6c5a-1111-4c3e-9a0e-000000000001", "0b9e6c5a-2222-4c3e-9a0e-000000000002"
REGISTRY = load_analyses()


# --- CSV of asset ids -----------------------------------------------------------------------------


def _csv(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "ids.csv"
    path.write_bytes(data)
    return path


def test_csv_in_utf16_with_bom_is_read(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"asset_id\n{ID1}\n".encode("utf-16"))
    assert read_asset_ids_csv(path) == [ID1]


def test_csv_in_utf16_without_bom_names_the_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"asset_id\n{ID1}\n".encode("utf-16-le"))
    with pytest.raises(QueryError, match=r"^asset id CSV .*ids\.csv: NUL character .*UTF-16"):
        read_asset_ids_csv(path)


def test_csv_not_utf8_names_file_and_offset(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"asset_id,note\n{ID1},caf\xe9\n".encode("latin-1"))
    with pytest.raises(QueryError, match=r"ids\.csv: not UTF-8 text: undecodable byte 0xe9 at"):
        read_asset_ids_csv(path)


def test_csv_with_an_unterminated_quote_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, f'asset_id,note\n{ID1},ok\n{ID2},"unterminated\n'.encode())
    with pytest.raises(QueryError, match=r"ids\.csv: line 3: malformed CSV .*unterminated quote"):
        read_asset_ids_csv(path)


def test_csv_quote_swallowing_a_line_break_is_not_an_id(tmp_path: Path) -> None:
    path = _csv(tmp_path, f'asset_id\n"{ID1}\n{ID2}"\n'.encode())
    with pytest.raises(QueryError, match=r"ids\.csv: line 2: .* is not an asset id"):
        read_asset_ids_csv(path)


def test_csv_id_with_spaces_inside_is_not_an_id() -> None:
    with pytest.raises(QueryError, match=r"CSV text: line 2: 'abc def' is not an asset id"):
        read_asset_ids_csv("asset_id\nabc def\n")


def test_csv_blank_ids_are_skipped_with_a_warning_naming_the_lines() -> None:
    with pytest.warns(AssetIdsWarning, match=r"CSV text: 2 row\(s\) with a blank asset_id .*3, 5"):
        ids = read_asset_ids_csv(f"asset_id,note\n{ID1},a\n ,b\n{ID2},c\n,d\n")
    assert ids == [ID1, ID2]


def test_csv_repeated_ids_are_skipped_with_a_warning_naming_the_lines() -> None:
    with pytest.warns(AssetIdsWarning, match=r"CSV text: 1 repeated asset_id\(s\) .*line\(s\) 4"):
        ids = read_asset_ids_csv(f"asset_id\n{ID1}\n{ID2}\n{ID1}\n")
    assert ids == [ID1, ID2]


def test_csv_row_with_more_cells_than_header() -> None:
    with pytest.raises(QueryError, match=r"CSV text: line 2: 3 cells but the header has 2"):
        read_asset_ids_csv(f"asset_id,note\n{ID1},a,b\n")


def test_csv_without_asset_id_column() -> None:
    with pytest.raises(QueryError, match=r"CSV text has no 'asset_id' column; columns found: 'id'"):
        read_asset_ids_csv(f"id\n{ID1}\n")


# --- dispatch config: checked when the code location loads ---------------------------------------


def _spec(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "ephys",
        "query": {"data_description.modalities.abbreviation": "ecephys"},
        "file_extension": ".nwb",
        "analyses": [{"name": "unit_quality", "fixed_parameters": {"min_spikes": 50}}],
    }
    spec.update(overrides)
    return spec


def _config(tmp_path: Path, *specs: dict[str, object]) -> Path:
    path = tmp_path / "dispatch.yaml"
    path.write_text(yaml.safe_dump(list(specs)))
    return path


def _load(path: Path) -> None:
    config = load_dispatch_config(path, known_analyses=REGISTRY.names())
    validate_dispatch_config(config, REGISTRY, path)


def test_fixed_parameters_of_the_wrong_type_fail_the_code_location(tmp_path: Path) -> None:
    bad = _spec(analyses=[{"name": "unit_quality", "fixed_parameters": {"min_spikes": "many"}}])
    path = _config(tmp_path, bad)
    settings = Settings.from_env({"AIND_DATA_DIR": str(tmp_path)})
    with pytest.raises(
        DispatchConfigError,
        match=r"dispatch\.yaml: invalid dispatch config:\n  specs\[0\] \(ephys\)\.analyses\[0\] "
        r"\(unit_quality\)\.fixed_parameters\.min_spikes: Input should be a valid integer.*'many'",
    ):
        build_analysis_definitions(settings, AnalysisSettings(dispatch_config=path))


def test_distributed_parameters_of_the_wrong_type(tmp_path: Path) -> None:
    analyses = [{"name": "unit_quality", "distributed_parameters": [{"isi_threshold_ms": [1]}]}]
    path = _config(tmp_path, _spec(analyses=analyses))
    with pytest.raises(
        DispatchConfigError,
        match=r"\(unit_quality\)\.distributed_parameters\[0\]\.isi_threshold_ms: Input should be",
    ):
        _load(path)


def test_unknown_query_operator_names_spec_and_field(tmp_path: Path) -> None:
    path = _config(tmp_path, _spec(query={"name": {"$regexp": "^ecephys"}}))
    with pytest.raises(
        DispatchConfigError,
        match=r"specs\[0\] \(ephys\)\.query: query\.name\.\$regexp: unknown query operator",
    ):
        _load(path)


def test_unknown_query_operator_in_a_query_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text(json.dumps({"$or": [{"a": {"$equals": 1}}]}))
    spec = _spec(query_file="q.json")
    del spec["query"]
    path = _config(tmp_path, spec)
    with pytest.raises(
        DispatchConfigError,
        match=r"\(ephys\)\.query_file .*q\.json: query\.\$or\[0\]\.a\.\$equals: unknown query",
    ):
        _load(path)


def test_logical_operator_needs_a_list_of_queries(tmp_path: Path) -> None:
    path = _config(tmp_path, _spec(query={"$or": {"a": 1}}))
    with pytest.raises(DispatchConfigError, match=r"query\.\$or: \$or takes a non-empty list"):
        _load(path)


def test_bad_asset_ids_csv_fails_at_load_naming_spec_and_file(tmp_path: Path) -> None:
    (tmp_path / "ids.csv").write_text('asset_id\n"unterminated\n')
    spec = _spec(asset_ids_csv="ids.csv")
    del spec["query"]
    with pytest.raises(
        DispatchConfigError, match=r"specs\[0\] \(ephys\)\.asset_ids_csv .*ids\.csv: .*line 2"
    ):
        _load(_config(tmp_path, spec))


def test_file_extension_with_a_wildcard(tmp_path: Path) -> None:
    with pytest.raises(DispatchConfigError, match=r"\(ephys\)\.file_extension '\*\.nwb': a file"):
        _load(_config(tmp_path, _spec(file_extension="*.nwb")))


def test_query_file_with_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text('{"a": 1,}')
    spec = _spec(query_file="q.json")
    del spec["query"]
    with pytest.raises(
        DispatchConfigError,
        match=r"\(ephys\)\.query_file .*invalid JSON .* line 1 column 8: Illegal trailing comma",
    ):
        _load(_config(tmp_path, spec))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(colour="red"), r"specs\[0\] \(ephys\)\.colour: Extra inputs are not permitted"),
        (_spec(split_files="maybe"), r"\(ephys\)\.split_files: Input should be a valid boolean"),
        (_spec(analyses=[]), r"\(ephys\)\.analyses: List should have at least 1 item"),
        (
            _spec(analyses=[{"name": "unit_quality"}, {"name": "unit_quality"}]),
            r"analysis 'unit_quality' is listed twice",
        ),
        (_spec(name="ephys units"), r"name 'ephys units' must start with a letter"),
        (_spec(filter_latest=True), r"filter_latest needs filter_by"),
        (
            _spec(group_by="subject.subject_id"),
            r"\(ephys\)\.group_by: Input should be a valid list",
        ),
        (
            _spec(analyses=[{"name": "unit_quality", "fixed": {}}]),
            r"analyses\.0\.fixed: Extra inputs are not permitted",
        ),
        (_spec(analyses=[{"name": "no_such"}]), r"unknown analysis 'no_such'; registered:"),
    ],
)
def test_dispatch_spec_errors_name_file_spec_and_field(
    tmp_path: Path, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(DispatchConfigError, match=rf"dispatch\.yaml: (?s:.*){message}"):
        _load(_config(tmp_path, spec))


def test_duplicate_spec_names(tmp_path: Path) -> None:
    with pytest.raises(DispatchConfigError, match=r"spec names must be unique; repeated: ephys"):
        _load(_config(tmp_path, _spec(), _spec()))


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.yaml"
    path.write_text("- name: ephys\n  query: {a: [1, 2}\n")
    with pytest.raises(DispatchConfigError, match=r"dispatch\.yaml: invalid YAML at line 2"):
        _load(path)


# --- DocDB records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"docdb_record_id": ["r1"], "asset_name": [None], "s3_location": ["s3://b/x"]},
         "DocDB record 'r1' has no name"),
        ({"docdb_record_id": ["r1"], "asset_name": [7], "s3_location": ["s3://b/x"]},
         "DocDB record 'r1': name 7 is not a non-empty string"),
        ({"docdb_record_id": ["r1"], "asset_name": ["a"], "s3_location": [None]},
         "DocDB record 'r1' (a) has no location"),
        ({"docdb_record_id": ["r1"], "asset_name": ["a"], "s3_location": [42]},
         "DocDB record 'r1' (a): location 42 is a int, not a string"),
        ({"docdb_record_id": ["r1"], "asset_name": ["a"], "s3_location": ["gs://b/x"]},
         "DocDB record 'r1' (a): location 'gs://b/x' has the unsupported scheme 'gs' (use s3://)"),
        ({"docdb_record_id": ["r1"], "asset_name": ["a"], "s3_location": ["s3:///x"]},
         "DocDB record 'r1' (a): location 's3:///x' names no bucket"),
    ],
)  # fmt: skip
def test_row_problems_name_the_record(row: dict[str, list[object]], message: str) -> None:
    assert row_problems(row) == [message]


def _records(root: str) -> list[dict[str, object]]:
    base = {"last_modified": "2025-01-01T00:00:00", "modality": "ecephys"}
    return [
        {"_id": "good", "name": "asset_good", "location": f"{root}/asset_good", **base},
        {"_id": "noname", "location": f"{root}/x", **base},
        {"_id": "noloc", "name": "asset_noloc", **base},
        {"_id": "intloc", "name": "asset_intloc", "location": 42, **base},
        {"_id": "gone", "name": "asset_gone", "location": f"{root}/asset_gone", **base},
        {"_id": "empty", "name": "asset_empty", "location": f"{root}/asset_empty", **base},
    ]


def _config_for_store(tmp_path: Path):  # noqa: ANN202 - a DispatchConfig
    path = _config(tmp_path, _spec(query={"modality": "ecephys"}))
    return load_dispatch_config(path, known_analyses=REGISTRY.names())


def test_discovery_reports_records_it_cannot_register(
    docdb: DocDBResource, s3_store: ObjectStoreResource, tmp_path: Path
) -> None:
    docdb.bulk_upsert("assets", _records(s3_store.url("data")))
    spec = _config_for_store(tmp_path)["ephys"]
    page = discover_page(docdb, "assets", spec, None, 100)
    keys = sorted(p.key for p in page.partitions)
    assert keys == ["asset_empty", "asset_gone", "asset_good"]  # never "None"
    assert sorted(page.rejected) == [
        "ephys: DocDB record 'intloc' (asset_intloc): location 42 is a int, not a string",
        "ephys: DocDB record 'noloc' (asset_noloc) has no location",
        "ephys: DocDB record 'noname' has no name",
    ]


def test_missing_location_fails_its_partition_distinct_from_an_empty_one(
    docdb: DocDBResource, s3_store: ObjectStoreResource, tmp_path: Path
) -> None:
    root = s3_store.url("data")
    docdb.bulk_upsert("assets", _records(root))
    s3_store.put_bytes(f"{root}/asset_good/nwb/a.nwb", b"nwb")
    s3_store.put_bytes(f"{root}/asset_empty/logs/processing.log", b"failed")
    config = _config_for_store(tmp_path)
    kwargs = {
        "config": config,
        "registry": REGISTRY,
        "docdb": docdb,
        "store": s3_store,
        "assets_collection": "assets",
    }

    def run(key: str, rid: str):  # noqa: ANN202
        return dispatch_partition(key, {"specs": {"ephys": {"docdb_record_id": [rid]}}}, **kwargs)

    gone = run("asset_gone", "gone")
    assert gone.errors == [
        f"ephys: location {root}/asset_gone of data asset asset_gone (DocDB record gone) does "
        "not exist (no object under this prefix); an existing location without *.nwb files is "
        "skipped, not failed"
    ]
    assert gone.skipped_assets == [] and gone.models == []
    empty = run("asset_empty", "empty")
    assert empty.errors == [] and empty.skipped_assets == ["asset_empty"]
    good = run("asset_good", "good")
    assert good.errors == [] and len(good.models) == 1
    # a record edited after discovery to a bad location fails its partition, naming it
    docdb.upsert("assets", {"_id": "good"}, {**_records(root)[0], "location": 7})
    assert run("asset_good", "good").errors == [
        "ephys: DocDB record 'good' (asset_good): location 7 is a int, not a string"
    ]


def test_missing_bucket_fails_its_partition(
    docdb: DocDBResource, s3_store: ObjectStoreResource, tmp_path: Path
) -> None:
    records = [{**_records("s3://no-such-bucket-aind/data")[4]}]
    docdb.bulk_upsert("assets", records)
    result = dispatch_partition(
        "asset_gone",
        {"specs": {"ephys": {"docdb_record_id": ["gone"]}}},
        config=_config_for_store(tmp_path),
        registry=REGISTRY,
        docdb=docdb,
        store=s3_store,
        assets_collection="assets",
    )
    assert len(result.errors) == 1
    assert "s3://no-such-bucket-aind/data/asset_gone of data asset asset_gone" in result.errors[0]
    assert "does not exist (no bucket 'no-such-bucket-aind')" in result.errors[0]


def test_dispatch_step_fails_for_a_missing_location_and_other_partitions_run(world, instance):  # noqa: ANN001
    from aind_assets_tests.analysis.test_flow import (
        DISPATCH,
        apply,
        ephys_key,
        failure_message,
        materialize,
        tick,
    )

    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    bad_key, good_key = ephys_key(world, 0), ephys_key(world, 1)
    bad = world.by_name(bad_key)
    world.store.delete(bad["location"], recursive=True)
    failed = materialize(world, instance, bad_key, assets=[DISPATCH])
    assert not failed.success
    message = failure_message(failed)
    assert f"bad input in 1 partition(s):\n- {bad_key}: ephys_units: location " in message
    assert f"{bad['location']} of data asset {bad['name']}" in message
    assert "does not exist (no object under this prefix)" in message
    ok = materialize(world, instance, good_key, assets=[DISPATCH])
    assert ok.success and ok.output_for_node("analysis__ephys_units__dispatch")


def test_local_location_missing_versus_empty(tmp_path: Path) -> None:
    from aind_assets.analysis.dispatch import why_missing

    store = ObjectStoreResource(root=str(tmp_path))
    (tmp_path / "empty").mkdir()
    assert why_missing(store, str(tmp_path / "empty")) is None
    assert why_missing(store, str(tmp_path / "absent")) == "no such directory"
