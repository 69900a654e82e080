"""Models and dispatch config loading (models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aind_data_schema.components.identifiers import Code
from pydantic import Field, ValidationError

import aind_assets.analysis
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
    DispatchConfigError,
    DispatchSpec,
    load_dispatch_config,
)

EXAMPLE = Path(aind_assets.analysis.__file__).parent / "examples" / "dispatch.yaml"


def test_dispatch_model_fields_match_analysis_pipeline_utils():
    assert list(AnalysisDispatchModel.model_fields) == [
        "s3_location",
        "asset_name",
        "docdb_record_id",
        "file_location",
        "distributed_parameters",
        "group_metadata",
        "query",
        "analysis_code",
    ]
    with pytest.raises(ValidationError, match=r"docdb_record_id\n  Field required"):
        AnalysisDispatchModel(s3_location=["s3://b/a"], asset_name=["a"])  # no docdb_record_id
    model = AnalysisDispatchModel(
        s3_location=["s3://b/a"],
        asset_name=["a"],
        docdb_record_id=["1"],
        analysis_code={"url": "https://github.com/x/y", "version": "1.0", "parameters": {"t": 1}},
    )
    assert isinstance(model.analysis_code, Code)
    assert model.file_location is None and model.query is None
    again = AnalysisDispatchModel.model_validate_json(model.model_dump_json())
    assert again == model


def test_specification_and_outputs_are_subclassable():
    class UnitQuality(AnalysisSpecification):
        isi_threshold_ms: float = Field(1.5)

    class UnitQualityOutputs(AnalysisOutputs):
        n_units: int

    spec = UnitQuality(analysis_name="unit_quality", file_location=["s3://b/x.nwb"])
    assert spec.analysis_tag is None and spec.isi_threshold_ms == 1.5
    assert spec.model_dump()["file_location"] == ["s3://b/x.nwb"]  # extra parameters kept
    with pytest.raises(ValidationError, match=r"analysis_name\n  Field required"):
        UnitQuality()  # analysis_name is required
    assert UnitQualityOutputs(n_units=3).n_units == 3


def spec(**kwargs):
    base = {"name": "s", "query": {"a": 1}, "analyses": [{"name": "unit_quality"}]}
    return DispatchSpec.model_validate(base | kwargs)


def test_spec_defaults_and_pipeline_options():
    s = spec()
    assert (s.file_extension, s.split_files, s.filter_latest, s.drop_null_groups) == (
        "",
        True,
        False,
        True,  # analysis-pipeline-utils' default
    )
    assert s.pipeline_options() == {
        "group_by": None,
        "filter_latest": False,
        "filter_by": None,
        "unwind_list_fields": None,
        "drop_null_groups": True,
    }
    assert s.analyses[0].fixed_parameters == {} and s.analyses[0].distributed_parameters == []
    assert s.pipeline()[0] == {"$match": {"a": 1}}
    assert s.query_json() == '{"a": 1}'


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": None}, "exactly one of query, query_file, asset_ids_csv \\(got: none\\)"),
        ({"query_file": "q.json"}, "got: query, query_file"),
        ({"filter_latest": True}, "filter_latest needs filter_by"),
        ({"name": "has space"}, "must start with a letter"),
        ({"analyses": []}, "at least 1"),
        ({"analyses": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
        ({"group_by": "subject.subject_id"}, "valid list"),
        ({"groupby": ["x"]}, "Extra inputs"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        spec(**kwargs)


def test_example_config_loads_and_builds_pipelines():
    config = load_dispatch_config(EXAMPLE, known_analyses={"unit_quality", "behavior_performance"})
    ephys = config["ephys_units"]
    assert ephys.resolved_query() == {"data_description.modalities.abbreviation": "ecephys"}
    assert ephys.file_extension == ".nwb"
    assert [a.name for a in ephys.analyses] == ["unit_quality", "behavior_performance"]
    assert ephys.analysis("unit_quality").distributed_parameters == [
        {"isi_threshold_ms": 1.5},
        {"isi_threshold_ms": 2.0},
    ]
    assert all(s.pipeline() for s in config)
    assert config.analysis_names() == {"unit_quality", "behavior_performance"}


def test_yaml_and_json_configs_are_equivalent(tmp_path):
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "q.json").write_text('{"subject.subject_id": "741213"}')
    (tmp_path / "ids.csv").write_text("asset_id\nco-1\n\nco-2\n")
    specs = [
        {
            "name": "by_file",
            "query_file": "queries/q.json",
            "file_extension": ".nwb",
            "analyses": [{"name": "unit_quality", "fixed_parameters": {"min_spikes": 5}}],
        },
        {
            "name": "by_csv",
            "asset_ids_csv": "ids.csv",
            "split_files": False,
            "group_by": ["subject.subject_id"],
            "analyses": [{"name": "behavior_performance"}],
        },
    ]
    (tmp_path / "c.json").write_text(json.dumps(specs))
    (tmp_path / "c.yml").write_text(
        """
