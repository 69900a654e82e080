"""Session discovery, ledger and request planning (pure)."""

from __future__ import annotations

from aind_assets.hbcd.deid.discovery import (
    DATASET_UNIT,
    EMPTY_DIGEST,
    Ledger,
    LedgerEntry,
    SourceObject,
    discover,
    ledger_name,
    parse_ledger_names,
    plan_requests,
    unit_digest,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.keys import decode_cursor, encode_cursor


def _listing(idmap: IdentityMap) -> list[SourceObject]:
    a, b = idmap.rows[0], idmap.rows[1]
    objs = [
        SourceObject("participants.tsv", 100, "p1"),
        SourceObject("dataset_description.json", 50, "d1"),
        SourceObject(f"sub-{a.dccid}/sub-{a.dccid}_sessions.tsv", 30, "s1"),
        SourceObject(f"sub-{b.dccid}/sub-{b.dccid}_sessions.tsv", 30, "s2"),
        SourceObject("sub-999999/ses-V02/anat/sub-999999_ses-V02_T1w.nii.gz", 10, "u1"),
        SourceObject("sub-999999/ses-V03/anat/sub-999999_ses-V03_T1w.nii.gz", 10, "u2"),
    ]
    for row in (a, b):
        for ses in ("V02", "V03"):
            stem = f"sub-{row.dccid}/ses-{ses}/anat/sub-{row.dccid}_ses-{ses}_T1w"
            objs.append(SourceObject(stem + ".nii.gz", 1000, f"{row.dccid}{ses}n"))
            objs.append(SourceObject(stem + ".json", 200, f"{row.dccid}{ses}j"))
    return objs


def _done(d) -> Ledger:  # noqa: ANN001
    ledger = Ledger()
    for key, s in d.sessions.items():
        ledger.entries[key] = LedgerEntry(s.digest, d.subject_digests[s.rc_id])
    ledger.entries[DATASET_UNIT] = LedgerEntry(d.dataset_digest, EMPTY_DIGEST)
    return ledger


def test_discover_groups_by_release_candidate_ids(idmap: IdentityMap) -> None:
    d = discover(_listing(idmap), idmap)
    a, b = idmap.rows[0], idmap.rows[1]
    assert sorted(d.sessions) == sorted(
        f"sub-{r.rc_id}_ses-{s}" for r in (a, b) for s in ("V02", "V03")
    )
    assert d.unmapped_subjects == 1  # sub-999999: counted, not processed
    assert len(d.dataset_files) == 2
    assert d.subject_sessions[a.rc_id] == [f"sub-{a.rc_id}_ses-V02", f"sub-{a.rc_id}_ses-V03"]
    # nothing identifying in what Dagster gets: keys, digests, counts and reprs
    text = repr(d) + repr(list(d.sessions.values())) + "".join(d.sessions)
    text += "".join(s.digest for s in d.sessions.values())
    for row in idmap.rows:
        assert row.dccid not in text and row.pscid not in text


def test_plan_requests_new_changed_removed_and_subject_level(idmap: IdentityMap) -> None:
    objs = _listing(idmap)
    d = discover(objs, idmap)
    plan = plan_requests(d, Ledger(), idmap)
    assert sorted(plan.sessions) == sorted(d.sessions) and plan.dataset == d.dataset_digest

    done = _done(d)
    assert plan_requests(d, done, idmap).empty

    a, b = idmap.rows[0], idmap.rows[1]
    # one changed file -> only its session
    changed = [
        SourceObject(o.rel, o.size + 1, "new")
        if o.rel.endswith(f"{a.dccid}_ses-V03_T1w.json")
        else o
        for o in objs
    ]
    plan = plan_requests(discover(changed, idmap), done, idmap)
    assert list(plan.sessions) == [f"sub-{a.rc_id}_ses-V03"] and plan.dataset is None

    # a subject-level file changed and no session did -> one run (the subject's last session)
    changed = [
        SourceObject(o.rel, o.size, "new") if o.rel.endswith(f"{b.dccid}_sessions.tsv") else o
        for o in objs
    ]
    plan = plan_requests(discover(changed, idmap), done, idmap)
    assert list(plan.sessions) == [f"sub-{b.rc_id}_ses-V03"]

    # a session removed from the source -> requested once, so its copy is removed
    removed = [o for o in objs if f"{a.dccid}/ses-V02/" not in o.rel]
    plan = plan_requests(discover(removed, idmap), done, idmap)
    assert plan.removed == [f"sub-{a.rc_id}_ses-V02"]
    assert plan.sessions == {f"sub-{a.rc_id}_ses-V02": unit_digest(EMPTY_DIGEST, EMPTY_DIGEST)}
    done.entries[f"sub-{a.rc_id}_ses-V02"] = LedgerEntry(EMPTY_DIGEST, EMPTY_DIGEST)
    assert plan_requests(discover(removed, idmap), done, idmap).empty

    # dataset-level change
    changed = [SourceObject(o.rel, o.size, "x") if o.rel == "participants.tsv" else o for o in objs]
    plan = plan_requests(discover(changed, idmap), _done(d), idmap)
    assert plan.sessions == {} and plan.dataset is not None


def test_in_flight_requests_are_not_repeated_and_limit_defers(idmap: IdentityMap) -> None:
    d = discover(_listing(idmap), idmap)
    first = plan_requests(d, Ledger(), idmap, limit=3)
    assert len(first.sessions) == 3 and first.deferred == 1
    in_flight = {**first.sessions, DATASET_UNIT: first.dataset}
    second = plan_requests(d, Ledger(), idmap, in_flight=in_flight, limit=3)
    assert len(second.sessions) == 1 and second.dataset is None
    assert not set(second.sessions) & set(first.sessions)


def test_ledger_names_and_cursor_round_trip() -> None:
    names = [
        (ledger_name("sub-A_ses-V02", "a" * 16, "b" * 16), 1.0),
        (ledger_name("sub-A_ses-V02", "c" * 16, "b" * 16), 2.0),
        (ledger_name(DATASET_UNIT, "d" * 16), 1.0),
        ("junk/file", 3.0),
    ]
    ledger = parse_ledger_names(names)
    assert ledger.get("sub-A_ses-V02") == LedgerEntry("c" * 16, "b" * 16)
    assert ledger.superseded == [ledger_name("sub-A_ses-V02", "a" * 16, "b" * 16)]
    assert ledger.get(DATASET_UNIT).session_digest == "d" * 16
    state = {f"sub-NDARINV{i:08d}_ses-V02": f"{i:016x}.{i:016x}" for i in range(2000)}
    cursor = encode_cursor(state)
    assert decode_cursor(cursor) == state
    assert len(cursor) < 40 * len(state)
    assert decode_cursor(None) == {} and decode_cursor("garbage") == {}
