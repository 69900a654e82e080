"""File selection, dispatch models, task expansion and parameter merging (files.py)."""

from __future__ import annotations

import json
import logging

import fsspec
import pytest

from aind_assets.analysis.files import (
    build_dispatch_models,
    dispatch_parameters,
    expand_tasks,
    job_parameters,
    select_files,
)
from aind_assets.analysis.models import AnalysisDispatchModel, AnalysisSpec

LISTING = {
    "s3://bucket/asset_a": [
        "bucket/asset_a/nwb/asset_a.nwb",
        "bucket/asset_a/nwb/asset_a_block2.nwb",
        "bucket/asset_a/top.nwb",
        "bucket/asset_a/metadata.json",
        "bucket/asset_a/nwb/notes.nwb.txt",
    ],
    # A listing may also return scheme-prefixed paths, and paths of a sibling prefix.
    "s3://bucket/asset_b": ["s3://bucket/asset_b/deep/er/b.nwb", "bucket/asset_bb/x.nwb"],
    "s3://bucket/asset_c": ["bucket/asset_c/metadata.json"],
}


def list_fn(location):
    return LISTING[location]


def row(*names, group_metadata=None):
    return {
        "s3_location": [f"s3://bucket/{n}" for n in names],
        "asset_name": list(names),
        "docdb_record_id": [f"id-{n}" for n in names],
        **({"group_metadata": group_metadata} if group_metadata else {}),
    }


def test_select_files_glob_semantics():
    assert select_files(["s3://bucket/asset_a", "s3://bucket/asset_b"], ".nwb", list_fn) == {
        "s3://bucket/asset_a": [
            "s3://bucket/asset_a/nwb/asset_a.nwb",
            "s3://bucket/asset_a/nwb/asset_a_block2.nwb",
            "s3://bucket/asset_a/top.nwb",
        ],
        "s3://bucket/asset_b": ["s3://bucket/asset_b/deep/er/b.nwb"],
    }
    assert select_files(["s3://bucket/asset_c"], ".nwb", list_fn) == {"s3://bucket/asset_c": []}
    # "" selects every file and folder, as glob("{location}/**/*") (the dispatcher never asks:
    # no file extension means no file selection).
    everything = select_files(["s3://bucket/asset_a"], "", list_fn)["s3://bucket/asset_a"]
    assert len(everything) == 6 and "s3://bucket/asset_a/nwb" in everything


def test_select_files_with_a_real_fsspec_filesystem(tmp_path):
    (tmp_path / "asset" / "nwb").mkdir(parents=True)
    (tmp_path / "asset" / "nwb" / "s.nwb").write_bytes(b"x")
    (tmp_path / "asset" / "s.nwb.json").write_text("{}")
    fs = fsspec.filesystem("file")
    location = f"file://{tmp_path}/asset"
    assert select_files([location], ".nwb", fs.find) == {location: [f"{location}/nwb/s.nwb"]}


def test_select_files_in_a_local_directory_keeps_plain_paths(tmp_path):
    # The embedded store is a local directory: locations are absolute paths, and so are files.
    (tmp_path / "asset" / "nwb").mkdir(parents=True)
    (tmp_path / "asset" / "nwb" / "s.nwb").write_bytes(b"x")
    fs = fsspec.filesystem("file")
    location = f"{tmp_path}/asset"
    assert select_files([location], ".nwb", fs.find) == {location: [f"{location}/nwb/s.nwb"]}


def test_unsplit_one_model_with_all_files():
    files = select_files(["s3://bucket/asset_a"], ".nwb", list_fn)
    built = build_dispatch_models([row("asset_a")], files, split_files=False, query={"q": 1})
    assert built.skipped == []
    assert built.models == [
        AnalysisDispatchModel(
            s3_location=["s3://bucket/asset_a"],
            asset_name=["asset_a"],
            docdb_record_id=["id-asset_a"],
            file_location=[
                "s3://bucket/asset_a/nwb/asset_a.nwb",
                "s3://bucket/asset_a/nwb/asset_a_block2.nwb",
                "s3://bucket/asset_a/top.nwb",
            ],
            query='{"q": 1}',
        )
    ]


def test_split_one_model_per_file():
    files = select_files(["s3://bucket/asset_a"], ".nwb", list_fn)
    models = build_dispatch_models([row("asset_a")], files, split_files=True).models
    assert [m.file_location for m in models] == [
        ["s3://bucket/asset_a/nwb/asset_a.nwb"],
        ["s3://bucket/asset_a/nwb/asset_a_block2.nwb"],
        ["s3://bucket/asset_a/top.nwb"],
    ]
    assert all(m.s3_location == ["s3://bucket/asset_a"] for m in models)
    assert all(m.docdb_record_id == ["id-asset_a"] for m in models)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_assets_without_files_are_skipped_and_reported():
    # A handler of our own (not caplog): the suite may run with `-p no:logging`.
    files = select_files(["s3://bucket/asset_b", "s3://bucket/asset_c"], ".nwb", list_fn)
    handler = _Records()
    log = logging.getLogger("aind_assets.analysis.files")
    log.addHandler(handler)
    try:
        built = build_dispatch_models([row("asset_c"), row("asset_b")], files)
    finally:
        log.removeHandler(handler)
    assert built.skipped == ["asset_c"]
    assert [m.asset_name for m in built.models] == [["asset_b"]]
    assert any("asset_c" in m for m in handler.messages)


