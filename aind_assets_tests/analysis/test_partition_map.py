"""The partition map (a log of per-page chunks in DocDB) on the real Mongo-wire server."""

from __future__ import annotations

from aind_assets.analysis.discovery import (
    CHANGED,
    NEW,
    SAME,
    DiscoveredPartition,
    KnownPartitions,
    PartitionMap,
)


def part(key: str, spec: str = "a", ids: tuple = ("1",), group=None) -> DiscoveredPartition:
    return DiscoveredPartition(
        key=key,
        spec=spec,
        docdb_record_id=ids,
        asset_name=tuple(f"name-{i}" for i in ids),
        s3_location=tuple(f"s3://b/name-{i}" for i in ids),
        group_metadata=group,
    )


def test_record_lookup_change_and_remove(docdb):
    pmap = PartitionMap(docdb, "dispatch_partitions", chunk_size=2)
    first = [part("k1"), part("k2", ids=("2",)), part("k3", ids=("3",))]
    assert pmap.record(first, exists=lambda k: False) == {"k1": NEW, "k2": NEW, "k3": NEW}
    assert docdb.count("dispatch_partitions") == 2  # one document per chunk, not per key
    assert pmap.get("k2")["specs"]["a"]["docdb_record_id"] == ["2"]
    assert pmap.get("nope") is None

    # registered and unchanged: same; a new member: changed, and the old entry is pulled
    grown = part("k1", ids=("1", "9"), group={"subject__subject_id": "1"})
    assert pmap.record([part("k2", ids=("2",)), grown]) == {"k2": SAME, "k1": CHANGED}
    entry = pmap.get("k1")["specs"]["a"]
    assert entry["docdb_record_id"] == ["1", "9"] and entry["group_metadata"] == {
        "subject__subject_id": "1"
    }
    assert sum(len(c["entries"]) for c in pmap.chunks("a", after=None, limit=10)) == 3

    # the same key selected by another spec: one partition, an entry per spec
    assert pmap.record([part("k2", spec="b", ids=("2",))]) == {"k2": NEW}
    assert set(pmap.get("k2")["specs"]) == {"a", "b"}
    assert pmap.remove("a", ["k2", "k3"]) == ["k3"]  # k2 still has spec b
    assert set(pmap.get("k2")["specs"]) == {"b"} and pmap.get("k3") is None
    assert pmap.remove("b", ["k2"]) == ["k2"]
    assert [c["spec"] for c in pmap.chunks("b", after=None, limit=10)] == ["b"]


def test_known_partitions_looks_up_a_few_keys_and_reads_all_for_many():
    registered = {f"k{i}" for i in range(10)}
    calls = {"has": 0, "all": 0}

    def has(key):
        calls["has"] += 1
        return key in registered

    def every():
        calls["all"] += 1
        return sorted(registered)

    known = KnownPartitions(has, every, bulk_threshold=3)
    assert known.check(["k1", "new1"]) == {"k1": True, "new1": False}
    assert calls == {"has": 2, "all": 0}
    known.add(["new1"])
    assert known.check(["new1"]) == {"new1": True} and calls["has"] == 2
    many = known.check(["k2", "k3", "new2"])  # past the threshold: one read of every key
    assert many == {"k2": True, "k3": True, "new2": False}
    assert calls == {"has": 2, "all": 1}
    assert known.check(["k4", "new3"]) == {"k4": True, "new3": False}
    assert calls == {"has": 2, "all": 1}
