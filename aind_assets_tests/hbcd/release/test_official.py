"""A release with fieldmaps, DWI, EEG (EDF written by edfio), a top-level sidecar of a datatype
that is not released, an unlisted ``X.nii`` beside a listed ``X.nii.gz``, an ignored file and the
platform's ``imagestats`` derivatives, de-identified by the real rules and staged: the official
validator (``bids-validator-deno``) reports zero errors on ``rawdata`` and on the derivative
dataset, and each of the three staging bugs stays fixed."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import edfio
import nibabel as nib
import numpy as np

from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.formats.dispatch import deidentify_tree
from aind_assets.hbcd.identity.idmap import parse_identity_map
from aind_assets.hbcd.processing import imagestats
from aind_assets.hbcd.release import plan, staging
from aind_assets.hbcd.release.official import official_problems, run_validator
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key

SPEC = """
release: r-eeg
min_file_age_hours: 0
pipelines: [imagestats]
qc:
  default: {HBCD_compliant: [Yes, equals]}
bids_ignore:
  - "rawdata/extra_notes.txt"
  - "*.log"
"""


def _identified(tmp: Path) -> tuple[Path, str]:
    map_path = write_identified_bids(tmp, n_subjects=1, sessions=("V02",))
    idmap = parse_identity_map(map_path.read_text(), "map")
    row = idmap.rows[0]
    bids = tmp / "assembly_bids"
    sub, stem = f"sub-{row.dccid}", f"sub-{row.dccid}_ses-V02"
    ses = bids / sub / "ses-V02"
    # DWI
    dwi = nib.Nifti1Image(np.ones((4, 4, 4, 3), np.int16), np.eye(4))
    dwi.header.set_xyzt_units("mm", "sec")
    (ses / "dwi").mkdir()
    nib.save(dwi, ses / "dwi" / f"{stem}_dwi.nii.gz")
    (ses / "dwi" / f"{stem}_dwi.bval").write_text("0 1000 1000\n")
    (ses / "dwi" / f"{stem}_dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
    (ses / "dwi" / f"{stem}_dwi.json").write_text(json.dumps({"PatientID": row.dccid}))
    # EEG (EDF+ with identifiers in the header)
    (ses / "eeg").mkdir()
    data = np.random.default_rng(0).normal(0, 20, (2, 1024))
    edf = edfio.Edf(
        [
            edfio.EdfSignal(d, 256, label=n, physical_dimension="uV", physical_range=(-500, 500))
            for d, n in zip(data, ("Fz", "Cz"), strict=True)
        ],
        patient=edfio.Patient(code=row.pscid, name="Doe_Jane", birthdate=dt.date(2023, 1, 2)),
        recording=edfio.Recording(
            startdate=dt.date(2024, 3, 1), hospital_administration_code=row.dccid
        ),
    )
    buf = io.BytesIO()
    edf.write(buf)
    (ses / "eeg" / f"{stem}_task-rest_eeg.edf").write_bytes(buf.getvalue())
    eeg_json = {
        "TaskName": "rest",
        "SamplingFrequency": 256,
        "EEGReference": "Cz",
        "PowerLineFrequency": 60,
        "SoftwareFilters": "n/a",
    }
    (ses / "eeg" / f"{stem}_task-rest_eeg.json").write_text(json.dumps(eeg_json))
    (ses / "eeg" / f"{stem}_task-rest_channels.tsv").write_text(
        "name\ttype\tunits\nFz\tEEG\tuV\nCz\tEEG\tuV\n"
    )
    # an unlisted X.nii beside the listed X.nii.gz
    t1 = next((ses / "anat").glob("*_T1w.nii.gz"))
    nib.save(nib.load(t1), t1.with_name(t1.name[: -len(".gz")]))
    # scans.tsv: every listed file passes QC
    rows = ["filename\tacq_time\tHBCD_compliant\tQU_motion"]
    for rel in sorted(
        p.relative_to(ses).as_posix()
        for p in ses.rglob("*")
        if p.name.endswith((".nii.gz", ".edf")) and "T1w.nii" not in p.name or p == t1
    ):
        rows.append(f"{rel}\t2024-03-01T10:10:10\tYes\t1")
    (ses / f"{stem}_scans.tsv").write_text("\n".join(rows) + "\n")
    # top-level sidecars: dwi applies (DWI released), T2w does not (no T2w anywhere)
    (bids / "dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j"}))
    (bids / "T2w.json").write_text(json.dumps({"EchoTime": 0.1}))
    (bids / "extra_notes.txt").write_text(f"notes about {row.site}\n")
    return map_path, row.rc_id


def _write_imagestats(deid: Path, rc: str) -> None:
    """The platform's imagestats outputs of the de-identified session, from its pure parts."""
    session = deid / "assembly_bids" / f"sub-{rc}" / "ses-V02"
    pipeline = deid / "derivatives" / "ses-V02" / imagestats.PIPELINE
    out = pipeline / f"sub-{rc}" / "ses-V02"
    computed = []
    for image in sorted(session.rglob("*.nii.gz")):
        rel = image.relative_to(session).as_posix()
        with open(image, "rb") as f:
            stats = imagestats.image_stats(f)
        stats["Sources"] = [f"bids:raw:sub-{rc}/ses-V02/{rel}"]
        target = out / imagestats.stats_relpath(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(stats, indent=2) + "\n")
        computed.append((rel, stats))
    (out / f"sub-{rc}_ses-V02_desc-imageqc_scans.tsv").write_text(imagestats.qc_table(computed))
    (pipeline / "dataset_description.json").write_text(
        imagestats.dataset_description("1.0", "https://example.org/aind-assets")
    )


