"""Data versions of identified sessions from a listing (pure)."""

from __future__ import annotations

from aind_assets.hbcd.deid.discovery import SourceObject, discover
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.sources.versions import (
    ABSENT,
    consumed_version,
    listing_version,
    observe,
)


def _listing(idmap: IdentityMap, *, etag: str = "e1", extra: bool = False) -> list[SourceObject]:
    a, b = idmap.rows[0], idmap.rows[1]
    objs = [SourceObject("participants.tsv", 100, "p1")]
    for row in (a, b):
        stem = f"sub-{row.dccid}/ses-V02/anat/sub-{row.dccid}_ses-V02_T1w"
        tag = etag if row is a else "e1"
        objs += [SourceObject(stem + ".nii.gz", 1000, tag), SourceObject(stem + ".json", 20, "j")]
    if extra:
        objs.append(SourceObject(f"sub-{a.dccid}/ses-V02/func/sub-{a.dccid}_bold.json", 5, "f"))
    return objs


def _keys(idmap: IdentityMap) -> list[str]:
    return [f"sub-{r.rc_id}_ses-V02" for r in idmap.rows[:2]]


def test_version_changes_with_any_file_and_not_with_order() -> None:
    files = [SourceObject("a/x.nii.gz", 10, "e1"), SourceObject("a/x.json", 2, "j")]
    base = listing_version(files)
    assert len(base) == 16 and base == listing_version(list(reversed(files)))
    assert listing_version([SourceObject("a/x.nii.gz", 10, "e2"), files[1]]) != base  # rewritten
    assert listing_version([SourceObject("a/x.nii.gz", 11, "e1"), files[1]]) != base  # resized
    assert listing_version(files[:1]) != base  # removed
    assert listing_version([*files, SourceObject("a/y.tsv", 1, None)]) != base  # added
    assert listing_version([]) != base


def test_observe_reports_changes_of_registered_sessions_only(idmap: IdentityMap) -> None:
    k0, k1 = _keys(idmap)
    first, state = observe(discover(_listing(idmap), idmap), {}, [k0])
    assert [o.partition_key for o in first] == [k0]  # k1 not registered yet
    assert (first[0].files, first[0].bytes) == (2, 1020)
    assert state == {k0: first[0].version}

    again, state2 = observe(discover(_listing(idmap), idmap), state, [k0, k1])
    assert [o.partition_key for o in again] == [k1]  # registered since; k0 unchanged
    unchanged, _ = observe(discover(_listing(idmap), idmap), state2, [k0, k1])
    assert unchanged == []

    changed, state3 = observe(discover(_listing(idmap, etag="e2"), idmap), state2, [k0, k1])
    assert [o.partition_key for o in changed] == [k0]
    assert changed[0].version not in (first[0].version, state2[k1])
    added, _ = observe(discover(_listing(idmap, extra=True), idmap), state2, [k0, k1])
    assert [(o.partition_key, o.files) for o in added] == [(k0, 3)]


def test_observe_reports_a_removed_session_once(idmap: IdentityMap) -> None:
    k0, k1 = _keys(idmap)
    _, state = observe(discover(_listing(idmap), idmap), {}, [k0, k1])
    without_a = [o for o in _listing(idmap) if f"sub-{idmap.rows[0].dccid}/" not in o.rel]
    gone, state = observe(discover(without_a, idmap), state, [k0, k1])
    assert [(o.partition_key, o.version, o.files) for o in gone] == [(k0, ABSENT, 0)]
    assert observe(discover(without_a, idmap), state, [k0, k1])[0] == []
    back, _ = observe(discover(_listing(idmap), idmap), state, [k0, k1])
    assert [o.partition_key for o in back] == [k0] and back[0].version != ABSENT


def test_lost_state_reports_the_same_versions(idmap: IdentityMap) -> None:
    keys = _keys(idmap)
    first, _ = observe(discover(_listing(idmap), idmap), {}, keys)
    again, _ = observe(discover(_listing(idmap), idmap), {}, keys)
    assert [(o.partition_key, o.version) for o in again] == [
        (o.partition_key, o.version) for o in first
    ]


def test_versions_hold_no_identifier(idmap: IdentityMap) -> None:
    first, state = observe(discover(_listing(idmap), idmap), {}, _keys(idmap))
    text = repr(first) + repr(state)
    for row in idmap.rows:
        assert row.dccid not in text and row.pscid not in text


def test_consumed_version_follows_sources_and_code() -> None:
    base = consumed_version({"s1": "v1"}, "2")
    assert base == consumed_version({"s1": "v1"}, "2")
    assert consumed_version({"s1": "v2"}, "2") != base
    assert consumed_version({"s1": "v1"}, "3") != base
    assert consumed_version({"s1": None}, "2") != base
    assert consumed_version({"s1": "v1", "s2": "v1"}, "2") == consumed_version(
        {"s2": "v1", "s1": "v1"}, "2"
    )


def test_first_sight_of_a_session_already_deidentified_from_it_is_not_reported(
    idmap: IdentityMap,
) -> None:
    k0, k1 = _keys(idmap)
    d = discover(_listing(idmap), idmap)
    done = {k0: d.sessions[k0].digest, k1: "0" * 16}  # k1 was de-identified from other files
    first, state = observe(d, {}, [k0, k1], done)
    assert [o.partition_key for o in first] == [k1]
    assert state[k0] == listing_version(d.sessions[k0].files)
    # a later change of k0 is reported as usual
    changed, _ = observe(discover(_listing(idmap, etag="e2"), idmap), state, [k0, k1], done)
    assert [o.partition_key for o in changed] == [k0]
