"""End to end in Dagster on the real S3 server and Mongo-wire DocDB: identified BIDS ->
de-identified (the real de-identification rules) -> processed (a real tiny segmentation, CBRAIN
layout and manifests) -> registered spec -> release_ready_sessions -> release_staging (+ its
blocking checks) -> release_summary; then a second release and its diff; then tampering that
the checks catch."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pandas as pd
import pytest
from aind_data_schema.core.processing import Processing

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import scan_for_identifiers
from aind_assets.hbcd.release import specs, staging
from aind_assets.hbcd.release.assets import release_ready_sessions, release_staging, release_summary
from aind_assets.hbcd.release.checks import release_bids_valid, release_no_identifiers
from aind_assets.hbcd.release.resources import (
    READY_KEY,
    RELEASES,
    STAGING_KEY,
    SUMMARY_KEY,
    HbcdReleaseResource,
)
from aind_assets.hbcd.release.sensors import release_specs_sensor
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.hbcd.resources import IdentityMapResource
from aind_assets.io_managers.commit import committed_folder, url_of
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key
from aind_assets_tests.hbcd.release.support import (
    SPEC_YAML,
    build_release_data,
    expected_scans,
    files_of,
    session_files,
)

pytestmark = pytest.mark.servers
RECORDS = "processing_records"
BIBSNET_OUTPUTS = (
    "space-T1w_desc-brain_mask.nii.gz",
    "space-T1w_desc-aseg_dseg.nii.gz",
    "space-T1w_desc-aseg_dseg.json",
    "space-T1w_desc-brain_mask.json",
)
ASSETS = [release_ready_sessions, release_staging, release_summary]
CHECKS = [release_bids_valid, release_no_identifiers]


def _tsv_lines(text: str, keep) -> str:  # noqa: ANN001
    lines = text.splitlines(keepends=True)
    return lines[0] + "".join(line for line in lines[1:] if keep(line.split("\t", 1)[0]))


def _release_files(store: ObjectStoreResource, url: str) -> dict[str, bytes]:
    return {relative_key(i.url, url): store.get_bytes(i.url) for i in store.list_objects(url)}


@pytest.fixture
def setup(s3_store: ObjectStoreResource, docdb: DocDBResource, tmp_path):
    store = s3_store
    data = build_release_data(tmp_path)
    deid = store.url("hbcd-deid")
    store.put_tree(data.deidentified, deid)
    map_url = store.url("hbcd-pr/identifiers/release_identifiers.csv")
    store.put_bytes(map_url, data.map_csv.encode())
    res = HbcdReleaseResource(
        object_store=store,
        deidentified_root=deid,
        staging_root=store.url("hbcd-staging"),
        specs_root=store.url("io/hbcd/release_specs"),
        identity_map=IdentityMapResource(object_store=store, url=map_url),
    )
    resources = {
        "hbcd_release": res,
        "docdb": docdb,
        "io_manager": ObjectStoreIOManager(
            object_store=store, docdb=docdb, root=store.url("io"), records_collection=RECORDS
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    return store, data, res, resources, instance, docdb


def register_release(res: HbcdReleaseResource, instance: dg.DagsterInstance, yaml_text: str) -> str:
    spec = load_release_spec(yaml_text, "test spec")
    specs.write_spec(res.object_store, res.specs_root, res.staging_root, spec)
    # the sensor turns registered specs into partitions (Dagster does not apply them in tests)
    with dg.build_sensor_context(instance=instance, resources={"hbcd_release": res}) as ctx:
        result = release_specs_sensor(ctx)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [[spec.release]]
    instance.add_dynamic_partitions(RELEASES.name, [spec.release])
    return spec.release


def run_release(resources, instance, release: str, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, *CHECKS],
        partition_key=release,
        resources=resources,
        instance=instance,
        **kw,
    )


def check_first_release(
    store: ObjectStoreResource,
    res: HbcdReleaseResource,
    idmap: IdentityMap,
    result: dg.ExecuteInProcessResult,
    release: str,
    *,
    io_root: str,
    docdb: DocDBResource,
    also_pipelines: tuple[str, ...] = (),
) -> dict[str, bytes]:
    """Everything the first release of :mod:`release_support`'s data must be; returns its files
    (relative to ``<release>/hbcd/``)."""
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name: e.passed for e in evaluations} == {
        "bids_valid": True,
        "no_identifiers": True,
    }
    A, B, C, D = (idmap.rows[i].rc_id for i in range(4))
    deid = res.deidentified_root
    bids = join_url(deid, "assembly_bids")
    hbcd = join_url(res.staging_root, release, "hbcd")
    files = _release_files(store, hbcd)

    # -- rawdata: exactly the release-ready files, with rebuilt tables
    def raw(i: int, ses: str, kinds: list[str]) -> set[str]:
        sub = idmap.rows[i].rc_id
        out = {f"rawdata/sub-{sub}/ses-{ses}/sub-{sub}_ses-{ses}_scans.tsv"}
        for k, rel in files_of(sub, ses).items():
            if k in kinds:
                base = f"rawdata/sub-{sub}/ses-{ses}/{rel}"
                out |= {base, base.replace(".nii.gz", ".json")}
        return out

    expected_raw = (
        {
            "rawdata/dataset_description.json",
            "rawdata/README",
            "rawdata/participants.tsv",
            "rawdata/participants.json",
        }
        | {f"rawdata/sub-{s}/sub-{s}_sessions.{e}" for s in (A, B, C) for e in ("tsv", "json")}
        | raw(0, "V02", ["anat", "func", "fmap"])
        | raw(0, "V03", ["anat", "func"])  # T1w below QC but used by bibsnet; epi below QC
        | raw(1, "V02", ["anat", "func", "fmap"])  # T1w below QC but used by bibsnet
        | raw(2, "V02", ["anat", "fmap"])  # bold below QC, not processed
    )
    assert {p for p in files if p.startswith("rawdata/")} == expected_raw
    for i, ses, kept in (
        (0, "V02", ["anat", "func", "fmap"]),
        (0, "V03", ["anat", "func"]),
        (1, "V02", ["anat", "func", "fmap"]),
        (2, "V02", ["anat", "fmap"]),
    ):
        sub = idmap.rows[i].rc_id
        got = files[f"rawdata/sub-{sub}/ses-{ses}/sub-{sub}_ses-{ses}_scans.tsv"].decode()
        assert got == expected_scans(i, ses, sub, kept)
    source = store.get_bytes(f"{bids}/participants.tsv").decode()
    participants = files["rawdata/participants.tsv"].decode()
    assert participants == _tsv_lines(source, lambda pid: pid in {f"sub-{s}" for s in (A, B, C)})
    assert [line.split("\t")[0] for line in participants.splitlines()] == [
        "participant_id",
        f"sub-{A}",
        f"sub-{B}",
        f"sub-{C}",
    ]
    for sub, sessions in ((A, ["ses-V02", "ses-V03"]), (B, ["ses-V02"]), (C, ["ses-V02"])):
        text = files[f"rawdata/sub-{sub}/sub-{sub}_sessions.tsv"].decode()
        src = store.get_bytes(f"{bids}/sub-{sub}/sub-{sub}_sessions.tsv").decode()
        assert text == _tsv_lines(src, lambda sid, sessions=sessions: sid in sessions)
        assert [line.split("\t")[0] for line in text.splitlines()[1:]] == sessions
    description = json.loads(files["rawdata/dataset_description.json"])
    assert description["DatasetType"] == "raw"
    assert description["GeneratedBy"][-1]["Name"] == "aind-assets hbcd/release_staging"

    # -- fieldmaps: IntendedFor never names a file the release leaves out
    for i, bold_released in ((0, True), (1, True), (2, False)):
        sub = idmap.rows[i].rc_id
        rel = f"sub-{sub}/ses-V02/" + files_of(sub, "V02")["fmap"].replace(".nii.gz", ".json")
        source = store.get_bytes(f"{bids}/{rel}")
        if bold_released:  # nothing to prune: copied byte for byte
            assert files[f"rawdata/{rel}"] == source
        else:
            expected = json.loads(source)
            assert len(expected.pop("IntendedFor")) == 2  # both point at the excluded bold
            assert json.loads(files[f"rawdata/{rel}"]) == expected

    # -- derivatives: squashed, only released sessions, only the spec's pipelines
    deriv = {p for p in files if p.startswith("derivatives/bibsnet/")}
    assert deriv == {"derivatives/bibsnet/dataset_description.json"} | {
        f"derivatives/bibsnet/sub-{s}/ses-{ses}/anat/sub-{s}_ses-{ses}_{o}"
        for s, ses in ((A, "V02"), (A, "V03"), (C, "V02"))
        for o in BIBSNET_OUTPUTS
    }
    assert {p.split("/")[1] for p in files if p.startswith("derivatives/")} == {
        "bibsnet",
        *also_pipelines,
    }
    for pipeline in also_pipelines:  # every released session, none other
        sessions = {
            tuple(p.split("/")[2:4]) for p in files if p.startswith(f"derivatives/{pipeline}/sub-")
        }
        assert sessions == {
            (f"sub-{A}", "ses-V02"),
            (f"sub-{A}", "ses-V03"),
            (f"sub-{B}", "ses-V02"),
            (f"sub-{C}", "ses-V02"),
        }
    mask = f"sub-{A}/ses-V03/anat/sub-{A}_ses-V03_{BIBSNET_OUTPUTS[0]}"
    assert files[f"derivatives/bibsnet/{mask}"] == store.get_bytes(
        f"{deid}/derivatives/ses-V03/bibsnet/{mask}"
    )

    # -- no identifier anywhere in the staged release (names and content)
    ids = idmap.identifiers()
    assert [f for p, b in files.items() for f in scan_for_identifiers(p, b, ids)] == []
    # (content is checked token-wise: participants.tsv's medication_code embeds a DCCID in a
    # longer number, by design of the demo data; paths must not contain one at all)
    for row in idmap.rows:
        for value in (row.dccid, row.pscid):
            assert not any(value in p for p in files)

    # -- marker, processing records (beside the release, beside each output, in DocDB)
    rel_url = join_url(res.staging_root, release)
    marker = staging.read_marker(store, res.staging_root, release)
    assert marker["counts"]["files"] == len(files)
    assert {f["path"] for f in marker["files"]} == {f"hbcd/{p}" for p in files}
    Processing.model_validate_json(store.get_bytes(join_url(rel_url, "processing.json")))
    for key in (READY_KEY, STAGING_KEY, SUMMARY_KEY):
        out = url_of(committed_folder(store.upath(join_url(io_root, *key.path, release))))
        Processing.model_validate_json(store.get_bytes(join_url(out, "processing.json")))
        record = docdb.find_one(RECORDS, {"asset_key": key.to_user_string()})
        assert record is not None and record["partition_key"] == release
    selection = pd.read_parquet(
        store.open(
            join_url(
                url_of(committed_folder(store.upath(join_url(io_root, *READY_KEY.path, release)))),
                "value.parquet",
            )
        )
    )
    sessions = selection[selection.kind == "session"]
    assert dict(zip(sessions.session, sessions.reason, strict=True)) == {
        f"sub-{A}_ses-V02": "",
        f"sub-{A}_ses-V03": "",
        f"sub-{B}_ses-V02": "",
        f"sub-{B}_ses-V03": "no file passes QC",
        f"sub-{C}_ses-V02": "",
        f"sub-{C}_ses-V03": f"no sub-{C}_ses-V03_scans.tsv",
        f"sub-{D}_ses-V02": "no file passes QC",
        f"sub-{D}_ses-V03": "no file passes QC",
    }
    ready_meta = result.asset_materializations_for_node("hbcd__release_ready_sessions")[0].metadata
    assert "fails bibsnet QC" in ready_meta["excluded"].value
    assert ready_meta["ready_sessions"].value == 4

    # -- LORIS summary (no previous release: everything added)
    loris = join_url(rel_url, "loris")
    summary = pd.read_parquet(store.open(join_url(loris, "derivatives_summary.parquet")))
    bib = summary[summary.pipeline == "bibsnet"]
    assert bib[["subject", "session", "files"]].values.tolist() == sorted(
        [[f"sub-{A}", "ses-V02", 4], [f"sub-{A}", "ses-V03", 4], [f"sub-{C}", "ses-V02", 4]]
    )
    csv = pd.read_csv(store.open(join_url(loris, "derivatives_changes.csv")))
    assert set(csv["change"]) == {"added"}
    return files


def test_identified_to_staged_release(setup):
    store, data, res, resources, instance, docdb = setup
    release = register_release(res, instance, SPEC_YAML)
    result = run_release(resources, instance, release)
    files = check_first_release(
        store, res, data.idmap, result, release, io_root=store.url("io"), docdb=docdb
    )
    A, B, C = data.rc(0), data.rc(1), data.rc(2)
    deid = res.deidentified_root
    rel_url = join_url(res.staging_root, release)
    assert len(files) == 47

    # -- re-running the complete release changes nothing
    before = {
        i.url: (i.etag, i.last_modified)
        for i in store.list_objects(rel_url)
        if "/loris/" not in i.url
    }
    again = run_release(resources, instance, release)
    assert again.success
    staged = again.asset_materializations_for_node("hbcd__release_staging")[0].metadata
    assert staged["status"].value == "unchanged"
    assert {
        i.url: (i.etag, i.last_modified)
        for i in store.list_objects(rel_url)
        if "/loris/" not in i.url
    } == before

    # -- a second release: one session's derivatives removed, one replaced, one added
    scans = f"{deid}/assembly_bids/sub-{A}/ses-V02/sub-{A}_ses-V02_scans.tsv"
    store.put_bytes(
        scans,
        store.get_bytes(scans).replace(
            b"T1w.nii.gz\t2024-03-01T10:00:00\tYes", b"T1w.nii.gz\t2024-03-01T10:00:00\tNo"
        ),
    )
    scans = f"{deid}/assembly_bids/sub-{B}/ses-V02/sub-{B}_ses-V02_scans.tsv"
    store.put_bytes(
        scans,
        store.get_bytes(scans).replace(
            b"T1w.nii.gz\t2024-03-01T10:00:00\tNo", b"T1w.nii.gz\t2024-03-01T10:00:00\tYes"
        ),
    )
    dseg = f"{deid}/derivatives/ses-V03/bibsnet/sub-{A}/ses-V03/anat/sub-{A}_ses-V03_{BIBSNET_OUTPUTS[2]}"
    rerun = {**json.loads(store.get_bytes(dseg)), "Description": "rerun"}
    store.put_bytes(dseg, (json.dumps(rerun) + "\n").encode())
    r2 = register_release(res, instance, SPEC_YAML.replace("release: r1", "release: r2"))
    result = run_release(resources, instance, r2)
    assert result.success
    changes = result.output_for_node("hbcd__release_summary")
    got = {(r.subject, r.session): r.change for r in changes.itertuples()}
    assert got == {
        (f"sub-{A}", "ses-V02"): "removed",
        (f"sub-{A}", "ses-V03"): "replaced",
        (f"sub-{B}", "ses-V02"): "added",
        (f"sub-{C}", "ses-V02"): "unchanged",
    }
    meta = result.asset_materializations_for_node("hbcd__release_summary")[0].metadata
    assert meta["previous_release"].value == "r1"
    assert (meta["added"].value, meta["removed"].value, meta["replaced"].value) == (1, 1, 1)


def test_one_staging_per_release_at_a_time(setup):
    store, data, res, resources, instance, docdb = setup
    release = register_release(res, instance, SPEC_YAML)
    # another run is staging this release right now (its lease is in DocDB)
    other = instance.add_run(
        dg.DagsterRun(
            job_name="hbcd_release", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
        )
    )
    lease = f"hbcd/release_staging/{release}"
    docdb.insert_unique("leases", {"name": lease, "holder": other.run_id, "since": "now"})
    result = run_release(resources, instance, release, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert f"release {release} is being staged by run {other.run_id}" in (
        failure.step_failure_data.error.message
    )
    assert staging.read_marker(store, res.staging_root, release) is None
    assert not list(store.list_objects(join_url(res.staging_root, release)))  # nothing written
    # that run died: the next run takes its lease over, stages the release, and lets go
    instance.report_run_failed(other)
    assert run_release(resources, instance, release).success
    assert staging.read_marker(store, res.staging_root, release) is not None
    assert docdb.count("leases", {"name": lease}) == 0


def test_checks_catch_a_bad_name_a_missing_file_and_a_leak(setup):
    store, data, res, resources, instance, _ = setup
    release = register_release(res, instance, SPEC_YAML)
    assert run_release(resources, instance, release).success
    A = data.rc(0)
    ses = join_url(res.staging_root, release, "hbcd", "rawdata", f"sub-{A}", "ses-V02")
    t1 = session_files(data, 0, "V02")["anat"]
    # a deliberately bad file name, and a scans.tsv row for a file that is not there
    store.copy(f"{ses}/{t1}", f"{ses}/{t1.replace('_T1w', '_T1w_defaced')}")
    scans = f"{ses}/sub-{A}_ses-V02_scans.tsv"
    store.put_bytes(scans, store.get_bytes(scans) + b"anat/gone_T1w.nii.gz\tn/a\tYes\t1\n")
    # an identifier planted in a sidecar
    sidecar = f"{ses}/{t1.replace('.nii.gz', '.json')}"
    store.put_bytes(sidecar, json.dumps({"PatientID": data.idmap.rows[0].dccid}).encode())

    # the checks alone (as the UI's "Execute checks"): they check the latest staged release
    job = dg.define_asset_job("release_checks", selection=dg.AssetSelection.checks(*CHECKS))
    defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=[job], resources=resources)
    result = defs.resolve_job_def("release_checks").execute_in_process(
        instance=instance, raise_on_error=False
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    bids, leaks = evaluations["bids_valid"], evaluations["no_identifiers"]
    assert not bids.passed and not leaks.passed
    details = bids.metadata["details"].value
    assert f"{t1.replace('_T1w', '_T1w_defaced')}".rsplit("/", 1)[1] in details
    assert "bids-path" in details
    assert "line 5: anat/gone_T1w.nii.gz is listed but missing" in details
    assert "not in the marker's manifest" in details
    assert leaks.metadata["findings"].value >= 1
    assert data.idmap.rows[0].dccid not in leaks.metadata["details"].value
    assert "checksum" in leaks.metadata["details"].value


def test_sensor_registers_valid_specs_and_definitions_load(
    local_store: ObjectStoreResource, tmp_path
):
    res = HbcdReleaseResource(
        object_store=local_store,
        deidentified_root=local_store.url("deid"),
        staging_root=local_store.url("staging"),
        specs_root=local_store.url("specs"),
        identity_map=IdentityMapResource(object_store=local_store, url=local_store.url("m.csv")),
    )
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"hbcd_release": res}) as ctx:
        assert release_specs_sensor(ctx).skip_reason is not None  # nothing registered
    local_store.put_bytes(local_store.url("specs", "r1.yaml"), SPEC_YAML.encode())
    local_store.put_bytes(local_store.url("specs", "r2.yaml"), SPEC_YAML.encode())  # says r1
    local_store.put_bytes(local_store.url("specs", "r3.yaml"), b"release: r3\nqc: 5\n")
    with dg.build_sensor_context(instance=instance, resources={"hbcd_release": res}) as ctx:
        result = release_specs_sensor(ctx)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["r1"]]
    instance.add_dynamic_partitions(RELEASES.name, ["r1"])
    with dg.build_sensor_context(instance=instance, resources={"hbcd_release": res}) as ctx:
        assert release_specs_sensor(ctx).dynamic_partitions_requests == []

    from aind_assets.definitions import build_resources
    from aind_assets.hbcd.release.definitions import build_release_definitions
    from aind_assets.settings import Settings

    settings = Settings.from_env({"AIND_DATA_DIR": str(tmp_path)})
    defs = dg.Definitions.merge(  # with the platform's resources, as definitions.py wires it
        dg.Definitions(resources=build_resources(settings)), build_release_definitions(settings)
    )
    job = defs.resolve_job_def("hbcd_release")
    assert job.partitions_def == RELEASES
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} >= {
        "hbcd/release_ready_sessions",
        "hbcd/release_staging",
        "hbcd/release_summary",
    }
