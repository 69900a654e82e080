"""The LORIS change feed: each re-identification writes, on the identified side, the derivative
outputs removed, replaced and added, DCCID-keyed; the ``hbcd/loris_change_feed`` asset exposes
the counts only (real S3 server and a local folder)."""

from __future__ import annotations

import json

import dagster as dg

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.reid.assets import loris_change_feed
from aind_assets.hbcd.reid.changes import build_change_manifest, change_entry
from aind_assets.hbcd.reid.feed import change_feed_root, read_latest_changes
from aind_assets.hbcd.reid.store import reidentify_derivatives
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.conftest import MAP_CSV


def test_change_entries_are_dccid_keyed() -> None:
    e = change_entry("added", "ses-V02/bibsnet/sub-123456/ses-V02/anat/sub-123456_mask.nii.gz")
    assert (e.cand_id, e.visit_label, e.pipeline) == ("123456", "V02", "bibsnet")
    top = change_entry("replaced", "ses-V03/bibsnet/dataset_description.json")
    assert (top.cand_id, top.visit_label, top.pipeline) == (None, "V03", "bibsnet")
    m = build_change_manifest(["a/sub-1/x"], [], ["ses-V02/p/sub-2/y"], written_at="t")
    assert m["counts"] == {"removed": 1, "replaced": 0, "added": 1}
    assert m["candidates"] == ["1", "2"]
    assert m["changes"][0] == {
        "Change": "removed",
        "CandID": "1",
        "Visit_label": None,
        "Pipeline": None,
        "Path": "derivatives/a/sub-1/x",
    }


def test_feed_lists_removed_replaced_added_and_asset_shows_counts(
    store: ObjectStoreResource, idmap: IdentityMap
) -> None:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    a, b = idmap.rows[0], idmap.rows[1]
    deid, ident = layout.deidentified_derivatives, layout.identified_derivatives
    keep = f"ses-V02/p/sub-{a.rc_id}/ses-V02/sub-{a.rc_id}_stats.json"
    change = f"ses-V02/p/sub-{a.rc_id}/ses-V02/sub-{a.rc_id}_qc.tsv"
    gone = f"ses-V02/p/sub-{b.rc_id}/ses-V02/sub-{b.rc_id}_qc.tsv"
    for rel in (keep, change, gone):
        store.put_bytes(f"{deid}/{rel}", b"{}" if rel.endswith(".json") else b"a\tb\n")
    first = reidentify_derivatives(store, layout, idmap)
    assert first.changes == {"removed": 0, "replaced": 0, "added": 3}
    feed = read_latest_changes(store, layout)
    assert feed is not None and feed["candidates"] == sorted([a.dccid, b.dccid])

    store.delete(f"{deid}/{gone}")  # an output that no longer exists
    store.put_bytes(f"{deid}/{change}", b"a\tb\n1\t2\n")  # a newer output
    new = f"ses-V03/p/sub-{b.rc_id}/ses-V03/sub-{b.rc_id}_qc.tsv"
    store.put_bytes(f"{deid}/{new}", b"a\n")  # a new subject/session
    second = reidentify_derivatives(store, layout, idmap)
    assert second.changes == {"removed": 1, "replaced": 1, "added": 1}
    feed = read_latest_changes(store, layout)
    assert feed is not None
    rows = {(c["Change"], c["CandID"], c["Visit_label"], c["Pipeline"]) for c in feed["changes"]}
    assert rows == {
        ("removed", b.dccid, "V02", "p"),
        ("replaced", a.dccid, "V02", "p"),
        ("added", b.dccid, "V03", "p"),
    }
    paths = {c["Change"]: c["Path"] for c in feed["changes"]}
    assert paths["added"] == f"derivatives/ses-V03/p/sub-{b.dccid}/ses-V03/sub-{b.dccid}_qc.tsv"
    assert store.exists(f"{ident}/ses-V03/p/sub-{b.dccid}/ses-V03/sub-{b.dccid}_qc.tsv")
    # one timestamped manifest per run, plus latest.json
    assert len(store.list_objects(change_feed_root(layout))) == 3

    # the asset: counts only, no identifier
    map_url = store.url("pr/identifiers/release_identifiers.csv")
    store.put_bytes(map_url, MAP_CSV.encode())
    hbcd = HbcdResource(
        object_store=store,
        identity_map=IdentityMapResource(object_store=store, url=map_url),
        identified_root=layout.identified_root,
        deidentified_root=layout.deidentified_root,
    )
    result = dg.materialize([loris_change_feed], resources={"hbcd": hbcd})
    mat = result.asset_materializations_for_node("hbcd__loris_change_feed")[0]
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert (meta["removed"], meta["replaced"], meta["added"], meta["candidates"]) == (1, 1, 1, 2)
    shown = json.dumps({k: str(v) for k, v in meta.items()})
    assert a.dccid not in shown and b.dccid not in shown
