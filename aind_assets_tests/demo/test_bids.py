from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path

import nibabel as nib

from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.formats.tsv import parse_tsv
from aind_assets.hbcd.identity.idmap import parse_identity_map


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_identity_map(tmp_path: Path):
    start = time.perf_counter()
    map_path = write_identified_bids(tmp_path, n_subjects=4, sessions=("V02", "V03"))
    assert time.perf_counter() - start < 2
    assert map_path == tmp_path / "identifiers" / "release_identifiers.csv"
    text = map_path.read_text()
    assert text.splitlines()[0] == "DCCID,PSCID,site,release_candidate_id,anonymized_site"
    idmap = parse_identity_map(text, "demo")
    assert len(idmap) == 4
    bids = tmp_path / "assembly_bids"
    for r in idmap:
        assert len(r.dccid) == 6 and r.dccid.isdigit()
        assert r.pscid.startswith(r.site) and r.pscid[len(r.site) :].isdigit()
        assert r.site in ("UMN", "UCSD", "WUSTL")
        sub = f"sub-{r.dccid}"
        assert (bids / sub / f"{sub}_sessions.tsv").is_file()
        assert (bids / sub / f"{sub}_sessions.json").is_file()
        for ses in ("V02", "V03"):
            d = bids / sub / f"ses-{ses}"
            stem = f"{sub}_ses-{ses}"
            for rel in (
                f"anat/{stem}_run-001_T1w",
                f"func/{stem}_task-rest_run-001_bold",
                f"fmap/{stem}_dir-PA_run-001_epi",
            ):
                assert (d / f"{rel}.nii.gz").is_file() and (d / f"{rel}.json").is_file()
            scans = parse_tsv((d / f"{stem}_scans.tsv").read_text())
            assert scans.columns == ["filename", "acq_time", "HBCD_compliant", "QU_motion"]
            assert all((d / f).is_file() for f in scans.column("filename"))
            assert set(scans.column("HBCD_compliant")) <= {"Yes", "No"}
            assert set(scans.column("QU_motion")) <= {"1", "2", "3", "_NaN_"}
            assert "_NaN_" in scans.column("QU_motion")
    for name in ("dataset_description.json", "participants.tsv", "participants.json", "README"):
        assert (bids / name).is_file()


