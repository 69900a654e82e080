"""The promise: every file of the identified demo tree, run through ``deidentify_file``, comes out
with zero leak findings; a planted leak is found."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from aind_assets.hbcd.formats.dispatch import deidentify_file, handler_for, reidentify_tree
from aind_assets.hbcd.formats.tsv import parse_tsv
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import scan_for_identifiers, scan_tree
from aind_assets.hbcd.release.qc import release_ready_files


def _deidentify_all(src_root: Path, dst_root: Path, idmap: IdentityMap) -> list[str]:
    written = []
    for path in sorted(p for p in src_root.rglob("*") if p.is_file()):
        rel = path.relative_to(src_root).as_posix()
        assert handler_for(rel) is not None, rel
        out_tmp = dst_root / "_tmp"
        out_tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as src, open(out_tmp, "wb") as dst:
            new = deidentify_file(rel, src, dst, idmap)
        target = dst_root / new
        target.parent.mkdir(parents=True, exist_ok=True)
        out_tmp.replace(target)
        written.append(new)
    return written


def test_demo_tree_deidentifies_with_zero_findings(demo, tmp_path: Path):
    src_root, idmap = demo
    before = scan_tree(src_root, idmap)
    planted = {f.location.split("@")[0] for f in before}
    # sanity: identifiers really are planted in every hiding place
    for location in (
        "path",
        "content",
        "gzip[0].FNAME",
        "nifti.descrip",
        "nifti.aux_file",
        "nifti.db_name",
        "nifti.intent_name",
        "nifti.extension[0](comment)",
        "json:/PatientName",
        "json:/PatientID",
        "json:/InstitutionName",
        "json:/IntendedFor/1",
        "json:/session_id/Levels/ses-V02",
        "json:/site/Levels/(key)",
    ):
        assert location in planted, location

    dst_root = tmp_path / "deid"
    written = _deidentify_all(src_root, dst_root, idmap)
    n_files = sum(1 for p in src_root.rglob("*") if p.is_file())
    assert len(written) == len(set(written)) == n_files
    assert scan_tree(dst_root, idmap) == []

    # structure is kept, with release-candidate IDs
    rc = idmap.rows[0].rc_id
    assert (dst_root / f"sub-{rc}" / "ses-V02" / "anat").is_dir()
    participants = parse_tsv((dst_root / "participants.tsv").read_text())
    src_participants = parse_tsv((src_root / "participants.tsv").read_text())
    assert participants.column("participant_id") == [f"sub-{r.rc_id}" for r in idmap.rows]
    assert participants.column("medication_code") == src_participants.column("medication_code")
    assert participants.column("gestational_age") == src_participants.column("gestational_age")
    scans = (dst_root / f"sub-{rc}" / "ses-V02" / f"sub-{rc}_ses-V02_scans.tsv").read_text()
    assert "_NaN_" in scans
    for filename in parse_tsv(scans).column("filename"):
        assert (dst_root / f"sub-{rc}" / "ses-V02" / filename).is_file()
    assert release_ready_files(scans, {"QU_motion": [4, "less_than"]}) == [
        f"anat/sub-{rc}_ses-V02_run-001_T1w.nii.gz",
        f"func/sub-{rc}_ses-V02_task-rest_run-001_bold.nii.gz",
    ]

    # a planted leak in the de-identified tree is found
    log = dst_root / f"sub-{rc}" / "ses-V02" / "conversion.log"
    log.write_text(f"converted {idmap.rows[0].pscid}\n", encoding="utf-16")
    [finding] = scan_tree(dst_root, idmap)
    assert (finding.kind, finding.encoding) == ("PSCID", "utf-16-le")
    assert idmap.rows[0].pscid not in str(finding)
    log.unlink()

    nii = next(dst_root.rglob("*_bold.nii.gz"))
    leaky = gzip.compress(gzip.decompress(nii.read_bytes()))  # header FNAME absent...
    assert scan_for_identifiers(nii.name, leaky, idmap) == []
    with_name = bytearray(leaky)
    with_name[3] |= 0x08
    with_name[10:10] = f"sub-{idmap.rows[0].dccid}.nii\0".encode()
    assert [f.location for f in scan_for_identifiers(nii.name, bytes(with_name), idmap)] == [
        "gzip[0].FNAME"
    ]


def test_reidentification_round_trip_of_text_files(demo, tmp_path: Path):
    src_root, idmap = demo
    deid = tmp_path / "deid"
    _deidentify_all(src_root, deid, idmap)
    back = tmp_path / "back"
    report = reidentify_tree(deid, back, idmap)
    assert not report.skipped
    # paths come back (sub-<DCCID>); TSV content is identical to the source
    for rel in ("participants.tsv",):
        assert (back / rel).read_bytes() == (src_root / rel).read_bytes()
    row = idmap.rows[0]
    scans = f"sub-{row.dccid}/ses-V02/sub-{row.dccid}_ses-V02_scans.tsv"
    assert (back / scans).read_bytes() == (src_root / scans).read_bytes()
    sidecar = json.loads(
        (
            back
            / f"sub-{row.dccid}/ses-V02/func/sub-{row.dccid}_ses-V02_task-rest_run-001_bold.json"
        ).read_text()
    )
    assert "PatientID" not in sidecar  # dropped keys stay dropped
    assert sidecar["ImageComments"] == f"{row.dccid} visit V02"  # PSCID_DCCID -> RC -> DCCID
