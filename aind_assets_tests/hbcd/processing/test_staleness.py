"""Staleness of a derivative against its input manifest (pure)."""

from __future__ import annotations

from aind_assets.hbcd.manifests import DerivativeManifest
from aind_assets.hbcd.processing.staleness import staleness


def test_staleness_keys_sizes_and_covered_folders() -> None:
    rc, ses = "NDARINVAAAA1111", "V02"
    base = f"assembly_bids/sub-{rc}/ses-{ses}"
    manifest = DerivativeManifest.parse(
        f"""[{{"Key": "bucket/prefix/{base}/anat/a_T1w.nii.gz", "Size": 10}},
            {{"Key": "{base}/anat/a_T1w.json", "Size": 5}},
            {{"Key": "assembly_bids/sub-{rc}/sub-{rc}_sessions.tsv", "Size": 1}}]"""
    )
    current = [
        {"Key": f"s3://b/{base}/anat/a_T1w.nii.gz", "Size": 10},
        {"Key": f"{base}/anat/a_T1w.json", "Size": 5},
        {"Key": f"{base}/eeg/new_eeg.edf", "Size": 7},  # folder the pipeline never used
    ]
    assert not staleness(manifest, current, rc, ses).stale
    current.append({"Key": f"{base}/anat/b_T2w.nii.gz", "Size": 3})  # covered folder
    s = staleness(manifest, current, rc, ses)
    assert s.added == [f"{base}/anat/b_T2w.nii.gz"] and s.stale
    current = [c | {"Size": 11} if c["Key"].endswith("T1w.nii.gz") else c for c in current[:2]]
    assert staleness(manifest, current, rc, ses).summary() == {
        "added": 0,
        "removed": 0,
        "changed": 1,
    }
    assert staleness(manifest, current[1:], rc, ses).removed == [f"{base}/anat/a_T1w.nii.gz"]