def test_identifiers_are_planted(tmp_path: Path):
    idmap = parse_identity_map(write_identified_bids(tmp_path).read_text(), "demo")
    r = idmap.rows[0]
    bids = tmp_path / "assembly_bids"
    participants = parse_tsv((bids / "participants.tsv").read_text())
    first = participants.rows[0]
    assert first["participant_id"] == f"sub-{r.dccid}" and first["site"] == r.site
    assert r.dccid in first["medication_code"] and first["medication_code"] != r.dccid
    assert first["medication_code"].isdigit()
    assert "n/a" in participants.column("gestational_age")

    nii = bids / f"sub-{r.dccid}/ses-V02/anat/sub-{r.dccid}_ses-V02_run-001_T1w.nii.gz"
    raw = nii.read_bytes()
    assert raw[3] & 0x08 and f"sub-{r.dccid}".encode() in raw[10:80]  # gzip FNAME
    img = nib.load(nii)
    assert img.shape == (8, 8, 8)
    h = img.header
    assert h["descrip"].item().startswith(f"{r.pscid}_{r.dccid}".encode())
    assert h["aux_file"].item() == r.pscid.encode()
    assert h["db_name"].item() == r.site.encode()
    assert h["intent_name"].item() == r.dccid.encode()
    assert r.dccid.encode() in h.extensions[0].get_content()
    bold = nib.load(
        nii.parent.parent / "func" / nii.name.replace("run-001_T1w", "task-rest_run-001_bold")
    )
    assert bold.shape == (8, 8, 8, 4)

    sidecar = json.loads(nii.with_name(nii.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["PatientID"] == r.dccid and sidecar["PatientName"] == r.pscid
    assert {"PatientBirthDate", "InstitutionName", "InstitutionAddress"} <= sidecar.keys()
    epi = json.loads(next((nii.parent.parent / "fmap").glob("*.json")).read_text())
    assert any(p.startswith(f"bids::sub-{r.dccid}/") for p in epi["IntendedFor"])
    sessions = json.loads((bids / f"sub-{r.dccid}" / f"sub-{r.dccid}_sessions.json").read_text())
    assert r.pscid in sessions["session_id"]["Levels"]["ses-V02"]
    assert gzip.decompress(raw)[:4] == (348).to_bytes(4, "little")


def test_deterministic_and_seeded(tmp_path: Path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_identified_bids(a, seed=3)
    write_identified_bids(b, seed=3)
    write_identified_bids(c, seed=4)
    assert _digests(a) == _digests(b)
    ids_a = parse_identity_map((a / "identifiers/release_identifiers.csv").read_text())
    ids_c = parse_identity_map((c / "identifiers/release_identifiers.csv").read_text())
    assert {r.dccid for r in ids_a} != {r.dccid for r in ids_c}


def test_extras_eeg_mrs_and_sessionless_subject_flow_through(tmp_path: Path) -> None:
    """The demo seed's extras: EEG (EDF+ readable by the field's reader), NIfTI-MRS and a
    sessionless subject are all de-identified (nothing refused) and leak-free."""
    import edfio

    from aind_assets.hbcd.formats.dispatch import deidentify_tree
    from aind_assets.hbcd.leaks.scan import scan_tree

    map_path = write_identified_bids(tmp_path / "src", n_subjects=2, extras=True)
    idmap = parse_identity_map(map_path.read_text(), "demo")
    src = tmp_path / "src" / "assembly_bids"
    edf = next(src.rglob("*_eeg.edf"))
    rec = edfio.read_edf(edf)
    assert rec.patient.code == idmap.rows[0].pscid and len(rec.signals) == 2
    assert next(src.rglob("*_svs.nii.gz")) and len(idmap.rows) == 3
    assert not list((src / f"sub-{idmap.rows[2].dccid}").glob("ses-*"))
    out = tmp_path / "deid"
    report = deidentify_tree(src, out, idmap)
    assert report.skipped == []
    assert scan_tree(out, idmap) == []
    assert (out / f"sub-{idmap.rows[2].rc_id}/anat/sub-{idmap.rows[2].rc_id}_T1w.nii.gz").exists()
    back = edfio.read_edf(next(out.rglob("*_eeg.edf")))
    assert back.patient.code == idmap.rows[0].rc_id


def test_extras_stage_a_release_the_official_validator_accepts(tmp_path: Path) -> None:
    """The seed's extras (EEG, MRS, a sessionless subject) stage into a release with zero
    bids-validator-deno errors (staging runs it before promoting)."""
    from aind_assets.hbcd.formats.dispatch import deidentify_tree
    from aind_assets.hbcd.release import plan, staging
    from aind_assets.hbcd.release.spec import load_release_spec
    from aind_assets.resources.object_store import ObjectStoreResource

    map_path = write_identified_bids(tmp_path / "src", n_subjects=3, extras=True)
    idmap = parse_identity_map(map_path.read_text(), "demo")
    deidentify_tree(tmp_path / "src/assembly_bids", tmp_path / "deid/assembly_bids", idmap)
    store = ObjectStoreResource(root=str(tmp_path / "store"))
    deid = store.url("deid")
    store.put_tree(tmp_path / "deid", deid)
    spec = load_release_spec(
        "release: demo1\nqc:\n  default: {HBCD_compliant: [Yes, equals]}\n", "spec"
    )
    decisions = plan.select_sessions(store, spec, deid)
    result = staging.stage_release(
        store,
        spec,
        decisions,
        deid_root=deid,
        staging_root=store.url("staging"),
        run_id="r",
        identifiers=idmap,
    )
    names = [f["path"] for f in result.marker["files"]]
    assert any(n.endswith("_eeg.edf") for n in names)
    assert any(n.endswith("_svs.nii.gz") for n in names)
