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
from aind_assets.hbcd.bids import deidentify_tree
from aind_assets.hbcd.derivatives import DerivativeManifest, manifest_relpath
from aind_assets.hbcd.idmap import IdentityMap, parse_identity_map

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


def _process_t1(t1: Path) -> tuple[bytes, bytes, str]:
    """A real (tiny) segmentation: brain mask = voxels above the mean, labels = 2 intensity
    classes inside it."""
    data = np.asarray(nib.load(t1).dataobj).astype(np.float32)
    mask = (data > data.mean()).astype(np.uint8)
    seg = np.where(mask > 0, np.where(data > np.median(data[mask > 0]), 2, 1), 0).astype(np.uint8)
    stem = t1.name.replace("_run-001_T1w.nii.gz", "")
    return (
        _nifti_gz(mask, f"{stem}_space-T1w_desc-brain_mask.nii"),
        _nifti_gz(seg, f"{stem}_space-T1w_desc-aseg_dseg.nii"),
        stem,
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
    for i, row in enumerate(idmap.rows):
        for ses in SESSIONS:
            folder = pr / "assembly_bids" / f"sub-{row.dccid}" / f"ses-{ses}"
            scans = folder / f"sub-{row.dccid}_ses-{ses}_scans.tsv"
            qc = QC.get(
                (i, ses), {"anat": ("Yes", "1"), "func": ("Yes", "1"), "fmap": ("Yes", "1")}
            )
            if qc is None:
                scans.unlink()
                continue
            lines = ["filename\tacq_time\tHBCD_compliant\tQU_motion"]
            for dt, rel in _files(ses, row.dccid).items():
                lines.append(f"{rel}\t{ACQ_TIME[dt]}\t{qc[dt][0]}\t{qc[dt][1]}")
            scans.write_text("\n".join(lines) + "\n")

    report = deidentify_tree(pr / "assembly_bids", deid / "assembly_bids", idmap)
    assert not report.skipped, report.skipped

    now = datetime.now(UTC)
    for ses in SESSIONS:
        for pipeline, desc in (("bibsnet", bibsnet_description()), ("nibabies", None)):
            ddir = deid / "derivatives" / f"ses-{ses}" / pipeline
            ddir.mkdir(parents=True, exist_ok=True)
            (ddir / "dataset_description.json").write_text(
                json.dumps(desc or {**bibsnet_description(), "Name": "nibabies"}, indent=2) + "\n"
            )
    for i, ses in PROCESSED:
        rc = idmap.rows[i].rc_id
        session_dir = deid / "assembly_bids" / f"sub-{rc}" / f"ses-{ses}"
        t1 = session_dir / _files(ses, rc)["anat"]
        mask, seg, stem = _process_t1(t1)
        out = deid / "derivatives" / f"ses-{ses}" / "bibsnet" / f"sub-{rc}" / f"ses-{ses}" / "anat"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}_space-T1w_desc-brain_mask.nii.gz").write_bytes(mask)
        (out / f"{stem}_space-T1w_desc-aseg_dseg.nii.gz").write_bytes(seg)
        (out / f"{stem}_space-T1w_desc-aseg_dseg.json").write_text(
            json.dumps({"Description": "two intensity classes in the mask"}) + "\n"
        )
        used = [t1, t1.with_name(t1.name.replace(".nii.gz", ".json"))]
        manifest = DerivativeManifest.from_listing(
            {
                "Key": "assembly_bids/" + p.relative_to(deid / "assembly_bids").as_posix(),
                "Size": p.stat().st_size,
                "LastModified": now.isoformat(),
            }
            for p in used
        )
        mpath = deid / "derivatives" / manifest_relpath(rc, "bibsnet", ses)
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(manifest.to_json())
        # a pipeline the release does not include
        nib_out = (
            deid / "derivatives" / f"ses-{ses}" / "nibabies" / f"sub-{rc}" / f"ses-{ses}" / "anat"
        )
        nib_out.mkdir(parents=True, exist_ok=True)
        (nib_out / f"{stem}_desc-preproc_T1w.nii.gz").write_bytes(mask)
    return ReleaseData(pr, deid, idmap, map_csv)


def expected_scans(data: ReleaseData, i: int, ses: str, keep: list[str]) -> str:
    rc = data.rc(i)
    qc = QC[(i, ses)]
    assert qc is not None
    lines = ["filename\tacq_time\tHBCD_compliant\tQU_motion"]
    for dt, rel in _files(ses, rc).items():
        if dt in keep:
            lines.append(f"{rel}\t{ACQ_TIME[dt]}\t{qc[dt][0]}\t{qc[dt][1]}")
    return "\n".join(lines) + "\n"


def session_files(data: ReleaseData, i: int, ses: str) -> dict[str, str]:
    return _files(ses, data.rc(i))
