"""Test data for release staging: identified demo BIDS with controlled QC values, de-identified
with the real rules, then "processed" (a real, tiny computation: a brain mask and a two-label
segmentation from each de-identified T1w) into the CBRAIN layout with input manifests.

Subjects (demo order) and sessions, with ``(HBCD_compliant, QU_motion)`` per datatype; the spec
used by the tests (:data:`SPEC_YAML`) wants ``HBCD_compliant == Yes`` everywhere, ``QU_motion <
2`` for anat and ``< 3`` for func, and bibsnet inputs with ``HBCD_compliant == Yes``:

====  =====  ===============================================  ===================================
subj  ses    anat / func / fmap                               expected
====  =====  ===============================================  ===================================
A     V02    Yes,1 / Yes,1 / Yes,_NaN_                        all files; bibsnet released
A     V03    Yes,3 / Yes,2 / No,_NaN_                         T1w kept (bibsnet used it), bold;
                                                              epi dropped; bibsnet released
B     V02    No,1 / Yes,2 / Yes,_Inf_                         T1w kept (used), bold, epi; bibsnet
                                                              left out (input fails bibsnet QC)
B     V03    No,1 / No,1 / No,1                               session out: no file passes QC
C     V02    Yes,1 / Yes,4 / Yes,1                            T1w, epi; bold dropped; bibsnet in
C     V03    (no scans.tsv)                                   session out
D     V02    No,1 / No,1 / No,1                               out; D not released at all
D     V03    No,1 / No,1 / No,1                               out
====  =====  ===============================================  ===================================
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nibabel as nib
import numpy as np

from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.formats.dispatch import deidentify_tree
from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.manifests import DerivativeManifest, manifest_relpath
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key

SESSIONS = ("V02", "V03")
QC: dict[tuple[int, str], dict[str, tuple[str, str]] | None] = {
    (0, "V02"): {"anat": ("Yes", "1"), "func": ("Yes", "1"), "fmap": ("Yes", "_NaN_")},
    (0, "V03"): {"anat": ("Yes", "3"), "func": ("Yes", "2"), "fmap": ("No", "_NaN_")},
    (1, "V02"): {"anat": ("No", "1"), "func": ("Yes", "2"), "fmap": ("Yes", "_Inf_")},
    (1, "V03"): {"anat": ("No", "1"), "func": ("No", "1"), "fmap": ("No", "1")},
    (2, "V02"): {"anat": ("Yes", "1"), "func": ("Yes", "4"), "fmap": ("Yes", "1")},
    (2, "V03"): None,
    (3, "V02"): {"anat": ("No", "1"), "func": ("No", "1"), "fmap": ("No", "1")},
    (3, "V03"): {"anat": ("No", "1"), "func": ("No", "1"), "fmap": ("No", "1")},
}
#: (subject index, session) processed by bibsnet (from the T1w).
PROCESSED = [(0, "V02"), (0, "V03"), (1, "V02"), (1, "V03"), (2, "V02")]
ACQ_TIME = {
    "anat": "2024-03-01T10:00:00",
    "func": "2024-03-01T10:10:00",
    "fmap": "2024-03-01T10:20:00",
}

SPEC_YAML = """
release: r1
description: test release
min_file_age_hours: 0
qc:
  default: {HBCD_compliant: [Yes, equals]}
  modalities:
    anat: {QU_motion: [2, less_than]}
    func: {QU_motion: [3, less_than]}
  pipelines:
    bibsnet: {HBCD_compliant: [Yes, equals]}
