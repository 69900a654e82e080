"""The leak scan on both backends: NIfTI-gz with unchanged voxels read only up to their voxel
data, re-runs reading only what changed, and every planted identifier still found."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.copies import META_VOXELS, VOXELS_UNCHANGED
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.scanning import (
    HEAD_BYTES,
    scan_dataset,
    scan_session,
    scan_units,
)
from aind_assets.hbcd.deid.store import deidentify_dataset, deidentify_session
from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.conftest import MAP_CSV

RC1 = "NDARINVAAAA1111"
KEY = f"sub-{RC1}_ses-V02"
ANAT = "sub-123456/ses-V02/anat/sub-123456_ses-V02"


def _nii_gz(descrip: bytes, seed: int, name: str = "") -> bytes:
    rng = np.random.default_rng(seed)
    img = nib.Nifti1Image((rng.normal(0, 300, (96, 96, 48))).astype(np.int16), np.eye(4))
    img.header["descrip"] = descrip
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename=name, mtime=0, compresslevel=1) as gz:
        gz.write(img.to_bytes())
    return buf.getvalue()


@pytest.fixture
def done(store: ObjectStoreResource, idmap: IdentityMap) -> HbcdLayout:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    files = {
        f"{ANAT}_run-001_T1w.nii.gz": _nii_gz(b"TE=2.2", 1),
        f"{ANAT}_run-002_T1w.nii.gz": _nii_gz(b"TE=2.2", 2, name="sub-123456_T1w.nii"),
        f"{ANAT}_run-003_T1w.nii.gz": _nii_gz(b"UMN0012_123456", 3),
        f"{ANAT}_run-001_T1w.json": b'{"PatientID": "123456", "InstitutionName": "UMN"}',
        "sub-123456/ses-V02/sub-123456_ses-V02_scans.tsv": b"filename\nanat/x.nii.gz\n",
    }
    for rel, data in files.items():
        assert not rel.endswith(".nii.gz") or len(data) > HEAD_BYTES
        store.put_bytes(f"{layout.identified_bids}/{rel}", data)
    assert deidentify_session(store, layout, idmap, KEY).ok
    return layout


def _url(layout: HbcdLayout, rel: str) -> str:
    return f"{layout.deidentified_bids}/{rel.replace('123456', RC1)}"


def test_voxels_are_not_read_and_reruns_read_only_what_changed(
    store: ObjectStoreResource, idmap: IdentityMap, done: HbcdLayout
) -> None:
    layout = done
    # de-identification scanned its outputs as it wrote them: on S3 the check finds them all
    # recorded under the ETags the store reports (locally, ETags are file times: it reads them)
    after_deid = scan_session(store, layout, idmap, KEY)
    assert after_deid.clean and after_deid.scanned + after_deid.unchanged == 5
    if store.root.startswith("s3://"):
        assert after_deid.scanned == 0
    # a full scan reads every object, NIfTI-gz only up to their voxel data
    first = scan_session(store, layout, idmap, KEY, incremental=False)
    assert first.clean and first.scanned == 5 and first.unchanged == 0
    assert first.voxels_skipped == 3
    total = sum(i.size for i in store.list_objects(layout.deidentified_bids))
    assert first.bytes_scanned < 3 * HEAD_BYTES + 1000 < total
    # nothing changed: nothing is read
    again = scan_session(store, layout, idmap, KEY)
    assert again.clean and again.scanned == 0 and again.unchanged == 5
    # one object changed (a planted leak, its metadata kept): only it is read, and caught
    url = _url(layout, f"{ANAT}_run-001_T1w.json")
    store.put_bytes(url, b'{"PatientName": "UMN0012"}', dict(store.info(url).metadata))
    third = scan_session(store, layout, idmap, KEY)
    assert third.scanned == 1 and third.unchanged == 4
    assert set(third.by_kind()) == {"PSCID"} and third.leaking == [url]
    # the leaking object is not recorded as clean: the next scan reads it again
    assert scan_session(store, layout, idmap, KEY).leaking == [url]
    # a full scan reads everything
    assert scan_session(store, layout, idmap, KEY, incremental=False).scanned == 5


def test_a_changed_identity_map_rescans_everything(
    store: ObjectStoreResource, idmap: IdentityMap, done: HbcdLayout
) -> None:
    assert scan_session(store, done, idmap, KEY, incremental=False).scanned == 5
    assert scan_session(store, done, idmap, KEY).scanned == 0
    bigger = parse_identity_map(
        MAP_CSV + "456789,UMN0078,UMN,NDARINVDDDD4444,site01\n", "bigger-map"
    )
    assert scan_session(store, done, bigger, KEY).scanned == 5
    assert scan_session(store, done, bigger, KEY).scanned == 0


def test_identifiers_planted_in_nifti_gz_with_unchanged_voxels_are_found(
    store: ObjectStoreResource, idmap: IdentityMap, done: HbcdLayout
) -> None:
    layout = done
    assert scan_session(store, layout, idmap, KEY).clean
    assert scan_session(store, layout, idmap, KEY).scanned == 0
    planted = {
        "run-001": _nii_gz(b"UMN0012 TE=2.2", 1),  # NIfTI header
        "run-002": _nii_gz(b"TE=2.2", 2, name="sub-123456_T1w.nii"),  # gzip FNAME
    }
    for run, data in planted.items():
        url = _url(layout, f"{ANAT}_{run}_T1w.nii.gz")
        meta = dict(store.info(url).metadata)
        assert meta[META_VOXELS] == VOXELS_UNCHANGED
        store.put_bytes(url, data, meta)
    # a file that claims unchanged voxels but is no NIfTI is read in full
    text_url = _url(layout, f"{ANAT}_run-003_T1w.nii.gz")
    fake = gzip.compress(b"x" * (2 * HEAD_BYTES) + b" 123456 ", mtime=0)
    store.put_bytes(text_url, fake + b"\0" * HEAD_BYTES, dict(store.info(text_url).metadata))
    scan = scan_session(store, layout, idmap, KEY)
    found = sorted(
        (f.location, f.offset if f.location == "content" else None) for f in scan.findings
    )
    assert found == [
        ("content", 2 * HEAD_BYTES + 1),
        ("gzip[0].FNAME", None),
        ("nifti.descrip", None),
    ]
    assert len(scan.leaking) == 3


def _with_extension(seed: int, shape: tuple[int, ...], ext_bytes: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = nib.Nifti1Image((rng.normal(0, 300, shape)).astype(np.int16), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"ok " * (ext_bytes // 3)))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="sub-123456.nii", compresslevel=1) as gz:
        gz.write(img.to_bytes())
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(64, 64, 32), (256, 256, 100)])  # in memory / streaming
def test_outputs_scanned_only_in_part_are_left_to_the_check(
    store: ObjectStoreResource, idmap: IdentityMap, shape: tuple[int, ...]
) -> None:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    files = {
        # a NIfTI prefix longer than the head a scan reads (a 200 KiB text extension)
        f"{ANAT}_run-001_T1w.nii.gz": _with_extension(1, shape, 200 << 10),
        # a text file large enough to be streamed, its identifier past the first bytes
        "sub-123456/ses-V02/sub-123456_ses-V02_scans.tsv": (
            b"filename\tnote\n" + b"anat/x.nii.gz\tok\n" * (600 << 10) + b"sub-123456\tok\n"
        ),
    }
    for rel, data in files.items():
        store.put_bytes(f"{layout.identified_bids}/{rel}", data)
    result = deidentify_session(store, layout, idmap, KEY)
    assert result.ok, result.failed
    assert result.outcomes["copied"] == 1
    scan = scan_session(store, layout, idmap, KEY)
    assert scan.clean
    if store.root.startswith("s3://"):
        # the streamed text file is always left to the check; the NIfTI-gz only when streamed
        # (its head did not hold its extensions); in memory it was scanned whole when written
        streamed = shape[0] == 256
        assert scan.scanned == (2 if streamed else 1), scan
        assert scan.voxels_skipped == (1 if streamed else 0)


def test_batched_checks_find_what_the_per_unit_checks_find(
    store: ObjectStoreResource, idmap: IdentityMap
) -> None:
    """``scan_units`` (one listing, the records read in one batch, each object read once)
    gives every unit the result its own check gives, and records the same way."""
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    ses3 = ANAT.replace("V02", "V03")
    files = {
        f"{ANAT}_run-001_T1w.nii.gz": _nii_gz(b"TE=2.2", 1),
        f"{ANAT}_run-001_T1w.json": b'{"RepetitionTime": 2.4}',
        f"{ses3}_run-001_T1w.json": b'{"RepetitionTime": 2.4}',
        "sub-123456/sub-123456_sessions.tsv": b"session_id\nses-V02\nses-V03\n",
        "participants.tsv": b"participant_id\nsub-123456\n",
    }
    for rel, data in files.items():
        store.put_bytes(f"{layout.identified_bids}/{rel}", data)
    keys = [KEY, KEY.replace("V02", "V03")]
    for key in keys:
        assert deidentify_session(store, layout, idmap, key).ok
    assert deidentify_dataset(store, layout, idmap).ok
    first = scan_units(store, layout, idmap, keys, dataset=True, incremental=False)
    assert set(first) == {*keys, DATASET_UNIT} and all(r.clean for r in first.values())
    # the subject-level file belongs to both sessions: each result counts it, as its own check
    assert [first[k].scanned for k in keys] == [3, 2] and first[DATASET_UNIT].scanned == 1
    assert scan_units(store, layout, idmap, keys, dataset=True)[KEY].scanned == 0
    # leaks planted in a session file, the shared subject-level file and a dataset-level file
    planted = {
        _url(layout, f"{ses3}_run-001_T1w.json"): b'{"PatientName": "UMN0012"}',
        _url(layout, "sub-123456/sub-123456_sessions.tsv"): b"session_id\tnote\nses-V02\tUMN0012\n",
        f"{layout.deidentified_bids}/participants.tsv": b"participant_id\nsub-123456\n",
    }
    for url, data in planted.items():
        store.put_bytes(url, data)
    batched = scan_units(store, layout, idmap, keys, dataset=True)
    single = {key: scan_session(store, layout, idmap, key) for key in keys}
    single[DATASET_UNIT] = scan_dataset(store, layout, idmap)
    for unit, result in single.items():
        assert batched[unit].by_kind() == result.by_kind() != {}, unit
        assert sorted(batched[unit].leaking) == sorted(result.leaking)
    assert sorted(u for r in batched.values() for u in r.leaking) == sorted(
        [*planted, _url(layout, "sub-123456/sub-123456_sessions.tsv")]
    )
    # leaking objects stay unrecorded: scanned again (the shared one for both sessions)
    again = scan_units(store, layout, idmap, keys, dataset=True)
    assert [again[k].scanned for k in keys] == [1, 2] and again[DATASET_UNIT].scanned == 1
    assert all(again[u].by_kind() == batched[u].by_kind() for u in batched)
