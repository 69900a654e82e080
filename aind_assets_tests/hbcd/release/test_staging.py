"""Staging on the real S3 server (and a local directory): atomic, idempotent, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aind_data_schema.core.processing import Processing
from pydantic import PrivateAttr

from aind_assets.hbcd.release import plan, staging
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.hbcd.release.squash import SquashConflictError
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key
from aind_assets_tests.hbcd.release.support import SPEC_YAML, ReleaseData, build_release_data

SPEC = load_release_spec(SPEC_YAML, "test spec")


class FailingCopyStore(ObjectStoreResource):
    """The real store whose ``fail_at``-th copy raises, as a dropped connection would."""

    fail_at: int = 0
    _copies: int = PrivateAttr(default=0)

    def copy(self, src, dst, **kwargs):  # noqa: ANN001, ANN003
        with self._lock:
            self._copies += 1
            n = self._copies
        if n == self.fail_at:
            raise ConnectionError(f"injected failure at copy {n}")
        super().copy(src, dst, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ReleaseData:
    return build_release_data(tmp_path_factory.mktemp("release"))


def _roots(store: ObjectStoreResource, data: ReleaseData) -> tuple[str, str]:
    deid, staging_root = store.url("deid"), store.url("staging")
    store.put_tree(data.deidentified, deid)
    return deid, staging_root


def _stage(store, data, deid, staging_root, run_id, decisions=None, **kw):
    decisions = decisions or plan.select_sessions(store, SPEC, deid)
    return staging.stage_release(
        store,
        SPEC,
        decisions,
        deid_root=deid,
        staging_root=staging_root,
        run_id=run_id,
        identifiers=data.idmap,
        **kw,
    )


def _state(store: ObjectStoreResource, url: str) -> dict[str, tuple]:
    return {
        relative_key(i.url, url): (i.size, i.etag, i.last_modified) for i in store.list_objects(url)
    }


def test_stage_then_rerun_changes_nothing(store: ObjectStoreResource, data: ReleaseData):
    deid, staging_root = _roots(store, data)
    result = _stage(store, data, deid, staging_root, "run-1")
    assert result.status == "staged"
    rel = join_url(staging_root, "r1")
    marker = json.loads(store.get_bytes(join_url(rel, "_COMPLETE")))
    listing = _state(store, rel)
    # nothing else than the release, its record and its marker; the temporary copy is gone
    assert {k.split("/", 1)[0] for k in listing} == {"hbcd", "processing.json", "_COMPLETE"}
    promoted = {k: v[0] for k, v in listing.items() if k.startswith("hbcd/")}
    assert promoted == {f["path"]: f["size"] for f in marker["files"]}
    assert marker["counts"]["files"] == len(promoted) == 47
    assert marker["counts"]["sessions"] == 4 and marker["counts"]["subjects"] == 3
    assert marker["counts"]["sessions_per_pipeline"] == {"bibsnet": 3}
    assert all(len(f["sha256"]) == 64 for f in marker["files"])
    record = Processing.model_validate_json(store.get_bytes(join_url(rel, "processing.json")))
    process = record.data_processes[0]
    assert process.code.parameters.model_dump()["release_spec"]["release"] == "r1"
    assert marker["processing_record"]["name"]

    again = _stage(store, data, deid, staging_root, "run-2")
    assert again.status == "unchanged"
    assert _state(store, rel) == listing  # same objects, same ETags, same timestamps


@pytest.mark.parametrize("fail_at", [20, 60], ids=["while-copying", "while-promoting"])
def test_failure_midway_leaves_no_marker_and_rerun_completes(
    s3_store: ObjectStoreResource, data: ReleaseData, fail_at: int
):
    store = s3_store
    deid, staging_root = _roots(store, data)
    decisions = plan.select_sessions(store, SPEC, deid)
    flaky = FailingCopyStore(
        root=store.root,
        endpoint_url=store.endpoint_url,
        access_key_id=store.access_key_id,
        secret_access_key=store.secret_access_key,
        fail_at=fail_at,
    )
    with pytest.raises(ConnectionError, match="injected failure"):
        _stage(flaky, data, deid, staging_root, "run-1", decisions)
    rel = join_url(staging_root, "r1")
    left = _state(store, rel)
    assert left, "the failed run wrote part of the release"
    assert "_COMPLETE" not in left and staging.read_marker(store, staging_root, "r1") is None
    if fail_at == 60:  # promotion had started: part of hbcd/ exists, still without a marker
        assert any(k.startswith("hbcd/") for k in left)

    result = _stage(store, data, deid, staging_root, "run-2", decisions)
    assert result.status == "staged"
    listing = _state(store, rel)
    assert not any(k.startswith(".staging-") for k in listing)
    marker = staging.read_marker(store, staging_root, "r1")
    assert {k: v[0] for k, v in listing.items() if k.startswith("hbcd/")} == {
        f["path"]: f["size"] for f in marker["files"]
    }


def test_complete_release_is_not_changed_in_place(s3_store: ObjectStoreResource, data: ReleaseData):
    store = s3_store
    deid, staging_root = _roots(store, data)
    _stage(store, data, deid, staging_root, "run-1")
    # a QC value changes: the release-ready data differ
    rc = data.rc(0)
    scans = f"{deid}/assembly_bids/sub-{rc}/ses-V02/sub-{rc}_ses-V02_scans.tsv"
    text = store.get_bytes(scans).decode()
    store.put_bytes(scans, text.replace("\tYes\t1\n", "\tNo\t1\n", 1).encode())
    # A's V02 T1w now fails QC: kept (bibsnet used it) but its bibsnet outputs fail bibsnet QC
    with pytest.raises(
        staging.ReleaseAlreadyCompleteError, match=r"0 file\(s\) added, 4 removed, 1 changed"
    ):
        _stage(store, data, deid, staging_root, "run-2")
    assert staging.read_marker(store, staging_root, "r1")["run_id"] == "run-1"
    result = _stage(store, data, deid, staging_root, "run-3", replace_complete=True)
    assert result.status == "replaced"
    marker = staging.read_marker(store, staging_root, "r1")
    assert marker["run_id"] == "run-3" and marker["counts"]["files"] == 43
    # a promoted file removed by hand is repaired by the next run
    victim = marker["files"][5]["path"]
    store.delete(join_url(staging_root, "r1", victim))
    assert _stage(store, data, deid, staging_root, "run-4").status == "repaired"
    assert store.exists(join_url(staging_root, "r1", victim))


def test_source_changed_after_selection(s3_store: ObjectStoreResource, data: ReleaseData):
    store = s3_store
    deid, staging_root = _roots(store, data)
    decisions = plan.select_sessions(store, SPEC, deid)
    rc = data.rc(0)
    t1 = f"assembly_bids/sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_run-001_T1w.json"
    store.put_bytes(join_url(deid, t1), b'{"changed": true}\n')
    with pytest.raises(staging.SourceChangedError, match=t1):
        _stage(store, data, deid, staging_root, "run-1", decisions)
    assert staging.read_marker(store, staging_root, "r1") is None


def test_squash_conflict_names_both_sources(s3_store: ObjectStoreResource, data: ReleaseData):
    store = s3_store
    deid, staging_root = _roots(store, data)
    store.put_bytes(
        f"{deid}/derivatives/ses-V03/bibsnet/dataset_description.json",
        json.dumps(
            {
                "Name": "BIBSNet",
                "BIDSVersion": "1.9.0",
                "GeneratedBy": [{"Name": "bibsnet", "Version": "4"}],
            }
        ).encode(),
    )
    with pytest.raises(SquashConflictError, match="^squash conflict: ") as e:
        _stage(store, data, deid, staging_root, "run-1")
    assert str(e.value).startswith(
        "squash conflict: derivatives/bibsnet/dataset_description.json is written by both "
        "derivatives/ses-V02/bibsnet/dataset_description.json and "
        "derivatives/ses-V03/bibsnet/dataset_description.json"
    )
    assert staging.read_marker(store, staging_root, "r1") is None


def test_identifier_in_a_source_blocks_the_release(
    local_store: ObjectStoreResource, data: ReleaseData
):
    store = local_store
    deid, staging_root = _roots(store, data)
    rc, dccid = data.rc(0), data.idmap.rows[0].dccid
    sidecar = f"{deid}/assembly_bids/sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_run-001_T1w.json"
    body = json.loads(store.get_bytes(sidecar))
    store.put_bytes(sidecar, json.dumps({**body, "ImageComments": f"subject {dccid}"}).encode())
    with pytest.raises(staging.ReleaseLeakError, match=r"release r1: \d+ identifier finding") as e:
        _stage(store, data, deid, staging_root, "run-1")
    assert dccid not in str(e.value)
    assert "DCCID in json:/ImageComments" in str(e.value)
    # no marker, and the copy holding the identifier is gone
    assert not any(
        k.startswith((".staging-", "_COMPLETE"))
        for k in _state(store, join_url(staging_root, "r1"))
    )


def test_invalid_tree_blocks_the_release(local_store: ObjectStoreResource, data: ReleaseData):
    store = local_store
    deid, staging_root = _roots(store, data)
    rc = data.rc(0)
    folder = Path(data.deidentified) / "assembly_bids" / f"sub-{rc}" / "ses-V02"
    bad = f"anat/sub-{rc}_ses-V02_run-001_T1w_copy.nii.gz"
    store.put_bytes(
        f"{deid}/assembly_bids/sub-{rc}/ses-V02/{bad}",
        (folder / f"anat/sub-{rc}_ses-V02_run-001_T1w.nii.gz").read_bytes(),
    )
    scans = f"{deid}/assembly_bids/sub-{rc}/ses-V02/sub-{rc}_ses-V02_scans.tsv"
    store.put_bytes(scans, store.get_bytes(scans) + f"{bad}\tn/a\tYes\t1\n".encode())
    with pytest.raises(staging.ReleaseValidationError, match="release r1 is not BIDS-valid") as e:
        _stage(store, data, deid, staging_root, "run-1")
    assert f"hbcd/rawdata/sub-{rc}/ses-V02/{bad}"[len("hbcd/") :] in str(e.value)
    assert staging.read_marker(store, staging_root, "r1") is None