def test_staged_release_has_zero_official_validator_errors(
    tmp_path: Path, local_store: ObjectStoreResource
) -> None:
    map_path, rc = _identified(tmp_path / "src")
    idmap = parse_identity_map(map_path.read_text(), "map")
    deid_dir = tmp_path / "deid"
    report = deidentify_tree(tmp_path / "src" / "assembly_bids", deid_dir / "assembly_bids", idmap)
    assert not report.skipped, report.skipped
    _write_imagestats(deid_dir, rc)
    store = local_store
    deid, staging_root = store.url("deid"), store.url("staging")
    store.put_tree(deid_dir, deid)
    spec = load_release_spec(SPEC, "test")
    decisions = plan.select_sessions(store, spec, deid)
    by_source = {d.source.rsplit("/", 1)[-1]: d for d in decisions if d.source}
    # bug: an unlisted X.nii is not a sidecar of the listed X.nii.gz
    t1 = f"sub-{rc}_ses-V02_run-001_T1w"
    assert not by_source[f"{t1}.nii"].included and by_source[f"{t1}.nii.gz"].included
    # bug: a top-level sidecar without a released file of its kind stays out
    assert not by_source["T2w.json"].included and by_source["dwi.json"].included

    result = staging.stage_release(
        store,
        spec,
        decisions,
        deid_root=deid,
        staging_root=staging_root,
        run_id="run-1",
        identifiers=idmap,
    )
    assert result.status == "staged"
    hbcd = join_url(result.url, staging.HBCD)
    files = sorted(relative_key(i.url, hbcd) for i in store.list_objects(hbcd))
    assert f"rawdata/sub-{rc}/ses-V02/eeg/sub-{rc}_ses-V02_task-rest_eeg.edf" in files
    assert f"rawdata/sub-{rc}/ses-V02/dwi/sub-{rc}_ses-V02_dwi.bval" in files
    assert f"rawdata/sub-{rc}/ses-V02/fmap/sub-{rc}_ses-V02_dir-PA_run-001_epi.json" in files
    assert "rawdata/extra_notes.txt" in files and "rawdata/T2w.json" not in files
    # bug: the spec's ignore patterns are in the release's .bidsignore
    ignore = store.get_bytes(join_url(hbcd, "rawdata/.bidsignore")).decode().splitlines()
    assert ignore == ["extra_notes.txt", "*.log"]
    # imagestats' outputs that are not BIDS files are in its dataset's .bidsignore
    stats = f"derivatives/imagestats/sub-{rc}/ses-V02/anat/{t1.replace('_T1w', '_desc-imagestats_T1w')}.json"
    assert stats in files
    ignore = store.get_bytes(join_url(hbcd, "derivatives/imagestats/.bidsignore")).decode()
    assert ignore.splitlines() == ["*.log", *imagestats.BIDS_IGNORE]
    # the official validator, on a local mirror of the staged release (rawdata and the
    # derivative dataset): zero errors
    assert official_problems(store, hbcd, files) == []
    staged = Path(store.root) / "staging" / "r-eeg" / "hbcd"
    for dataset in ("rawdata", "derivatives/imagestats"):
        issues = run_validator(staged / dataset)
        assert [i for i in issues if i["severity"] == "error"] == [], dataset
        assert any(i["code"] != "NOT_INCLUDED" for i in issues)  # it did read the dataset
    # without the pipeline's ignore lines the statistics are sidecars without data files
    (staged / "derivatives/imagestats/.bidsignore").write_text("*.log\n")
    codes = {i["code"] for i in run_validator(staged / "derivatives/imagestats")}
    assert "SIDECAR_WITHOUT_DATAFILE" in codes
