"""Store-level pieces of the HBCD flow on both backends (real S3 server and a local folder):
atomic writes, the identity-map resource, scrubbed errors, and re-identification."""

from __future__ import annotations

import gzip
import json

import pytest

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.scrub import HbcdError, scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.reid.store import reidentify_derivatives
from aind_assets.hbcd.resources import IdentityMapResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.conftest import MAP_CSV


def test_flow_writes_keep_nothing_half_written(store: ObjectStoreResource) -> None:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    url = store.url("deid/assembly_bids/x.bin")
    store.put_bytes(url, b"old version")
    big = b"x" * (12 << 20)  # several multipart parts on S3
    with (
        pytest.raises(RuntimeError, match="boom"),
        store.open(url, "wb", {"source-etag": "new"}) as f,
    ):
        f.write(big)
        raise RuntimeError("boom")
    assert store.get_bytes(url) == b"old version"
    with store.open(url, "wb", {"source-etag": "new"}) as f:
        f.write(big)
    info = store.info(url)
    assert info.size == len(big) and info.metadata["source-etag"] == "new"
    # no stray temporary objects under the tree
    assert [i.url for i in store.list_objects(layout.deidentified_bids)] == [url]


def test_identity_map_resource(store: ObjectStoreResource, idmap: IdentityMap) -> None:
    url = store.url("pr/identifiers/release_identifiers.csv")
    res = IdentityMapResource(object_store=store, url=url)
    with pytest.raises(HbcdError, match="identity map not found at"):
        res.load()
    store.put_bytes(url, MAP_CSV.encode())
    loaded = res.load()
    assert loaded is res.load()  # cached while unchanged
    assert [r.rc_id for r in loaded] == [r.rc_id for r in idmap]
    assert "123456" not in repr(loaded)
    bad = MAP_CSV + "123456,UMN0099,UMN,NDARINVDDDD4444,site01\n"
    store.put_bytes(url, bad.encode())
    with pytest.raises(HbcdError, match=r"release_identifiers\.csv: row 5") as e:
        res.load()
    assert "row 5: duplicate DCCID (same as row 2)" in str(e.value)
    assert "123456" not in str(e.value)
    store.put_bytes(url, MAP_CSV.replace("UCSD0034", "").encode())
    with pytest.raises(HbcdError, match="row 3: missing PSCID"):
        res.load()


def test_scrubbed_errors_hide_identifiers(idmap: IdentityMap) -> None:
    row = idmap.rows[0]
    with (
        pytest.raises(HbcdError, match="^copying: FileNotFoundError: ") as e,
        scrubbed_errors(idmap, "copying"),
    ):
        raise FileNotFoundError(f"s3://pr/assembly_bids/sub-{row.dccid}%2F{row.pscid}x/{row.site}")
    assert (
        str(e.value)
        == "copying: FileNotFoundError: s3://pr/assembly_bids/sub-<DCCID>%2F<PSCID>x/<site>"
    )
    assert e.value.__suppress_context__ and e.value.__cause__ is None


def test_reidentify_new_newer_orphan_unchanged(
    store: ObjectStoreResource, idmap: IdentityMap
) -> None:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    row = idmap.rows[0]
    rc, d = row.rc_id, row.dccid
    deid = layout.deidentified_derivatives
    files = {
        f"ses-V02/p/sub-{rc}/ses-V02/sub-{rc}_report.html": f"<p>sub-{rc} at {row.anon_site}</p>".encode(),
        f"ses-V02/p/sub-{rc}/ses-V02/sub-{rc}_table.csv": f"id,code\nsub-{rc},9{rc}7\n".encode(),
        f"ses-V02/p/sub-{rc}/ses-V02/anat/sub-{rc}_T1w.nii.gz": gzip.compress(
            f"binary sub-{rc}".encode()
        ),
        "ses-V02/p/dataset_description.json": json.dumps({"Name": "p"}).encode(),
    }
    for rel, data in files.items():
        store.put_bytes(f"{deid}/{rel}", data)
    store.put_bytes(f"{layout.identified_derivatives}/ses-V02/p/sub-{d}/old.txt", b"orphan")
    first = reidentify_derivatives(store, layout, idmap)
    assert (len(first.new), len(first.newer), first.orphans_deleted) == (4, 0, 1)
    ident = layout.identified_derivatives
    html = store.get_bytes(f"{ident}/ses-V02/p/sub-{d}/ses-V02/sub-{d}_report.html").decode()
    assert html == f"<p>sub-{d} at {row.site}</p>"
    csv = store.get_bytes(f"{ident}/ses-V02/p/sub-{d}/ses-V02/sub-{d}_table.csv").decode()
    assert csv == f"id,code\nsub-{d},9{rc}7\n"  # whole tokens only
    nii = f"{ident}/ses-V02/p/sub-{d}/ses-V02/anat/sub-{d}_T1w.nii.gz"
    assert store.get_bytes(nii) == files[f"ses-V02/p/sub-{rc}/ses-V02/anat/sub-{rc}_T1w.nii.gz"]
    src_info = store.info(f"{deid}/ses-V02/p/sub-{rc}/ses-V02/anat/sub-{rc}_T1w.nii.gz")
    assert store.info(nii).metadata["source-last-modified"] == src_info.last_modified.isoformat()

    # nothing changed: all recognised from listings and the ledger
    second = reidentify_derivatives(store, layout, idmap)
    assert (len(second.new), len(second.newer), second.orphans_deleted, second.unchanged) == (
        0,
        0,
        0,
        4,
    )
    # without the ledger, the copies' metadata proves them current
    store.delete(layout.reid_ledger)
    third = reidentify_derivatives(store, layout, idmap)
    assert (len(third.new), len(third.newer), third.unchanged) == (0, 0, 4)
    # a newer source replaces its copy
    store.put_bytes(
        f"{deid}/ses-V02/p/dataset_description.json", json.dumps({"Name": "p2"}).encode()
    )
    fourth = reidentify_derivatives(store, layout, idmap)
    assert fourth.newer == ["ses-V02/p/dataset_description.json"] and fourth.unchanged == 3
    assert json.loads(store.get_bytes(f"{ident}/ses-V02/p/dataset_description.json")) == {
        "Name": "p2"
    }
