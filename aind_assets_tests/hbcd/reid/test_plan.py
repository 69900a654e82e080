"""Re-identification plans (pure): orphans, newer, new and unchanged derivatives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aind_assets.hbcd.copies import (
    META_SOURCE_ETAG,
    META_SOURCE_LAST_MODIFIED,
    DestObject,
    Write,
    iso,
    verified_unchanged,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.reid.plan import ReidLedgerEntry, plan_reidentify


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