def test_grouped_unsplit_drops_assets_without_files_and_keeps_push_order():
    locations = ["s3://bucket/asset_b", "s3://bucket/asset_c", "s3://bucket/asset_a"]
    files = select_files(locations, ".nwb", list_fn)
    group = row("asset_c", "asset_b", "asset_a", group_metadata={"subject__subject_id": "741213"})
    built = build_dispatch_models([group], files, split_files=False, query='{"q": 1}')
    (model,) = built.models
    assert built.skipped == ["asset_c"]
    # members keep the row's ($push) order, as analysis-pipeline-utils
    assert model.asset_name == ["asset_b", "asset_a"]
    assert model.s3_location == ["s3://bucket/asset_b", "s3://bucket/asset_a"]
    assert model.docdb_record_id == ["id-asset_b", "id-asset_a"]
    assert model.file_location == files["s3://bucket/asset_b"] + files["s3://bucket/asset_a"]
    assert model.group_metadata == {"subject__subject_id": "741213"}
    assert model.query == '{"q": 1}'


def test_group_with_no_files_at_all_gives_no_model():
    files = {"s3://bucket/asset_c": []}
    assert build_dispatch_models([row("asset_c")], files, split_files=False) == ([], ["asset_c"])


def test_split_with_several_locations_is_an_error():
    files = select_files(["s3://bucket/asset_a", "s3://bucket/asset_b"], ".nwb", list_fn)
    with pytest.raises(ValueError, match="split_files is not supported for grouped"):
        build_dispatch_models([row("asset_a", "asset_b")], files, split_files=True)


def test_no_file_extension_keeps_rows_as_models():
    built = build_dispatch_models([row("asset_b", "asset_a")], None, split_files=True)
    (model,) = built.models
    assert model.file_location is None
    assert model.asset_name == ["asset_b", "asset_a"]  # the row's order


def test_row_lists_must_be_parallel():
    bad = row("asset_a")
    bad["asset_name"] = []
    with pytest.raises(ValueError, match="same length"):
        build_dispatch_models([bad], None)


def test_aggregation_rows_with_extra_id_are_accepted():
    rows = [{**row("asset_a"), "_id": ["741213"], "group_metadata": {"s": "741213"}}]
    (model,) = build_dispatch_models(rows, None).models
    assert model.group_metadata == {"s": "741213"}
    assert "_id" not in model.model_dump()


def test_expand_tasks_is_records_x_files_x_parameter_sets():
    files = select_files(["s3://bucket/asset_a", "s3://bucket/asset_b"], ".nwb", list_fn)
    models = build_dispatch_models([row("asset_a"), row("asset_b")], files).models
    assert len(models) == 4
    spec = AnalysisSpec(
        name="unit_quality",
        distributed_parameters=[{"isi_threshold_ms": 1.5}, {"isi_threshold_ms": 2.0}],
    )
    tasks = expand_tasks(models, spec)
    assert len(tasks) == 8
    assert [(t.file_location[0], t.distributed_parameters) for t in tasks[:2]] == [
        ("s3://bucket/asset_a/nwb/asset_a.nwb", {"isi_threshold_ms": 1.5}),
        ("s3://bucket/asset_a/nwb/asset_a.nwb", {"isi_threshold_ms": 2.0}),
    ]
    assert models[0].distributed_parameters is None  # copies, not mutations
    assert expand_tasks(models, AnalysisSpec(name="x")) == models
    assert len(expand_tasks(models, [{"a": 1}, {"a": 2}, {"a": 3}])) == 12


def test_parameter_layers_merge_by_dict_update_like_the_package():
    files = ["s3://bucket/asset_a/x.nwb"]
    dispatched = dispatch_parameters(
        {"a": "code", "b": "code", "c": "code", "d": "code", "only_code": 1},
        {"b": "fixed", "c": "fixed", "d": "fixed", "dry_run": True},
        files,
        {"d": "distributed", "dry_run": False},
    )
    # keys keep their first position; values of later layers win; dry_run never stays
    assert list(dispatched.items()) == [
        ("a", "code"),
        ("b", "fixed"),
        ("c", "fixed"),
        ("d", "distributed"),
        ("only_code", 1),
        ("file_location", files),
    ]
    job = job_parameters(dispatched, {"c": "run", "d": "run", "new": 0, "dry_run": 1}, files, {})
    assert list(job.items()) == [
        ("a", "code"),
        ("b", "fixed"),
        ("c", "run"),
        ("d", "run"),
        ("only_code", 1),
        ("file_location", files),
        ("new", 0),
    ]
    # the distributed set beats the run config (it is applied again at the job stage)
    assert job_parameters(dispatched, {"d": "run"}, files, {"d": "distributed"})["d"] == (
        "distributed"
    )
    assert dispatch_parameters(None, None, None, None) == {}
    # file_location is the task's, above the run config
    assert job_parameters({}, {"file_location": "x"}, ["y"], None) == {"file_location": ["y"]}
    assert json.dumps(job)  # plain JSON for the processing record
