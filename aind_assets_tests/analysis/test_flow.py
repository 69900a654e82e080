"""The analysis flow end to end on the real servers: sensor → partitions → dispatch → analyses.

DocDB holds demo data-asset records and S3 their NWB files; the sensors are evaluated against a
real Dagster instance, the assets are materialized with the platform's IO manager.
"""

from __future__ import annotations

import base64
import json
import urllib.request
import warnings

import dagster as dg
from aind_data_schema.core.metadata import Metadata
from aind_data_schema.core.processing import Processing

from aind_assets.analysis import paging
from aind_assets.analysis.assets import build_assets
from aind_assets.analysis.discovery import partition_key_of
from aind_assets.analysis.keys import job_name
from aind_assets.analysis.models import AnalysisDispatchModel, load_dispatch_config
from aind_assets.analysis.registry import load_analyses
from aind_assets.analysis.sensors import build_discovery_sensor
from aind_assets.analysis.wrapper import METADATA_FILE
from aind_assets_tests.analysis.conftest import ASSETS, RECORDS, RESULTS, World

REGISTRY = load_analyses()
CONFIG = load_dispatch_config(
    __import__("aind_assets.analysis.config", fromlist=["x"]).EXAMPLE_DISPATCH_CONFIG,
    known_analyses=REGISTRY.names(),
)
ASSET_DEFS = build_assets(CONFIG, list(REGISTRY))
#: each spec's assets: analysis/<spec>/dispatch, then analysis/<spec>/<analysis>...
SPEC_DEFS = {s.name: [a for a in ASSET_DEFS if a.key.path[1] == s.name] for s in CONFIG}
DISPATCH, *ANALYSES = SPEC_DEFS["ephys_units"]
BY_NAME = {a.key.path[-1]: a for a in ANALYSES}
GROUPED = SPEC_DEFS["foraging_by_subject"]
#: step (op) names of the ephys spec's assets
DISPATCH_NODE = "analysis__ephys_units__dispatch"
UQ_NODE = "analysis__ephys_units__unit_quality"
BP_NODE = "analysis__ephys_units__behavior_performance"
SENSORS = {
    spec.name: build_discovery_sensor(
        spec,
        job_name(spec.name),
        minimum_interval_seconds=30,
        running=False,
    )
    for spec in CONFIG
}


def expected_keys(world: World, spec_name: str) -> list[str]:
    """Keys of the full (non-incremental) pipeline: what paging must end up with."""
    spec = CONFIG[spec_name]
    rows = world.docdb.aggregate(ASSETS, spec.pipeline())
    return sorted({partition_key_of(r, spec) for r in rows})


def tick(world: World, instance: dg.DagsterInstance, spec_name: str, cursor: str | None, **kw):
    """One sensor tick; one run per partition unless ``run_batch_size`` says otherwise."""
    kw.setdefault("run_batch_size", 1)
    resources = {"analysis": world.resources(**kw)["analysis"]}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return SENSORS[spec_name](context)


def added_keys(result: dg.SensorResult) -> list[str]:
    keys = []
    for request in result.dynamic_partitions_requests:
        assert request.partitions_def_name in CONFIG.names  # the spec's own partitions
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            keys.extend(request.partition_keys)
    return keys


def apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """Sensors evaluated in tests do not apply their partition requests: do it here."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def materialize(world: World, instance, key: str, assets=None, run_config=None, **kw):
    selection = assets or [DISPATCH, *ANALYSES]
    return dg.materialize(
        selection,
        partition_key=key,
        instance=instance,
        resources=world.resources(**kw),
        run_config=run_config,
        raise_on_error=False,
    )


def materialization(result, asset_name: str) -> dg.AssetMaterialization:
    mats = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == asset_name
    ]
    assert len(mats) == 1, [m.asset_key for m in result.get_asset_materialization_events()]
    return mats[0].materialization


def meta(mat: dg.AssetMaterialization, key: str):
    return mat.metadata[key].value


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    return "\n".join(e.event_specific_data.error.to_string() for e in failures)


def ephys_key(world: World, index: int = 0) -> str:
    ecephys = [r for r in world.records if r["name"].startswith("ecephys_")]
    return paging.partition_key_for(ecephys[index]["name"])


# --------------------------------------------------------------------------------------------


def test_sensor_pages_registers_partitions_and_requests_runs(world, instance):
    world.seed(files=False)
    for spec_name in ("ephys_units", "foraging_by_subject"):
        expected = expected_keys(world, spec_name)
        result = tick(world, instance, spec_name, None)
        assert sorted(added_keys(result)) == expected
        assert sorted(r.partition_key for r in result.run_requests) == expected
        # each new partition's data version (the hash of its DocDB members) is observed
        observed = {e.partition: e for e in result.asset_events}
        assert sorted(observed) == expected
        for event in observed.values():
            assert event.asset_key == dg.AssetKey(["analysis", spec_name, "data_assets"])
            entry = world.resource.partition_map().get(event.partition)["specs"][spec_name]
            assert event.tags["dagster/data_version"] == entry["members"]
        for request in result.run_requests:
            assert request.tags["aind/dispatch_spec"] == spec_name
            mapping = world.resource.partition_map().get(request.partition_key)
            entry = mapping["specs"][spec_name]
            assert json.loads(request.tags["aind/docdb_record_ids"]) == [
                str(i) for i in entry["docdb_record_id"]
            ]
        # the cursor is the last (last_modified, _id) of the records the spec's query selects
        state = json.loads(result.cursor)
        matching = world.docdb.aggregate(
            ASSETS,
            [{"$match": CONFIG[spec_name].resolved_query()}, paging.PAGE_SORT, {"$limit": 10**6}],
        )
        last = matching[-1]
        assert paging.decode_cursor(state["after"]) == (last["last_modified"], last["_id"])
        apply(instance, result)

        # nothing new: no partition, no run, same cursor
        again = tick(world, instance, spec_name, result.cursor)
        assert not again.run_requests and not added_keys(again)
        assert again.skip_reason is not None
        assert json.loads(again.cursor)["after"] == state["after"]
    # each spec's partitions hold its own keys only: sessions, or subjects
    for spec_name in CONFIG.names:
        assert sorted(instance.get_dynamic_partitions(spec_name)) == expected_keys(world, spec_name)

    # new records: only their partitions (and the groups they join) come back
    cursors = {}
    for spec_name in CONFIG.names:
        cursors[spec_name] = tick(world, instance, spec_name, None).cursor
    before = {s: set(expected_keys(world, s)) for s in CONFIG.names}
    world.seed(16, start=12, files=False)
    new_ephys = tick(world, instance, "ephys_units", cursors["ephys_units"])
    after = set(expected_keys(world, "ephys_units"))
    assert set(added_keys(new_ephys)) == after - before["ephys_units"]
    assert {r.partition_key for r in new_ephys.run_requests} == after - before["ephys_units"]
    grouped = tick(world, instance, "foraging_by_subject", cursors["foraging_by_subject"])
    assert added_keys(grouped) == []  # both subjects already had a partition...
    changed = {
        paging.partition_key_for({"subject__subject_id": r["subject"]["subject_id"]})
        for r in world.records[12:16]
        if r["name"].startswith("behavior_")
    }
    assert {r.partition_key for r in grouped.run_requests} == changed  # ...but they changed


def test_sensor_can_register_partitions_without_requesting_runs(world, instance):
    world.seed(files=False)
    result = tick(world, instance, "ephys_units", None, request_runs=False)
    assert sorted(added_keys(result)) == expected_keys(world, "ephys_units")
    assert not result.run_requests
    assert "runs are not requested" in result.skip_reason.skip_message


def test_dispatch_and_analyses_end_to_end(world, instance):
    world.seed()
    for spec_name in CONFIG.names:
        apply(instance, tick(world, instance, spec_name, None))
    key = ephys_key(world, 0)
    record = world.by_name(key)

    result = materialize(world, instance, key)
    assert result.success, failure_message(result)

    # dispatch: one asset, one NWB file -> 2 unit_quality jobs (2 parameter sets) + 1 behaviour
    models = [
        AnalysisDispatchModel.model_validate(m) for m in result.output_for_node(DISPATCH_NODE)
    ]
    assert len(models) == 3
    nwb = f"{record['location']}/nwb/{record['name']}.nwb"
    for model in models:
        assert model.s3_location == [record["location"]]
        assert model.asset_name == [record["name"]]
        assert model.docdb_record_id == [record["_id"]]
        assert model.file_location == [nwb]
        assert json.loads(model.query) == CONFIG["ephys_units"].resolved_query()
    assert sorted((m.analysis_code.name, json.dumps(m.distributed_parameters)) for m in models) == [
        ("behavior_performance", "null"),
        ("unit_quality", '{"isi_threshold_ms": 1.5}'),
        ("unit_quality", '{"isi_threshold_ms": 2.0}'),
    ]
    dispatch_mat = materialization(result, "dispatch")
    assert meta(dispatch_mat, "jobs") == 3
    assert meta(dispatch_mat, "files") == 1
    assert meta(dispatch_mat, "sample")["asset_name"] == [record["name"]]

    # unit quality: two completed jobs with results, plots, metadata.nd.json and records
    uq = result.output_for_node(UQ_NODE)
    assert uq.status == "completed" and len(uq.jobs) == 2
    records = list(world.docdb.find(RESULTS, {}))
    assert len(records) == 3
    for job in uq.jobs:
        assert job.parameters["file_location"] == [nwb]
        assert job.parameters["min_spikes"] == 50  # fixed parameter of the spec
        assert job.outputs["n_units"] == 8
        assert job.outputs["n_passing"] < 8  # every third unit violates the refractory period
        files = {i.url.rsplit("/", 1)[-1] for i in world.store.list_objects(job.results_location)}
        assert files == {METADATA_FILE, "unit_metrics.csv", "unit_quality.png"}
        png = world.store.get_bytes(f"{job.results_location}/unit_quality.png")
        assert png.startswith(b"\x89PNG")
        doc = world.docdb.find_one(RESULTS, {"_id": job.record_name})
        assert doc["name"] == job.record_name == doc["_id"]
        assert doc["location"] == job.results_location
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            on_disk = Metadata.model_validate_json(
                world.store.get_bytes(f"{job.results_location}/{METADATA_FILE}")
            )
            in_docdb = Metadata.model_validate(doc)
        assert on_disk == in_docdb
        process = in_docdb.processing.data_processes[0]
        assert getattr(process.process_type, "value", process.process_type) == "Analysis"
        assert [d.url for d in process.code.input_data] == [record["location"]]
        assert process.output_parameters.model_dump()["n_units"] == 8
        from aind_assets import lineage

        assert lineage.record_name(process.code) == job.record_name
    uq_mat = materialization(result, "unit_quality")
    assert meta(uq_mat, "completed") == 2
    # on S3 the plot is an image link short enough for the UI to show inline (a presigned URL
    # that loads the PNG), the PNG itself (base64) behind it
    plot = meta(uq_mat, "plot")
    assert len(plot) < 1000 and plot.startswith(f"**unit_quality · {key}**")
    url = plot.split("](", 1)[1].rstrip(")")
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read().startswith(b"\x89PNG")
    png = meta(uq_mat, "plot_png")
    encoded = png.split("data:image/png;base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    assert all(u.endswith("unit_quality.png") for u in meta(uq_mat, "plot_urls"))
    # results, the plot and the output are links; the records a table of their key fields
    endpoint = world.resource.object_store.endpoint_url
    assert meta(uq_mat, "results_link_1").startswith(endpoint + "/")
    assert meta(uq_mat, "plot_link").endswith("/unit_quality.png")
    table = uq_mat.metadata["job_records"]
    assert [r.data["status"] for r in table.value.records] == ["completed", "completed"]
    assert meta(uq_mat, "output").startswith(endpoint + "/")
    assert {r.data["field"] for r in uq_mat.metadata["record"].value.records} >= {
        "DocDB record",
        "code",
        "partition",
    }

    # behaviour performance on the same partition
    bp = result.output_for_node(BP_NODE)
    assert bp.status == "completed"
    outputs = bp.jobs[0].outputs
    assert outputs["n_sessions"] == 1 and outputs["n_trials"] == 40
    assert 0 <= outputs["accuracy"] <= 1
    assert "behavior_performance.png" in meta(
        materialization(result, "behavior_performance"), "plot"
    )

    # the IO manager recorded each materialization too
    assert world.docdb.count(RECORDS, {"partition_key": key}) == 3
    rec = world.docdb.find_one(RECORDS, {"asset_key": "analysis/ephys_units/unit_quality"})
    Processing.model_validate(rec["processing"])

    # a second run skips every job, names the existing records and writes no new record
    names = sorted(j.record_name for j in uq.jobs)
    again = materialize(world, instance, key)
    assert again.success, failure_message(again)
    assert again.output_for_node(UQ_NODE).status == "skipped"
    again_mat = materialization(again, "unit_quality")
    assert sorted(meta(again_mat, "existing_records")) == names
    assert meta(again_mat, "skipped") == 2 and meta(again_mat, "completed") == 0
    assert world.docdb.count(RESULTS) == 3

    # a parameter change (run config layer) is a new job: new records
    changed = materialize(
        world,
        instance,
        key,
        assets=[DISPATCH.to_source_asset(), BY_NAME["unit_quality"]],
        run_config={"ops": {UQ_NODE: {"config": {"parameters": {"min_spikes": 10}}}}},
    )
    assert changed.success, failure_message(changed)
    new_jobs = changed.output_for_node(UQ_NODE).jobs
    assert {j.status for j in new_jobs} == {"completed"}
    assert all(j.parameters["min_spikes"] == 10 for j in new_jobs)
    assert not {j.record_name for j in new_jobs} & set(names)
    assert world.docdb.count(RESULTS) == 5

    # a grouped partition: one behaviour job over every session of the subject; unit quality
    # is not configured for that spec, so it is a no-op, not a failure
    subject = paging.partition_key_for({"subject__subject_id": "768823"})
    grouped = materialize(world, instance, subject, assets=GROUPED)
    assert grouped.success, failure_message(grouped)
    bp_group = grouped.output_for_node("analysis__foraging_by_subject__behavior_performance")
    assert bp_group.status == "completed" and len(bp_group.jobs) == 1
    sessions = [r for r in world.records if r["subject"]["subject_id"] == "768823"]
    latest = {
        r["data_description"]["input_data_name"]: r
        for r in sorted(sessions, key=lambda r: r["created"])
    }
    assert sorted(bp_group.jobs[0].asset_name) == sorted(r["name"] for r in latest.values())
    assert bp_group.jobs[0].outputs["n_sessions"] == len(bp_group.jobs[0].file_location)
    # the subject is a partition of the grouped spec only: no unit_quality asset has it
    assert subject in instance.get_dynamic_partitions("foraging_by_subject")
    assert subject not in instance.get_dynamic_partitions("ephys_units")
    assert {a.key.path[-1] for a in GROUPED} == {"dispatch", "behavior_performance"}


def test_asset_without_files_gives_an_empty_dispatch_and_a_warning(world, instance):
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    no_nwb = next(
        r
        for r in world.records
        if r["name"].startswith("ecephys_")
        and not any(i.url.endswith(".nwb") for i in world.store.list_objects(r["location"]))
    )
    assert world.store.list_objects(no_nwb["location"])  # exists, without an NWB file
    key = paging.partition_key_for(no_nwb["name"])
    result = materialize(world, instance, key)
    assert result.success, failure_message(result)
    assert result.output_for_node(DISPATCH_NODE) == []
    mat = materialization(result, "dispatch")
    assert meta(mat, "jobs") == 0
    assert no_nwb["name"] in meta(mat, "warnings")
    assert result.output_for_node(UQ_NODE).status == "no_jobs"
    assert world.docdb.count(RESULTS) == 0


def test_corrupt_nwb_fails_its_own_partition_only(world, instance):
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    bad_key, good_key = ephys_key(world, 0), ephys_key(world, 1)
    bad = world.by_name(bad_key)
    bad_file = f"{bad['location']}/nwb/{bad['name']}.nwb"
    world.store.put_bytes(bad_file, b"this is not an HDF5 file" * 50)

    failed = materialize(world, instance, bad_key)
    assert not failed.success
    message = failure_message(failed)
    assert bad_file in message and "cannot read NWB file" in message
    assert world.docdb.count(RESULTS, {"input_asset_names": bad["name"]}) == 0

    ok = materialize(world, instance, good_key)
    assert ok.success, failure_message(ok)
    assert ok.output_for_node(UQ_NODE).status == "completed"


def test_invalid_parameter_fails_naming_the_field(world, instance):
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    key = ephys_key(world, 0)
    assert materialize(world, instance, key, assets=[DISPATCH]).success
    result = materialize(
        world,
        instance,
        key,
        assets=[DISPATCH.to_source_asset(), BY_NAME["unit_quality"]],
        run_config={"ops": {UQ_NODE: {"config": {"parameters": {"min_spikes": "many"}}}}},
    )
    assert not result.success
    message = failure_message(result)
    assert "invalid parameters for analysis 'unit_quality'" in message
    assert "min_spikes" in message and "'many'" in message
    assert world.docdb.count(RESULTS) == 0


def test_dry_run_writes_nothing(world, instance):
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    key = ephys_key(world, 0)
    result = materialize(
        world,
        instance,
        key,
        assets=[DISPATCH, BY_NAME["unit_quality"]],
        run_config={"ops": {UQ_NODE: {"config": {"dry_run": True}}}},
    )
    assert result.success, failure_message(result)
    out = result.output_for_node(UQ_NODE)
    assert out.status == "dry_run" and len(out.jobs) == 2
    assert out.jobs[0].outputs["n_units"] == 8 and out.jobs[0].plots == ["unit_quality.png"]
    assert world.docdb.count(RESULTS) == 0
    assert world.store.list_objects(world.resource.results_root) == []
    assert "](data:image/png;base64," in meta(materialization(result, "unit_quality"), "plot")


def test_removed_records_remove_their_partitions_when_enabled(world, instance):
    world.seed(files=False)
    first = tick(world, instance, "ephys_units", None, remove_gone=True)
    apply(instance, first)
    key = ephys_key(world, 1)
    record = world.by_name(key)
    world.docdb.delete_many(ASSETS, {"_id": record["_id"]})

    off = tick(world, instance, "ephys_units", first.cursor)  # remove_gone is off by default
    assert not any(
        isinstance(r, dg.DeleteDynamicPartitionsRequest) for r in off.dynamic_partitions_requests
    )

    # the sweep visits one partition-map chunk per tick, round robin: within a round it finds it
    cursor, deleted, on = first.cursor, [], None
    chunks = len(world.resource.partition_map().chunks("ephys_units", after=None, limit=100))
    for _ in range(chunks + 1):
        on = tick(world, instance, "ephys_units", cursor, remove_gone=True)
        cursor = on.cursor
        deleted += [
            k
            for r in on.dynamic_partitions_requests
            if isinstance(r, dg.DeleteDynamicPartitionsRequest)
            for k in r.partition_keys
        ]
        apply(instance, on)
        if deleted:
            break
    assert deleted == [key]
    assert world.resource.partition_map().get(key) is None
    assert key not in instance.get_dynamic_partitions("ephys_units")
    assert len(instance.get_dynamic_partitions("ephys_units")) == len(first.run_requests) - 1


def test_the_embedded_default_local_store_end_to_end(docdb, local_store, demo_nwb_dir, instance):
    """`scripts/run` keeps data assets in a local directory: locations and files are paths."""
    from aind_assets_tests.analysis.conftest import make_resource

    world = World(
        docdb=docdb,
        store=local_store,
        nwb_dir=demo_nwb_dir,
        assets_root=local_store.url("data-assets"),
        resource=make_resource(docdb, local_store),
    )
    world.seed()
    apply(instance, tick(world, instance, "ephys_units", None))
    key = ephys_key(world, 0)
    result = materialize(world, instance, key, assets=[DISPATCH, BY_NAME["unit_quality"]])
    assert result.success, failure_message(result)
    (model, *_) = result.output_for_node(DISPATCH_NODE)
    assert model.file_location[0].startswith(local_store.root + "/data-assets/")
    jobs = result.output_for_node(UQ_NODE).jobs
    assert [j.status for j in jobs] == ["completed", "completed"]
    assert all(j.results_location.startswith(local_store.root) for j in jobs)
    assert (local_store.upath(jobs[0].results_location) / "unit_quality.png").exists()


def test_asset_code_versions_follow_analysis_versions_and_fixed_parameters(tmp_path):
    uq = BY_NAME["unit_quality"]
    assert uq.code_versions_by_key[uq.key] == REGISTRY.get("unit_quality").code_version(
        {"ephys_units": {"min_spikes": 50}}
    )
    # a changed fixed parameter changes the code version (the asset shows as stale)
    text = __import__("aind_assets.analysis.config", fromlist=["x"]).EXAMPLE_DISPATCH_CONFIG
    changed = tmp_path / "dispatch.yaml"
    changed.write_text(text.read_text().replace("min_spikes: 50", "min_spikes: 60"))
    config = load_dispatch_config(changed, known_analyses=REGISTRY.names())
    rebuilt = build_assets(config, list(REGISTRY))
    new_uq = next(a for a in rebuilt if a.key == uq.key)
    assert new_uq.code_versions_by_key[uq.key] != uq.code_versions_by_key[uq.key]
    bp = BY_NAME["behavior_performance"]
    assert (
        next(a for a in rebuilt if a.key == bp.key).code_versions_by_key[bp.key]
        == (bp.code_versions_by_key[bp.key])
    )
    for asset in ASSET_DEFS:  # --partition-range needs single-run backfill policies
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()


def test_records_name_the_experimenter_of_the_run_tag_or_the_settings(world, instance):
    """A run's ``aind/experimenter`` tag names the experimenter of its result records; without
    one, the resource's (``AIND_EXPERIMENTER``) does."""
    world.seed()
    for spec_name in CONFIG.names:
        apply(instance, tick(world, instance, spec_name, None))
    first, second = ephys_key(world, 0), ephys_key(world, 1)
    assets = [DISPATCH, BY_NAME["behavior_performance"]]

    tagged = dg.materialize(
        assets,
        partition_key=first,
        instance=instance,
        resources=world.resources(experimenter="from.settings@example.org"),
        tags={"aind/experimenter": "jane.doe@example.org"},
        raise_on_error=False,
    )
    assert tagged.success, failure_message(tagged)
    untagged = materialize(
        world, instance, second, assets=assets, experimenter="from.settings@example.org"
    )
    assert untagged.success, failure_message(untagged)

    by_asset = {}
    for doc in world.docdb.find(RESULTS, {}):
        process = Metadata.model_validate(doc).processing.data_processes[0]
        by_asset[process.code.input_data[0].url] = process.experimenters
    assert by_asset == {
        world.by_name(first)["location"]: ["jane.doe@example.org"],
        world.by_name(second)["location"]: ["from.settings@example.org"],
    }
