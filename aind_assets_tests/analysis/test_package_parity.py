"""analysis-pipeline-utils 0.2.8 and this platform on the same inputs, side by side.

The package (the test extra pins it; it resolves beside our pins in one venv) runs its own code
on the real servers: its DocDB client is replaced by :class:`MongoDocDbClient`, which sends the
package's filters and pipelines unchanged to the test's Mongo-wire database (the package speaks
DocDB's REST API, which has no local server), and its module-level ``S3FileSystem`` by one on the
test's SeaweedFS bucket. The Code Ocean lookup (``get_codeocean_process_metadata``: capsule name,
url, version and app-panel parameters) is the one part with no counterpart here; it returns this
platform's analysis (url, name, version, run_script, analysis-code parameters), as a wrapper
capsule of that analysis would. Everything else (pipelines, file globbing, task expansion, Code
and hash, duplicate detection, record filters, ``latest_only``, the processing record) is the
package's code, compared with ours on the same records and files. Drift shows as a red test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aind_data_schema.core.processing as ps
import pytest
from aind_data_schema.base import GenericModel
from analysis_pipeline_utils import metadata as apu_metadata
from analysis_pipeline_utils import utils_analysis_dispatch as apu_dispatch
from analysis_pipeline_utils.analysis_dispatch_model import (
    AnalysisDispatchModel as PackageModel,
)
from analysis_pipeline_utils.result_files import create_results_metadata, processing_prefix

from aind_assets import lineage
from aind_assets.analysis import results as results_mod
from aind_assets.analysis.discovery import discover_pages
from aind_assets.analysis.dispatch import dispatch_partitions
from aind_assets.analysis.models import DispatchConfig, DispatchSpec
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.wrapper import run_job
from aind_assets_tests.analysis.conftest import ASSETS, RESULTS

pytestmark = pytest.mark.servers


class MongoDocDbClient:
    """The three calls of aind-data-access-api's ``MetadataDbClient`` that the package makes,
    answered by the test's database (filters and pipelines passed through unchanged)."""

    def __init__(self, db: Any, collection: str) -> None:
        self.db, self.collection = db, collection
        self.pipelines: list[list[dict[str, Any]]] = []
        self.filters: list[dict[str, Any]] = []

    def aggregate_docdb_records(self, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.pipelines.append(json.loads(json.dumps(pipeline)))
        return list(self.db[self.collection].aggregate(pipeline))

    def retrieve_docdb_records(self, filter_query: dict[str, Any], **_: Any) -> list[dict]:
        self.filters.append(json.loads(json.dumps(filter_query)))
        return list(self.db[self.collection].find(filter_query))

    def insert_one_docdb_record(self, record: dict[str, Any]) -> None:
        self.db[self.collection].insert_one(record)


@pytest.fixture
def package(world, monkeypatch):
    """The package wired to the test's servers; ``package.base_process(definition)`` is what
    the Code Ocean lookup returns for our analysis."""
    db = world.docdb.client[world.docdb.database]  # the same database as the platform
    assets = MongoDocDbClient(db, ASSETS)
    results = MongoDocDbClient(db, RESULTS)
    monkeypatch.setattr(apu_dispatch, "_docdb_api_client", lambda: assets)
    monkeypatch.setattr(apu_metadata, "get_docdb_client", lambda *a, **k: results)
    monkeypatch.setattr(apu_dispatch, "fs", world.store.fs_for("s3://any"))
    current: dict[str, Any] = {}

    def base_process(**_: Any) -> ps.DataProcess:
        d = current["definition"]
        return ps.DataProcess.model_construct(
            experimenters=["unknown"],
            process_type=ps.ProcessName.ANALYSIS,
            stage=ps.ProcessStage.ANALYSIS,
            name=d.name,
            start_date_time=datetime.now(UTC),
            end_date_time=datetime.now(UTC),
            code=ps.Code(
                name=d.name,
                url=d.url,
                version=d.version,
                run_script=d.run_script,
                parameters=d.code_defaults(),
                input_data=[],
            ),
        )

    monkeypatch.setattr(apu_dispatch, "get_codeocean_process_metadata", base_process)

    class Package:
        assets_client, results_client = assets, results

        @staticmethod
        def use(definition: Any) -> None:
            current["definition"] = definition

        @staticmethod
        def base_process() -> ps.DataProcess:
            return base_process()

    return Package


def _seed(world) -> list[dict[str, Any]]:
    records = world.seed(12)
    # a record without a subject id (drop_null_groups) and one listing two modalities (unwind)
    orphan = dict(records[1], _id="orphan-1", name=records[1]["name"] + "_orphan")
    orphan["subject"] = {}
    orphan["location"] = records[1]["location"]
    world.docdb.bulk_upsert(ASSETS, [orphan])
    return records


def _package_jobs(spec: DispatchSpec, tmp_path: Path, package) -> list[PackageModel]:
    """The package's dispatcher for ``spec``: records, files, parameter sets, Code per job."""
    query_args = {
        k: v for k, v in spec.pipeline_options().items() if v is not None and k != "filter_latest"
    }
    if spec.filter_latest:
        query_args["filter_latest"] = spec.filter_latest
    if spec.asset_ids_csv is not None:
        folder = tmp_path / f"csv-{spec.name}"
        folder.mkdir()
        (folder / "ids.csv").write_bytes(spec.asset_ids_csv.read_bytes())
        records = apu_dispatch.get_data_asset_records(folder, use_data_asset_csv=True, **query_args)
    elif spec.query_file is not None:
        records = apu_dispatch.get_data_asset_records(
            tmp_path, docdb_query=str(spec.query_file), **query_args
        )
    else:
        records = apu_dispatch.get_data_asset_records(
            tmp_path, docdb_query=json.dumps(spec.query), **query_args
        )
    jobs: list[PackageModel] = []
    for analysis in spec.analyses:
        tasks = apu_dispatch.expand_task_list(
            records,
            file_extension=spec.file_extension,
            split_files=spec.split_files,
            distributed_analysis_parameters=analysis.distributed_parameters or None,
        )
        jobs.extend(
            apu_dispatch.check_task_parameters(
                tasks, fixed_analysis_params=dict(analysis.fixed_parameters)
            )
        )
    return jobs


def _our_jobs(spec: DispatchSpec, world, registry) -> list[Any]:
    """This platform's jobs for ``spec``: discovery into partitions, then their dispatch."""
    mappings: dict[str, dict[str, Any]] = {}
    for page in discover_pages(world.docdb, ASSETS, spec, None, 5):
        for p in page.partitions:
            mappings[p.key] = {"specs": {spec.name: {"docdb_record_id": list(p.docdb_record_id)}}}
    out = dispatch_partitions(
        mappings,
        config=DispatchConfig([spec]),
        registry=registry,
        docdb=world.docdb,
        store=world.store,
        assets_collection=ASSETS,
    )
    return [m for p in out.values() for m in p.models]


def _comparable(model: Any, *, unsplit_files: bool) -> str:
    dumped = json.loads(model.model_dump_json())
    if unsplit_files:  # the package rebuilds unsplit models without query and group_metadata
        dumped["query"] = dumped["group_metadata"] = None
    return json.dumps(dumped, sort_keys=False)


def _specs(tmp_path: Path, records: list[dict[str, Any]]) -> list[DispatchSpec]:
    """One spec per option of the dispatch spec (and the defaults)."""
    query_file = tmp_path / "query.json"
    query_file.write_text(json.dumps({"data_description.project_name": "Dynamic Foraging"}))
    csv = tmp_path / "ids.csv"
    ids = [r["external_links"]["Code Ocean"][0] for r in records[:5]]
    csv.write_text("asset_id\n" + "\n".join(f" {i} " for i in ids) + "\n\n")
    uq = {"name": "unit_quality", "fixed_parameters": {"min_spikes": 50, "dry_run": True}}
    bp = {"name": "behavior_performance"}
    ephys = {"data_description.modalities.abbreviation": "ecephys"}
    foraging = {"data_description.project_name": "Dynamic Foraging"}
    raw = [
        {"name": "plain", "query": ephys, "analyses": [uq]},
        {"name": "files_split", "query": ephys, "file_extension": ".nwb", "analyses": [uq]},
        {
            "name": "distributed",
            "query": ephys,
            "file_extension": ".nwb",
            "analyses": [
                {**uq, "distributed_parameters": [{"isi_threshold_ms": 2.0}, {"x": [1, 2]}]},
                bp,
            ],
        },
        {
            "name": "latest",
            "query": ephys,
            "file_extension": ".nwb",
            "filter_latest": "created",
            "filter_by": ["data_description.input_data_name"],
            "analyses": [uq],
        },
        {
            "name": "grouped_default_nulls",
            "query": foraging,
            "file_extension": ".nwb",
            "split_files": False,
            "group_by": ["subject.subject_id"],
            "analyses": [bp],
        },
        {
            "name": "grouped_keep_nulls",
            "query_file": str(query_file),
            "group_by": ["subject.subject_id"],
            "drop_null_groups": False,
            "analyses": [bp],
        },
        {
            "name": "grouped_latest",
            "query": foraging,
            "file_extension": ".nwb",
            "split_files": False,
            "filter_latest": "created",
            "filter_by": ["data_description.input_data_name"],
            "group_by": ["subject.subject_id"],
            "analyses": [{**bp, "fixed_parameters": {"min_trials": 5}}],
        },
        {
            "name": "unwound",
            "query": {},
            "unwind_list_fields": ["data_description.modalities"],
            "group_by": ["data_description.modalities.abbreviation"],
            "analyses": [bp],
        },
        {"name": "from_csv", "asset_ids_csv": str(csv), "file_extension": ".nwb", "analyses": [uq]},
    ]
    return [DispatchSpec.model_validate(s) for s in raw]


def test_same_pipelines_jobs_codes_and_hashes_for_every_spec_option(world, package, tmp_path):
    records = _seed(world)
    registry = load_analyses()
    for spec in _specs(tmp_path, records):
        package.assets_client.pipelines.clear()
        for analysis in spec.analyses:
            package.use(registry.get(analysis.name))
            theirs = _package_jobs(
                spec.model_copy(update={"analyses": [analysis]}), tmp_path, package
            )
            ours = [
                m
                for m in _our_jobs(spec, world, registry)
                if m.analysis_code and m.analysis_code.name == analysis.name
            ]
            unsplit = bool(spec.file_extension) and not spec.split_files
            assert theirs, f"{spec.name}: the package found no job"
            assert sorted(_comparable(m, unsplit_files=unsplit) for m in ours) == sorted(
                _comparable(m, unsplit_files=unsplit) for m in theirs
            ), spec.name
            # the same hash: the dispatched Code is the job's Code without run config
            assert sorted(lineage.record_name(m.analysis_code) for m in ours) == sorted(
                processing_prefix(m.analysis_code) for m in theirs
            ), spec.name
        # the pipeline the package ran is ours, stage for stage (defaults included)
        assert package.assets_client.pipelines[0] == json.loads(
            json.dumps(spec.pipeline(), default=str)
        ), spec.name


def test_wrapper_stage_hash_record_and_cross_skipping(world, package, tmp_path):
    """The job's Code with run config, the processing record, and each side skipping what the
    other did (a lab running both never redoes work)."""
    _seed(world)
    registry = load_analyses()
    definition = registry.get("unit_quality")
    package.use(definition)
    spec = _specs(tmp_path, world.records)[2]  # distributed parameter sets, split files
    ours = [m for m in _our_jobs(spec, world, registry) if m.analysis_code.name == "unit_quality"]
    run_config = {"max_isi_violation_ratio": 0.5, "dry_run": False}

    # the package's wrapper: base parameters emptied, then dispatched < CLI < distributed
    wrapper_base = package.base_process()
    wrapper_base.code.parameters = GenericModel()
    task = ours[0]
    theirs = apu_metadata.update_analysis_process(
        wrapper_base, PackageModel.model_validate_json(task.model_dump_json()), **run_config
    )
    code = definition.job_code(task, run_config)
    assert code.model_dump_json() == theirs.code.model_dump_json()
    assert lineage.record_name(code) == processing_prefix(theirs.code)

    # ours runs the job; the package's dispatcher then skips it (docdb_record_exists)
    params = definition.validate_parameters(code.parameters.model_dump())
    done = run_job(
        definition,
        task,
        params,
        code=code,
        docdb=world.docdb,
        store=world.store,
        results_root=world.store.url("analysis-results"),
        results_collection=RESULTS,
    )
    assert done.result.status == "completed"
    assert apu_metadata.docdb_record_exists(theirs.code)
    record = world.docdb.find_one(RESULTS, {"_id": done.result.record_name})

    # the record's shape: the package's processing built from the same process
    theirs.notes = None
    theirs = apu_metadata.update_analysis_process(
        wrapper_base, PackageModel.model_validate_json(task.model_dump_json()), **run_config
    )
    package_processing = apu_metadata.analysis_pipeline_processing_metadata(theirs)
    expected = json.loads(package_processing.model_dump_json())
    got = record["processing"]
    assert got["dependency_graph"] == expected["dependency_graph"] == {"unit_quality": []}
    mine, pkg = got["data_processes"][0], expected["data_processes"][0]
    for field in ("process_type", "stage", "name", "code", "notes", "experimenters"):
        assert mine[field] == pkg[field], field
    assert mine["notes"].startswith("Query used to retrieve data assets: {")

    # the package's results lookups find our record, and ours theirs, with the same filters
    c = record["processing"]["data_processes"][0]["code"]
    lookups = [
        {"code_url": c["url"]},
        {"code_version": c["version"]},
        {"input_data_locations": task.s3_location},
        {"parameters": c["parameters"]},
        {"parameters": c["parameters"], "latest_only": True},
        {"parameters": dict(sorted(c["parameters"].items()))},  # a different order misses
        {"code_url": c["url"], "latest_only": True},
    ]

    # a job the package ran and recorded: ours skips it
    other = ours[1]
    their_other = apu_metadata.update_analysis_process(
        wrapper_base, PackageModel.model_validate_json(other.model_dump_json())
    )
    their_other.output_parameters = {"n_units": 0}
    processing = apu_metadata.analysis_pipeline_processing_metadata(their_other)
    metadata, docdb_id = create_results_metadata(processing, "bucket")
    apu_metadata.write_to_docdb(metadata, docdb_id)
    other_code = definition.job_code(other)
    skipped = run_job(
        definition,
        other,
        definition.validate_parameters(other_code.parameters.model_dump()),
        code=other_code,
        docdb=world.docdb,
        store=world.store,
        results_root=world.store.url("analysis-results"),
        results_collection=RESULTS,
    )
    assert skipped.result.status == "skipped" and skipped.result.record_name == docdb_id

    for args in lookups:
        package.results_client.filters.clear()
        package.results_client.pipelines.clear()
        theirs_found = apu_metadata.get_docdb_records_partial(**args)
        ours_found = results_mod.query_results(world.docdb, RESULTS, **args)
        assert sorted(r["_id"] for r in ours_found) == sorted(r["_id"] for r in theirs_found), args
        sent = package.results_client.pipelines or package.results_client.filters
        expected_query = results_mod.build_filter(
            **{k: v for k, v in args.items() if k != "latest_only"}
        )
        if args.get("latest_only"):
            assert sent[0] == results_mod.latest_pipeline(expected_query), args
        else:
            assert sent[0] == expected_query, args
    assert results_mod.query_results(world.docdb, RESULTS, parameters=c["parameters"])
