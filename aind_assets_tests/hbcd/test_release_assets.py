"""End to end in Dagster on the real S3 server and Mongo-wire DocDB: identified BIDS ->
de-identified (the real de-identification rules) -> processed (a real tiny segmentation, CBRAIN
layout and manifests) -> registered spec -> release_ready_sessions -> release_staging (+ its
blocking checks) -> release_summary; then a second release and its diff; then tampering that
the checks catch."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
from aind_data_schema.core.processing import Processing

from aind_assets.hbcd import staging
from aind_assets.hbcd.leaks import scan_for_identifiers
from aind_assets.hbcd.release import load_release_spec
from aind_assets.hbcd.release_assets import (
    READY_KEY,
    RELEASES,
    STAGING_KEY,
    SUMMARY_KEY,
    HbcdReleaseResource,
    release_ready_sessions,
    release_specs_sensor,
    release_staging,
    release_summary,
)
from aind_assets.hbcd.release_checks import release_bids_valid, release_no_identifiers
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource, join_url, relative_key
from aind_assets_tests.hbcd.release_support import (
    SPEC_YAML,
    build_release_data,
    expected_scans,
    session_files,
)

pytestmark = pytest.mark.servers
ASSETS = [release_ready_sessions, release_staging, release_summary]
CHECKS = [release_bids_valid, release_no_identifiers]


def _tsv_lines(text: str, keep) -> str:  # noqa: ANN001
    lines = text.splitlines(keepends=True)
    return lines[0] + "".join(line for line in lines[1:] if keep(line.split("\t", 1)[0]))


def _release_files(store: ObjectStoreResource, url: str) -> dict[str, bytes]:
    return {relative_key(i.url, url): store.get_bytes(i.url) for i in store.list(url)}


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
        identity_map=map_url,
    )
    resources = {
        "hbcd_release": res,
        "io_manager": ObjectStoreIOManager(
            object_store=store, docdb=docdb, root=store.url("io"), records_collection="records"
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    return store, data, res, resources, instance, docdb


def _register(res: HbcdReleaseResource, instance: dg.DagsterInstance, yaml_text: str) -> str:
    spec = load_release_spec(yaml_text, "test spec")
    staging.write_spec(res.object_store, res.specs_root, res.staging_root, spec)
    # the sensor turns registered specs into partitions (Dagster does not apply them in tests)
    with dg.build_sensor_context(instance=instance, resources={"hbcd_release": res}) as ctx:
        result = release_specs_sensor(ctx)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [[spec.release]]
    instance.add_dynamic_partitions(RELEASES.name, [spec.release])
    return spec.release


def _run(resources, instance, release: str, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, *CHECKS],
        partition_key=release,
        resources=resources,
        instance=instance,
        **kw,
    )


def test_identified_to_staged_release(setup):
    store, data, res, resources, instance, docdb = setup
    release = _register(res, instance, SPEC_YAML)
    result = _run(resources, instance, release)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {
        "bids_valid",
        "no_identifiers",
    }

    A, B, C, D = (data.rc(i) for i in range(4))
    deid = res.deidentified_root
    hbcd = join_url(res.staging_root, release, "hbcd")
    files = _release_files(store, hbcd)

    # -- rawdata: exactly the release-ready files, with rebuilt tables
    def raw(i: int, ses: str, kinds: list[str]) -> set[str]:
        sub = data.rc(i)
        out = {f"rawdata/sub-{sub}/ses-{ses}/sub-{sub}_ses-{ses}_scans.tsv"}
        for k, rel in session_files(data, i, ses).items():
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

    assert files[f"rawdata/sub-{A}/ses-V02/sub-{A}_ses-V02_scans.tsv"].decode() == expected_scans(
        data, 0, "V02", ["anat", "func", "fmap"]
    )
    assert files[f"rawdata/sub-{A}/ses-V03/sub-{A}_ses-V03_scans.tsv"].decode() == expected_scans(
        data, 0, "V03", ["anat", "func"]
    )
    assert files[f"rawdata/sub-{B}/ses-V02/sub-{B}_ses-V02_scans.tsv"].decode() == expected_scans(
        data, 1, "V02", ["anat", "func", "fmap"]
    )
    assert files[f"rawdata/sub-{C}/ses-V02/sub-{C}_ses-V02_scans.tsv"].decode() == expected_scans(
        data, 2, "V02", ["anat", "fmap"]
    )
    source = (data.deidentified / "assembly_bids" / "participants.tsv").read_text()
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
        src = (
            data.deidentified / "assembly_bids" / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
        ).read_text()
        assert text == _tsv_lines(src, lambda sid, sessions=sessions: sid in sessions)
        assert [line.split("\t")[0] for line in text.splitlines()[1:]] == sessions
    description = json.loads(files["rawdata/dataset_description.json"])
    assert description["DatasetType"] == "raw"
    assert description["GeneratedBy"][-1]["Name"] == "aind-assets hbcd/release_staging"

    # -- derivatives: squashed, only released sessions, only the spec's pipelines
    deriv = {p for p in files if p.startswith("derivatives/")}
    outputs = (
        "space-T1w_desc-brain_mask.nii.gz",
        "space-T1w_desc-aseg_dseg.nii.gz",
        "space-T1w_desc-aseg_dseg.json",
    )
    assert deriv == {"derivatives/bibsnet/dataset_description.json"} | {
        f"derivatives/bibsnet/sub-{s}/ses-{ses}/anat/sub-{s}_ses-{ses}_{o}"
        for s, ses in ((A, "V02"), (A, "V03"), (C, "V02"))
        for o in outputs
    }
    mask = f"sub-{A}/ses-V03/anat/sub-{A}_ses-V03_{outputs[0]}"
    assert files[f"derivatives/bibsnet/{mask}"] == store.get_bytes(
        f"{deid}/derivatives/ses-V03/bibsnet/{mask}"
    )

    # -- no identifier anywhere in the staged release (names and content)
    ids = data.idmap.identifiers()
    assert [f for p, b in files.items() for f in scan_for_identifiers(p, b, ids)] == []
    # (content is checked token-wise: participants.tsv's medication_code embeds a DCCID in a
    # longer number, by design of the demo data; paths must not contain one at all)
    for row in data.idmap.rows:
        for value in (row.dccid, row.pscid):
            assert not any(value in p for p in files)

    # -- marker, processing records (beside the release, beside each output, in DocDB)
    rel_url = join_url(res.staging_root, release)
    marker = staging.read_marker(store, res.staging_root, release)
    assert marker["counts"]["files"] == len(files)
    assert {f["path"] for f in marker["files"]} == {f"hbcd/{p}" for p in files}
    Processing.model_validate_json(store.get_bytes(join_url(rel_url, "processing.json")))
    for key in (READY_KEY, STAGING_KEY, SUMMARY_KEY):
        out = store.url("io", *key.path, release)
        Processing.model_validate_json(store.get_bytes(join_url(out, "processing.json")))
        record = docdb.find_one("records", {"asset_key": key.to_user_string()})
        assert record is not None and record["partition_key"] == release
    selection = pd.read_parquet(
        store.open(store.url("io", *READY_KEY.path, release, "value.parquet"))
    )
    reasons = dict(
        zip(
            selection[selection.kind == "session"].session,
            selection[selection.kind == "session"].reason,
            strict=True,
        )
    )
    assert reasons == {
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
    assert summary[["subject", "session", "pipeline", "files"]].values.tolist() == sorted(
        [
            [f"sub-{A}", "ses-V02", "bibsnet", 3],
            [f"sub-{A}", "ses-V03", "bibsnet", 3],
            [f"sub-{C}", "ses-V02", "bibsnet", 3],
        ]
    )
    csv = pd.read_csv(store.open(join_url(loris, "derivatives_changes.csv")))
    assert set(csv["change"]) == {"added"}

    # -- re-running the complete release changes nothing
    before = {
        i.url: (i.etag, i.last_modified) for i in store.list(rel_url) if "/loris/" not in i.url
    }
    again = _run(resources, instance, release)
    assert again.success
    staged = again.asset_materializations_for_node("hbcd__release_staging")[0].metadata
    assert staged["status"].value == "unchanged"
    assert {
        i.url: (i.etag, i.last_modified) for i in store.list(rel_url) if "/loris/" not in i.url
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
    dseg = f"{deid}/derivatives/ses-V03/bibsnet/sub-{A}/ses-V03/anat/sub-{A}_ses-V03_{outputs[2]}"
    store.put_bytes(dseg, b'{"Description": "rerun"}\n')
    r2 = _register(res, instance, SPEC_YAML.replace("release: r1", "release: r2"))
    result = _run(resources, instance, r2)
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


def test_checks_catch_a_bad_name_a_missing_file_and_a_leak(setup):
    store, data, res, resources, instance, _ = setup
    release = _register(res, instance, SPEC_YAML)
    assert _run(resources, instance, release).success
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

    result = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=dg.AssetSelection.checks(*CHECKS),
        partition_key=release,
        resources=resources,
        instance=instance,
        raise_on_error=False,
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
