"""Incremental de-identification plans (pure)."""

from __future__ import annotations

from aind_assets.hbcd.copies import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    DestObject,
)
from aind_assets.hbcd.deid.discovery import RULES_VERSION, SourceObject
from aind_assets.hbcd.deid.plan import in_session_scope, plan_session_sync
from aind_assets.hbcd.identity.idmap import IdentityMap


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
