"""Incremental sync plans (pure): de-identification and re-identification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aind_assets.hbcd.copies import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    META_SOURCE_LAST_MODIFIED,
    DestObject,
    Write,
    iso,
    verified_unchanged,
)
from aind_assets.hbcd.deid.discovery import RULES_VERSION, SourceObject
from aind_assets.hbcd.deid.plan import in_session_scope, plan_session_sync
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.manifests import DerivativeManifest
from aind_assets.hbcd.processing.staleness import staleness
from aind_assets.hbcd.reid.plan import ReidLedgerEntry, plan_reidentify


def _meta(etag: str, rules: str = RULES_VERSION) -> dict[str, str]:
    return {META_SOURCE_ETAG: etag, META_DEID_RULES: rules}


def test_session_plan_writes_only_what_changed(idmap: IdentityMap) -> None:
    row = idmap.rows[0]
    d, rc = row.dccid, row.rc_id
    sources = [
        SourceObject(f"sub-{d}/ses-V02/anat/sub-{d}_ses-V02_T1w.nii.gz", 10, "e1"),
        SourceObject(f"sub-{d}/ses-V02/anat/sub-{d}_ses-V02_T1w.json", 10, "e2"),
        SourceObject(f"sub-{d}/ses-V02/sub-{d}_ses-V02_scans.tsv", 10, "e3"),
        SourceObject(f"sub-{d}/ses-V02/anat/sub-{d}_ses-V02_T1w.dcm", 10, "e4"),
        SourceObject(f"sub-{d}/sub-{d}_sessions.tsv", 10, "e5"),
    ]
    existing = [
        DestObject(
            f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_T1w.nii.gz", 9, "x", metadata=_meta("e1")
        ),
        DestObject(
            f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_T1w.json", 9, "x", metadata=_meta("old")
        ),
        DestObject(
            f"sub-{rc}/ses-V02/sub-{rc}_ses-V02_scans.tsv", 9, "x", metadata=_meta("e3", "0")
        ),
        DestObject(f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_old.txt", 9, "x"),
        DestObject(f"sub-{rc}/ses-V03/anat/sub-{rc}_ses-V03_T1w.json", 9, "x"),  # other session
    ]
    plan = plan_session_sync(sources, existing, idmap, rc_id=rc, session="V02")
    assert plan.unchanged == [f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_T1w.nii.gz"]
    assert {(w.dst.rsplit("/", 1)[-1], w.reason) for w in plan.write} == {
        (f"sub-{rc}_ses-V02_T1w.json", "changed"),  # source changed
        (f"sub-{rc}_ses-V02_scans.tsv", "changed"),  # rules changed
        (f"sub-{rc}_sessions.tsv", "new"),
    }
    assert plan.unsupported == [f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_T1w.dcm"]
    assert plan.delete == [f"sub-{rc}/ses-V02/anat/sub-{rc}_ses-V02_old.txt"]
    assert all(d not in repr(plan) for d in (row.dccid, row.pscid))


def test_session_plan_refuses_collisions_and_foreign_subjects(idmap: IdentityMap) -> None:
    row, other = idmap.rows[0], idmap.rows[1]
    d, rc = row.dccid, row.rc_id
    sources = [
        SourceObject(f"sub-{d}/ses-V02/sub-{d}_notes.txt", 1, "a"),
        SourceObject(f"sub-{d}/ses-V02/sub-{row.pscid}_notes.txt", 1, "b"),  # same de-id name
        SourceObject(f"sub-{d}/ses-V02/sub-{other.dccid}_x.txt", 1, "c"),  # another subject
        SourceObject(f"sub-{d}/ses-V02/sub-424242_y.txt", 1, "d"),  # unmapped subject
    ]
    plan = plan_session_sync(sources, [], idmap, rc_id=rc, session="V02")
    assert plan.collisions == [f"sub-{rc}/ses-V02/sub-{rc}_notes.txt"]
    assert [w.dst for w in plan.write] == [f"sub-{rc}/ses-V02/sub-{other.rc_id}_x.txt"]
    assert len(plan.unmapped) == 1 and plan.unmapped[0].startswith("<path ")
    assert in_session_scope(f"sub-{rc}/sub-{rc}_sessions.tsv", rc, "V02")
    assert not in_session_scope(f"sub-{rc}/ses-V03/a.txt", rc, "V02")


def test_reidentify_plan_orphan_newer_new_unchanged(idmap: IdentityMap) -> None:
    row = idmap.rows[0]
    rc, d = row.rc_id, row.dccid
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    src = [
        DestObject(f"ses-V02/p/sub-{rc}/a.json", 1, "ea", t0),  # unchanged (ledger)
        DestObject(f"ses-V02/p/sub-{rc}/b.json", 1, "eb2", t0 + timedelta(hours=1)),  # newer
        DestObject(f"ses-V02/p/sub-{rc}/c.json", 1, "ec", t0),  # new
        DestObject(f"ses-V02/p/sub-{rc}/d.json", 1, "ed", t0),  # exists, no ledger: verify
        DestObject("ses-V02/p/sub-NDARINVUNKNOWN1/e.json", 1, "ee", t0),  # not in the map
    ]
    dst = [
        DestObject(f"ses-V02/p/sub-{d}/a.json", 1, "da", t0),
        DestObject(f"ses-V02/p/sub-{d}/b.json", 1, "db", t0),
        DestObject(f"ses-V02/p/sub-{d}/d.json", 1, "dd", t0),
        DestObject(f"ses-V02/p/sub-{d}/orphan.json", 1, "do", t0),
    ]
    ledger = {
        f"ses-V02/p/sub-{rc}/a.json": ReidLedgerEntry("ea", iso(t0), "da"),
        f"ses-V02/p/sub-{rc}/b.json": ReidLedgerEntry("eb", iso(t0), "db"),
    }
    plan = plan_reidentify(src, dst, idmap, ledger)
    assert plan.unchanged == [f"ses-V02/p/sub-{rc}/a.json"]
    assert [(w.dst, w.reason) for w in plan.copy] == [
        (f"ses-V02/p/sub-{d}/b.json", "newer"),
        (f"ses-V02/p/sub-{d}/c.json", "new"),
    ]
    assert [w.dst for w in plan.verify] == [f"ses-V02/p/sub-{d}/d.json"]
    assert plan.delete == [f"ses-V02/p/sub-{d}/orphan.json"]
    assert plan.unmapped == ["ses-V02/p/sub-NDARINVUNKNOWN1/e.json"]
    w = plan.verify[0]
    meta = {META_SOURCE_LAST_MODIFIED: iso(t0), META_SOURCE_ETAG: "ed"}
    assert verified_unchanged(w, meta)
    assert not verified_unchanged(Write(w.src, w.dst, "other", "new", t0), meta)


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