specs:
  - name: by_file
    query_file: queries/q.json
    file_extension: .nwb
    analyses:
      - name: unit_quality
        fixed_parameters: {min_spikes: 5}
  - name: by_csv
    asset_ids_csv: ids.csv
    split_files: false
    group_by: [subject.subject_id]
    analyses: [{name: behavior_performance}]
"""
    )
    from_json = load_dispatch_config(tmp_path / "c.json")
    from_yaml = load_dispatch_config(tmp_path / "c.yml")
    assert from_json == from_yaml
    assert from_json.names == ["by_file", "by_csv"]
    # Relative paths resolve from the config's folder, not the working directory.
    assert from_json["by_file"].query_file == tmp_path / "queries" / "q.json"
    assert from_json["by_file"].resolved_query() == {"subject.subject_id": "741213"}
    assert from_json["by_csv"].resolved_query() == {
        "external_links.Code Ocean.0": {"$in": ["co-1", "co-2"]}
    }


def test_bad_field_names_file_spec_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        """
- name: ok
  query: {a: 1}
  analyses: [{name: x}]
- name: broken
  query: {a: 1}
  split_files: maybe
  analyses: [{name: x, fixed_params: {}}]
"""
    )
    with pytest.raises(DispatchConfigError, match="invalid dispatch config") as info:
        load_dispatch_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "specs[1] (broken).split_files" in message
    assert "specs[1] (broken).analyses.0.fixed_params" in message
    assert "specs[0]" not in message


def test_validator_errors_name_the_spec(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"name": "nq", "analyses": [{"name": "x"}]}]))
    with pytest.raises(DispatchConfigError, match=r"specs\[0\] \(nq\): give exactly one of"):
        load_dispatch_config(path)


def test_duplicate_spec_names(tmp_path):
    path = tmp_path / "c.json"
    one = {"name": "same", "query": {}, "analyses": [{"name": "x"}]}
    path.write_text(json.dumps([one, one]))
    with pytest.raises(DispatchConfigError, match="unique; repeated: same"):
        load_dispatch_config(path)


def test_unknown_analysis(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"name": "s", "query": {}, "analyses": [{"name": "nope"}]}]))
    with pytest.raises(DispatchConfigError, match=r"specs\[0\] \(s\)\.analyses: unknown analysis"):
        load_dispatch_config(path, known_analyses=["unit_quality"])


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "- name: a\n  query: {a: 1\n", "invalid YAML at line"),
        ("c.json", '[{"name": "a",]', "invalid JSON at line 1 column 15"),
        ("c.toml", "x = 1", "unknown dispatch config format '.toml'"),
        ("c.yaml", "name: a\n", "a dispatch config is a list of specs"),
    ],
)
def test_unreadable_configs(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DispatchConfigError, match=message) as info:
        load_dispatch_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(DispatchConfigError, match="cannot read"):
        load_dispatch_config(tmp_path / "absent.yaml")
