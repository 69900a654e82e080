"""Nothing under the identified tree is dropped silently: sessionless subjects are de-identified
by the dataset unit, and every other file is reported as refused with its type and reason,
without identifiers (real S3 server and a local folder)."""

from __future__ import annotations

import json

from aind_assets.hbcd.deid.commit import commit_session_write
from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.ledger import discover_sessions, write_discovery_report
from aind_assets.hbcd.deid.refused import REASON_TYPE, REASON_UNMAPPED, file_type, refusals
from aind_assets.hbcd.deid.scanning import scan_dataset
from aind_assets.hbcd.deid.store import deidentify_dataset, deidentify_session
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets_tests.hbcd.flow_support import identifier_hits


def _tree(idmap: IdentityMap) -> dict[str, bytes]:
    a, b = idmap.rows[0], idmap.rows[1]
    return {
        "dataset_description.json": b'{"Name": "x", "BIDSVersion": "1.9.0"}',
        "participants.tsv": f"participant_id\nsub-{a.dccid}\nsub-{b.dccid}\n".encode(),
        f"sub-{a.dccid}/ses-V02/anat/sub-{a.dccid}_ses-V02_T1w.json": b'{"x": 1}',
        f"sub-{a.dccid}/ses-V02/anat/sub-{a.dccid}_ses-V02_T1w.pdf": b"%PDF",
        f"sub-{a.dccid}/sub-{a.dccid}_sessions.tsv": b"session_id\nses-V02\n",
        # a sessionless subject: subject-level data and a subject-level file
        f"sub-{b.dccid}/anat/sub-{b.dccid}_T1w.json": f'{{"PatientID": "{b.pscid}"}}'.encode(),
        f"sub-{b.dccid}/sub-{b.dccid}_notes.txt": f"subject {b.pscid} at {b.site}\n".encode(),
        f"sub-{b.dccid}/eeg/sub-{b.dccid}_task-rest_eeg.xyz": b"?",
        # a subject missing from the map
        "sub-999999/ses-V02/anat/sub-999999_ses-V02_T1w.json": b"{}",
    }


def test_refusals_are_typed_and_identifier_free(idmap: IdentityMap) -> None:
    tree = _tree(idmap)
    out = refusals(tree, idmap)
    by_reason = {r.reason: r for r in out}
    assert {r.type for r in out} == {".pdf", ".xyz", ".json"}
    assert by_reason[REASON_UNMAPPED].path.startswith("<path ")
    assert all(r.path.startswith(("sub-NDARINV", "<path ")) for r in out)
    assert REASON_TYPE in by_reason
    assert not identifier_hits(json.dumps([r.as_dict() for r in out]), idmap, "refusals")
    assert file_type("a/b.nii.gz") == ".nii.gz" and file_type("README") == "(none)"
    assert file_type("x.123456") == "(hidden)"


def test_sessionless_subject_is_deidentified_and_refusals_reported(
    store: ObjectStoreResource, idmap: IdentityMap
) -> None:
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    for rel, data in _tree(idmap).items():
        store.put_bytes(join_url(layout.identified_bids, rel), data)
    a, b = idmap.rows[0], idmap.rows[1]

    result = discover_sessions(store, layout, idmap)
    assert list(result.discovery.sessionless_files) == [b.rc_id]
    plan = plan_requests(result.discovery, result.ledger, idmap)
    assert plan.dataset is not None and list(plan.sessions) == [f"sub-{a.rc_id}_ses-V02"]
    assert write_discovery_report(store, layout, result)
    report = json.loads(store.get_bytes(layout.discovery_report))
    assert report["sessionless_subjects"] == 1
    assert report["refused_by_type"] == {".json": 1, ".pdf": 1, ".xyz": 1}
    refused = json.dumps(report["refused_files"])
    assert not identifier_hits(refused, idmap, "report")

    done = deidentify_dataset(store, layout, idmap)
    assert done.ok
    assert f"sub-{b.rc_id}/anat/sub-{b.rc_id}_T1w.json" in done.written
    assert f"sub-{b.rc_id}/sub-{b.rc_id}_notes.txt" in done.written
    assert [r.as_dict()["type"] for r in done.refused] == [".xyz"]
    notes = store.get_bytes(
        join_url(layout.deidentified_bids, f"sub-{b.rc_id}/sub-{b.rc_id}_notes.txt")
    )
    assert notes == b"subject " + b.rc_id.encode() + b" at " + b.anon_site.encode() + b"\n"
    scan = scan_dataset(store, layout, idmap)
    # 2 top-level + 2 of the sessionless subject: scanned now, or as they were written
    assert scan.clean and scan.scanned + scan.unchanged == 4
    full = scan_dataset(store, layout, idmap, incremental=False)
    assert full.clean and full.scanned == 4

    key = f"sub-{a.rc_id}_ses-V02"
    session = deidentify_session(store, layout, idmap, key)
    assert session.ok and [r.type for r in session.refused] == [".pdf"]
    # until its leak check passes, the session's write is not committed: discovery redoes it
    again = discover_sessions(store, layout, idmap)
    assert list(plan_requests(again.discovery, again.ledger, idmap).sessions) == [key]
    commit_session_write(store, layout.deidentified_root, key)  # what the passing check does

    # unchanged: the ledger now matches, nothing requested
    again = discover_sessions(store, layout, idmap)
    assert plan_requests(again.discovery, again.ledger, idmap).empty

    # the sessionless subject's file removed at the source: the dataset run removes the copy
    store.delete(join_url(layout.identified_bids, f"sub-{b.dccid}/sub-{b.dccid}_notes.txt"))
    again = discover_sessions(store, layout, idmap)
    assert plan_requests(again.discovery, again.ledger, idmap).dataset is not None
    done = deidentify_dataset(store, layout, idmap)
    assert done.deleted == [f"sub-{b.rc_id}/sub-{b.rc_id}_notes.txt"]