pipelines: [bibsnet]
"""


@dataclass
class ReleaseData:
    identified: Path  # <tmp>/pr (assembly_bids/, identifiers/...)
    deidentified: Path  # <tmp>/deid (assembly_bids/, derivatives/)
    idmap: IdentityMap
    map_csv: str

    def rc(self, i: int) -> str:
        return self.idmap.rows[i].rc_id


def _files(ses: str, dccid: str) -> dict[str, str]:
    stem = f"sub-{dccid}_ses-{ses}"
    return {
        "anat": f"anat/{stem}_run-001_T1w.nii.gz",
        "func": f"func/{stem}_task-rest_run-001_bold.nii.gz",
        "fmap": f"fmap/{stem}_dir-PA_run-001_epi.nii.gz",
    }


def _nifti_gz(data: np.ndarray, name: str) -> bytes:
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(img.to_bytes())
    return buf.getvalue()


def _process_t1(t1_gz: bytes, stem: str) -> tuple[bytes, bytes]:
    """A real (tiny) segmentation: brain mask = voxels above the mean, labels = 2 intensity
    classes inside it."""
    img = nib.Nifti1Image.from_bytes(gzip.decompress(t1_gz))
    data = np.asarray(img.dataobj).astype(np.float32)
    mask = (data > data.mean()).astype(np.uint8)
    seg = np.where(mask > 0, np.where(data > np.median(data[mask > 0]), 2, 1), 0).astype(np.uint8)
    return (
        _nifti_gz(mask, f"{stem}_space-T1w_desc-brain_mask.nii"),
        _nifti_gz(seg, f"{stem}_space-T1w_desc-aseg_dseg.nii"),
    )


def scans_text(i: int, ses: str, sub: str) -> str | None:
    """The controlled ``scans.tsv`` of subject ``i`` (labelled ``sub``) and session ``ses``."""
    qc = QC.get((i, ses), {"anat": ("Yes", "1"), "func": ("Yes", "1"), "fmap": ("Yes", "1")})
    if qc is None:
        return None
    lines = ["filename\tacq_time\tHBCD_compliant\tQU_motion"]
    for dt, rel in _files(ses, sub).items():
        lines.append(f"{rel}\t{ACQ_TIME[dt]}\t{qc[dt][0]}\t{qc[dt][1]}")
    return "\n".join(lines) + "\n"


def plant_identified_qc(
    store: ObjectStoreResource, identified_bids: str, idmap: IdentityMap
) -> None:
    """Replace the identified ``scans.tsv`` files on a store with the controlled ones."""
    for i, row in enumerate(idmap.rows):
        for ses in SESSIONS:
            url = join_url(
                identified_bids, f"sub-{row.dccid}/ses-{ses}/sub-{row.dccid}_ses-{ses}_scans.tsv"
            )
            text = scans_text(i, ses, row.dccid)
            if text is None:
                store.delete(url)
            else:
                store.put_bytes(url, text.encode())


def write_bibsnet(
    store: ObjectStoreResource, deid_root: str, idmap: IdentityMap, *, mtime: datetime | None = None
) -> None:
    """Process the de-identified T1w of :data:`PROCESSED` as CBRAIN's bibsnet would leave it:
    outputs under ``derivatives/ses-<L>/bibsnet/`` and an input manifest in ``cbrain_misc``."""
    mtime = mtime or datetime.now(UTC)
    for ses in SESSIONS:
        store.put_bytes(
            join_url(deid_root, f"derivatives/ses-{ses}/bibsnet/dataset_description.json"),
            (json.dumps(bibsnet_description(), indent=2) + "\n").encode(),
        )
    for i, ses in PROCESSED:
        rc = idmap.rows[i].rc_id
        session = join_url(deid_root, f"assembly_bids/sub-{rc}/ses-{ses}")
        t1 = _files(ses, rc)["anat"]
        stem = f"sub-{rc}_ses-{ses}"
        mask, seg = _process_t1(store.get_bytes(join_url(session, t1)), stem)
        out = join_url(deid_root, f"derivatives/ses-{ses}/bibsnet/sub-{rc}/ses-{ses}/anat")
        store.put_bytes(join_url(out, f"{stem}_space-T1w_desc-brain_mask.nii.gz"), mask)
        store.put_bytes(join_url(out, f"{stem}_space-T1w_desc-aseg_dseg.nii.gz"), seg)
        reference = f"bids:raw:sub-{rc}/ses-{ses}/{t1}"
        sidecars = {
            # BIDS derivatives: an image in a non-template space names its reference image
            "desc-brain_mask": {"Type": "Brain", "SpatialReference": reference},
            "desc-aseg_dseg": {
                "Description": "two intensity classes in the mask",
                "SpatialReference": reference,
            },
        }
        for name, body in sidecars.items():
            store.put_bytes(
                join_url(out, f"{stem}_space-T1w_{name}.json"),
                (json.dumps(body) + "\n").encode(),
            )
        used = [store.info(join_url(session, p)) for p in (t1, t1.replace(".nii.gz", ".json"))]
        manifest = DerivativeManifest.from_listing(
            {
                "Key": "assembly_bids/" + relative_key(u.url, join_url(deid_root, "assembly_bids")),
                "Size": u.size,
                "LastModified": mtime.isoformat(),
            }
            for u in used
        )
        store.put_bytes(
            join_url(deid_root, "derivatives", manifest_relpath(rc, "bibsnet", ses)),
            manifest.to_json().encode(),
        )


def bibsnet_description(version: str = "3.4.2") -> dict:
    return {
        "Name": "BIBSNet",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bibsnet", "Version": version}],
    }


def build_release_data(tmp: Path, *, n_subjects: int = 4) -> ReleaseData:
    """Identified -> de-identified (real rules) -> processed, all under ``tmp``."""
    pr, deid = tmp / "pr", tmp / "deid"
    shutil.rmtree(pr, ignore_errors=True)
    shutil.rmtree(deid, ignore_errors=True)
    map_path = write_identified_bids(pr, n_subjects=n_subjects, sessions=SESSIONS)
    map_csv = map_path.read_text()
    idmap = parse_identity_map(map_csv, "test identity map")
    plant_identified_qc(ObjectStoreResource(root=str(pr)), str(pr / "assembly_bids"), idmap)

    report = deidentify_tree(pr / "assembly_bids", deid / "assembly_bids", idmap)
    assert not report.skipped, report.skipped

    local = ObjectStoreResource(root=str(deid))
    write_bibsnet(local, str(deid), idmap)
    # a pipeline the release does not include
    for i, ses in PROCESSED:
        rc = idmap.rows[i].rc_id
        folder = f"derivatives/ses-{ses}/nibabies"
        local.put_bytes(
            join_url(str(deid), folder, "dataset_description.json"),
            json.dumps({**bibsnet_description(), "Name": "nibabies"}).encode(),
        )
        local.put_bytes(
            join_url(
                str(deid),
                folder,
                f"sub-{rc}/ses-{ses}/anat/sub-{rc}_ses-{ses}_desc-preproc_T1w.nii.gz",
            ),
            b"not released",
        )
    return ReleaseData(pr, deid, idmap, map_csv)


def expected_scans(i: int, ses: str, sub: str, keep: list[str]) -> str:
    """The released ``scans.tsv`` of subject ``i`` (RC ``sub``): the rows of ``keep``."""
    qc = QC[(i, ses)]
    assert qc is not None
    lines = ["filename\tacq_time\tHBCD_compliant\tQU_motion"]
    for dt, rel in _files(ses, sub).items():
        if dt in keep:
            lines.append(f"{rel}\t{ACQ_TIME[dt]}\t{qc[dt][0]}\t{qc[dt][1]}")
    return "\n".join(lines) + "\n"


def files_of(sub: str, ses: str) -> dict[str, str]:
    """``{datatype: path in the session folder}`` of the demo images of ``sub``."""
    return _files(ses, sub)


def session_files(data: ReleaseData, i: int, ses: str) -> dict[str, str]:
    return _files(ses, data.rc(i))
