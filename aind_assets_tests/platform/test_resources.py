"""DocDB and object-store resources against the real servers."""

import threading
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from aind_assets.resources.docdb import DocDBResource, LeaseHeldError
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import relative_key


def test_object_store_operations(
    store: ObjectStoreResource, local_store: ObjectStoreResource
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.put_bytes(store.url("a/x/1.nwb"), b"one")
    store.put_bytes(store.url("a/x/2.txt"), b"two!")
    store.put_bytes(store.url("a/y/deep/3.nwb"), b"three", metadata={"source-etag": "abc123"})
    store.put_bytes(store.url("b/4.nwb"), b"4")

    listed = store.list_objects(store.url("a"))
    assert [relative_key(i.url, store.url("a")) for i in listed] == [
        "x/1.nwb",
        "x/2.txt",
        "y/deep/3.nwb",
    ]
    assert [i.size for i in listed] == [3, 4, 5]
    assert all(i.last_modified >= before and i.etag for i in listed)
    assert store.list_objects(store.url("missing")) == []

    assert store.glob(store.url("a/**/*.nwb")) == [
        store.url("a/x/1.nwb"),
        store.url("a/y/deep/3.nwb"),
    ]
    many = store.list_many([store.url("a/x"), store.url("b"), store.url("nothing")])
    assert {k: len(v) for k, v in many.items()} == {
        store.url("a/x"): 2,
        store.url("b"): 1,
        store.url("nothing"): 0,
    }

    info = store.info(store.url("a/y/deep/3.nwb"))
    assert info.size == 5 and info.metadata == {"source-etag": "abc123"}
    # a changed object gets a new version token / ETag
    old = store.info(store.url("a/x/1.nwb")).etag
    store.put_bytes(store.url("a/x/1.nwb"), b"one, changed")
    assert store.info(store.url("a/x/1.nwb")).etag != old

    # streaming copy to another root (other backend), with metadata
    dst = local_store.url("copied/3.nwb")
    store.copy(store.url("a/y/deep/3.nwb"), dst, metadata={"source-last-modified": "2025-01-01"})
    assert local_store.get_bytes(dst) == b"three"
    assert local_store.info(dst).metadata == {"source-last-modified": "2025-01-01"}
    # copy within the store (server-side on S3) and concurrent copies
    store.copy_many(
        [
            (store.url("b/4.nwb"), store.url("c/4.nwb")),
            (store.url("a/x/2.txt"), store.url("c/2.txt")),
        ]
    )
    assert store.get_bytes(store.url("c/4.nwb")) == b"4"
    assert store.get_bytes(store.url("c/2.txt")) == b"two!"

    store.delete([store.url("c/4.nwb"), store.url("c/never-was")])
    assert not store.exists(store.url("c/4.nwb")) and store.exists(store.url("c/2.txt"))
    store.delete(store.url("a"), recursive=True)
    assert store.list_objects(store.url("a")) == []


def test_docdb_operations(docdb: DocDBResource) -> None:
    docs = [
        {"_id": f"id{i}", "name": f"asset{i}", "n": i, "subject": {"subject_id": str(i % 3)}}
        for i in range(10)
    ]
    assert docdb.bulk_upsert("assets", docs) == 10
    docdb.upsert(
        "assets",
        {"_id": "id3"},
        {"_id": "id3", "name": "asset3", "n": 33, "subject": {"subject_id": "0"}},
    )
    assert docdb.count("assets") == 10
    found = list(
        docdb.find("assets", {"n": {"$gte": 8}}, projection={"name": 1, "_id": 0}, sort=[("n", -1)])
    )
    assert found == [{"name": "asset3"}, {"name": "asset9"}, {"name": "asset8"}]
    # a cursor pages through results in batches
    assert len(list(docdb.find("assets", {}, batch_size=3))) == 10
    grouped = docdb.aggregate(
        "assets",
        [
            {"$group": {"_id": "$subject.subject_id", "names": {"$push": "$name"}}},
            {"$sort": {"_id": 1}},
        ],
    )
    assert [g["_id"] for g in grouped] == ["0", "1", "2"]
    assert sorted(grouped[0]["names"]) == ["asset0", "asset3", "asset6", "asset9"]


def test_insert_unique_is_race_free(docdb: DocDBResource, mongo_server_uri: str) -> None:
    """Two concurrent writers of one record name: exactly one wins."""
    docdb.ensure_index("records", "name", unique=True)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        own = DocDBResource(uri=mongo_server_uri, database=docdb.database)
        barrier.wait()
        results.append(own.insert_unique("records", {"name": "same-hash", "writer": i}))
        own.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert docdb.count("records", {"name": "same-hash"}) == 1
    indexes = pymongo.MongoClient(mongo_server_uri)[docdb.database]["records"].index_information()
    assert any(ix.get("unique") for ix in indexes.values())


def test_lease_has_one_holder_and_takes_over_only_stale_ones(
    docdb: DocDBResource, mongo_server_uri: str
) -> None:
    other = DocDBResource(uri=mongo_server_uri, database=docdb.database)
    with docdb.lease("release/r1", "run-a"):
        with (
            pytest.raises(LeaseHeldError, match="release/r1 is held by run-a") as held,
            other.lease("release/r1", "run-b"),
        ):
            pass
        assert held.value.holder == "run-a"
        with other.lease("release/r2", "run-b"):  # another name is another lease
            assert docdb.count("leases", {}) == 2
        assert docdb.find_one("leases", {"name": "release/r1"})["holder"] == "run-a"
    assert docdb.count("leases", {}) == 0  # released on exit, errors included

    # a holder that died leaves its lease; only a taker that finds it stale takes it over
    docdb.insert_unique("leases", {"name": "release/r1", "holder": "dead-run", "since": 0})
    with (
        pytest.raises(LeaseHeldError, match="held by dead-run"),
        other.lease("release/r1", "run-b"),
    ):
        pass
    with other.lease("release/r1", "run-b", is_stale=lambda d: d["holder"] == "dead-run"):
        assert docdb.find_one("leases", {"name": "release/r1"})["holder"] == "run-b"
    assert docdb.count("leases", {}) == 0
    other.close()


def test_a_failed_write_leaves_no_object(store: ObjectStoreResource) -> None:
    """A transform that fails midway: the destination never appears, not even partly."""
    store.put_bytes(store.url("src.bin"), b"x" * (12 * 2**20))  # several S3 parts

    def broken(reader, writer) -> None:
        writer.write(reader.read(6 * 2**20))
        raise RuntimeError("transform failed midway")

    with pytest.raises(RuntimeError, match="midway"):
        store.copy(store.url("src.bin"), store.url("dst.bin"), transform=broken)
    assert not store.exists(store.url("dst.bin"))
    with (
        pytest.raises(ValueError, match="caller failed"),
        store.open(store.url("direct.bin"), "wb") as f,
    ):
        f.write(b"partial")
        raise ValueError("caller failed")
    assert not store.exists(store.url("direct.bin"))
