from __future__ import annotations

import json

import pytest

from aind_assets.hbcd.manifests import (
    DerivativeManifest,
    manifest_diff,
    manifest_is_stale,
    manifest_relpath,
    parse_manifest_relpath,
)

RC = "NDARINVAAAA1111"
BASE = f"assembly_bids/sub-{RC}"
LISTING = [
    {"Key": f"{BASE}/sub-{RC}_sessions.tsv", "Size": 40, "LastModified": "2024-05-01T00:00:00Z"},
    {"Key": f"{BASE}/sub-{RC}_sessions.json", "Size": 400, "LastModified": "2024-05-01T00:00:00Z"},
    {"Key": f"{BASE}/ses-V02/anat/sub-{RC}_ses-V02_T1w.nii.gz", "Size": 1000, "LastModified": "2024-05-01T00:00:00Z"},
    {"Key": f"{BASE}/ses-V02/anat/sub-{RC}_ses-V02_T1w.json", "Size": 300, "LastModified": "2024-05-01T00:00:00Z"},
]  # fmt: skip


def _listing(**changes):
    out = [dict(e) for e in LISTING]
    for e in out:
        e.update(changes.get(e["Key"].rsplit("/", 1)[-1], {}))
    return out


def test_manifest_json_round_trip():
    m = DerivativeManifest.parse(json.dumps(LISTING))
    assert [e.Key for e in m.entries] == [e["Key"] for e in LISTING]
    again = DerivativeManifest.parse(m.to_json())
    assert again == m
    assert json.loads(m.to_json())[2] == {
        "Key": LISTING[2]["Key"],
        "Size": 1000,
        "LastModified": "2024-05-01T00:00:00Z",
    }
    wrapped = DerivativeManifest.parse(json.dumps({"Contents": LISTING}))
    assert wrapped == m
    with pytest.raises(ValueError, match="has no Contents/entries/files list"):
        DerivativeManifest.parse('{"x": 1}')


def test_not_stale_when_identical_or_only_sessions_files_or_times_change():
    m = DerivativeManifest.parse(json.dumps(LISTING))
    assert not manifest_is_stale(m, LISTING)
    changed = _listing(
        **{
            f"sub-{RC}_sessions.tsv": {"Size": 80},
            f"sub-{RC}_sessions.json": {"Size": 999},
            f"sub-{RC}_ses-V02_T1w.json": {"LastModified": "2025-01-01T00:00:00Z"},
        }
    )
    assert not manifest_is_stale(m, changed)
    without_sessions = [e for e in LISTING if "sessions" not in e["Key"]]
    assert not manifest_is_stale(m, without_sessions)


def test_stale_on_size_change_added_or_removed():
    m = DerivativeManifest.parse(json.dumps(LISTING))
    resized = _listing(**{f"sub-{RC}_ses-V02_T1w.nii.gz": {"Size": 1001}})
    d = manifest_diff(m, resized)
    assert d.stale and d.resized == [LISTING[2]["Key"]] and not d.added and not d.removed
    added = [*LISTING, {"Key": f"{BASE}/ses-V02/anat/sub-{RC}_ses-V02_T2w.nii.gz", "Size": 5}]
    assert manifest_diff(m, added).added == [added[-1]["Key"]]
    removed = LISTING[:3]
    assert manifest_diff(m, removed).removed == [LISTING[3]["Key"]]
    assert manifest_is_stale(m, removed)


def test_keys_normalised_prefix_and_etag():
    m = DerivativeManifest.parse(json.dumps(LISTING))
    fs_listing = [{"name": "s3://deid-bucket/" + e["Key"], "size": e["Size"]} for e in LISTING]
    assert not manifest_is_stale(m, fs_listing, root="s3://deid-bucket")
    other_session = [*LISTING, {"Key": f"{BASE}/ses-V03/anat/x.nii.gz", "Size": 1}]
    assert manifest_is_stale(m, other_session)
    assert not manifest_is_stale(m, other_session, prefix=f"{BASE}/ses-V02/")
    with_etag = [dict(e, ETag='"abc"') for e in LISTING]
    m2 = DerivativeManifest.from_listing(with_etag)
    assert not manifest_is_stale(m2, with_etag)
    assert manifest_diff(m2, [dict(e, ETag='"xyz"') for e in LISTING]).etag_changed
    assert not manifest_is_stale(m, [dict(e, ETag='"xyz"') for e in LISTING])  # no ETag in m


def test_manifest_relpath_round_trip():
    p = manifest_relpath(f"sub-{RC}", "bibsnet", "V02")
    assert p == f"ses-V02/cbrain_misc/sub-{RC}_bibsnet_ses-V02.json"
    name = parse_manifest_relpath("derivatives/" + p)
    assert (name.rc_id, name.pipeline, name.session) == (RC, "bibsnet", "V02")
    assert parse_manifest_relpath(manifest_relpath(RC, "nibabies_v24", "V03")).pipeline == (
        "nibabies_v24"
    )
    with pytest.raises(ValueError, match="not a cbrain_misc manifest path"):
        parse_manifest_relpath("ses-V02/bibsnet/x.json")
