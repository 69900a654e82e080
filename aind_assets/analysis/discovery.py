"""Discovery: DocDB records → dispatch partitions, page by page (pure: no Dagster).

Used by the discovery sensors and by ``aind-assets partitions sync``. One page is:

1. the *probe* (:func:`queries.pipeline_for_page`): the spec's query after the cursor, sorted by
   ``(last_modified, _id)``, limited to the page size, small projection;
2. the dispatch rows those records affect (:func:`queries.pipeline_for_changes`) — or, for plain
   specs (no grouping, latest filtering or unwinding) where a row is a record, the rows straight
   from the probe, saving a query;
3. a partition key per row (:func:`partition_key_of`) and its entry in the **partition map**, a
   DocDB collection holding, per key and per spec, the DocDB ids, asset names, locations and
   group metadata (:class:`PartitionMap`).

Every step costs what the page holds, never what DocDB holds, provided DocDB has an index on
``(last_modified, _id)`` (``ensure_indexes``) — the mapping is keyed by partition key (``_id``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aind_assets.analysis import queries
from aind_assets.analysis.models import DispatchSpec
from aind_assets.analysis.registry import canonical_json

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource

__all__ = [
    "DiscoveredPartition",
    "Page",
    "PartitionMap",
    "discover_page",
    "discover_pages",
    "ensure_indexes",
    "find_gone",
    "partition_key_of",
    "rows_are_records",
    "rows_to_partitions",
]

#: Insert/compare statuses of :meth:`PartitionMap.record`.
NEW, CHANGED, SAME = "new", "changed", "same"


def partition_key_of(row: Mapping[str, Any], spec: DispatchSpec) -> str:
    """The partition key of a dispatch row: the group key when grouping, else the asset name."""
    if spec.group_by:
        return queries.partition_key_for(dict(row.get("group_metadata") or {}))
    names = row.get("asset_name") or []
    if not names:
        raise ValueError(f"dispatch row without asset_name: {dict(row)!r}")
    return queries.partition_key_for(str(names[0]))


def rows_are_records(spec: DispatchSpec) -> bool:
    """True when each dispatch row is exactly one record (the probe can give the rows)."""
    return not (
        spec.group_by
        or spec.filter_latest
        or spec.unwind_list_fields
        or (spec.drop_null_groups and spec.filter_by)
    )


@dataclass(frozen=True)
class DiscoveredPartition:
    """One partition key of one spec, with the DocDB records it covers."""

    key: str
    spec: str
    docdb_record_id: tuple[Any, ...]
    asset_name: tuple[str, ...]
    s3_location: tuple[str, ...]
    group_metadata: Mapping[str, Any] | None = None

    @property
    def members_hash(self) -> str:
        members = sorted(
            zip(map(str, self.docdb_record_id), self.asset_name, self.s3_location, strict=True)
        )
        payload = canonical_json({"members": members, "group": self.group_metadata})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def entry(self) -> dict[str, Any]:
        """The spec's entry in the partition map document."""
        return {
            "docdb_record_id": list(self.docdb_record_id),
            "asset_name": list(self.asset_name),
            "s3_location": list(self.s3_location),
            "group_metadata": dict(self.group_metadata) if self.group_metadata else None,
            "members": self.members_hash,
        }


def rows_to_partitions(rows: Sequence[Mapping[str, Any]], spec: DispatchSpec) -> list:
    """Dispatch rows → partitions, in row order; rows with the same key are merged."""
    by_key: dict[str, dict[str, list]] = {}
    groups: dict[str, Any] = {}
    for row in rows:
        key = partition_key_of(row, spec)
        slot = by_key.setdefault(key, {"ids": [], "names": [], "locs": []})
        for rid, name, loc in zip(
            row["docdb_record_id"], row["asset_name"], row["s3_location"], strict=True
        ):
            if rid not in slot["ids"]:
                slot["ids"].append(rid)
                slot["names"].append(name)
                slot["locs"].append(loc)
        groups.setdefault(key, row.get("group_metadata"))
    return [
        DiscoveredPartition(
            key=key,
            spec=spec.name,
            docdb_record_id=tuple(slot["ids"]),
            asset_name=tuple(slot["names"]),
            s3_location=tuple(slot["locs"]),
            group_metadata=groups[key],
        )
        for key, slot in by_key.items()
    ]


@dataclass
class Page:
    """One discovery page: the partitions its records affect and the cursor after it."""

    partitions: list[DiscoveredPartition]
    cursor: queries.Cursor | None
    records: int
    full: bool
    seconds: float = 0.0


def _query(spec: DispatchSpec, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    query = spec.resolved_query()
    return {"$and": [query, dict(extra)]} if extra else query


def discover_page(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    cursor: queries.Cursor | None,
    page_size: int,
    *,
    extra_query: Mapping[str, Any] | None = None,
) -> Page:
    """The next page of records after ``cursor`` and the partitions they affect."""
    started = time.perf_counter()
    query = _query(spec, extra_query)
    options = spec.pipeline_options()
    direct = rows_are_records(spec)
    probe = queries.pipeline_for_page(
        query, cursor, page_size, extra_fields=["location"] if direct else (), **options
    )
    records = docdb.aggregate(assets_collection, probe)
    if not records:
        return Page([], cursor, 0, False, time.perf_counter() - started)
    new_cursor = queries.next_cursor(records, cursor)
    if direct:
        rows = [
            {
                "s3_location": [r.get("location")],
                "docdb_record_id": [r["_id"]],
                "asset_name": [r.get("name")],
            }
            for r in records
        ]
    else:
        pipeline = queries.pipeline_for_changes(query, records, **options)
        rows = docdb.aggregate(assets_collection, pipeline or [])
    rows = [r for r in rows if r.get("asset_name") and all(r["s3_location"])]
    # Partitions in cursor order (of their first record in this page): Dagster keeps dynamic
    # partitions in insertion order, which is what --partition-range a...b follows.
    position = {r["_id"]: i for i, r in enumerate(records)}
    partitions = sorted(
        rows_to_partitions(rows, spec),
        key=lambda p: (min(position.get(i, len(position)) for i in p.docdb_record_id), p.key),
    )
    return Page(
        partitions,
        new_cursor,
        len(records),
        len(records) >= page_size,
        time.perf_counter() - started,
    )


def discover_pages(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    cursor: queries.Cursor | None,
    page_size: int,
    *,
    budget_s: float | None = None,
    extra_query: Mapping[str, Any] | None = None,
) -> Iterator[Page]:
    """Pages after ``cursor`` until one is not full, or ``budget_s`` seconds have passed (the
    caller saves the cursor of the last page it processed and continues next time)."""
    started = time.monotonic()
    while True:
        page = discover_page(
            docdb, assets_collection, spec, cursor, page_size, extra_query=extra_query
        )
        if page.records:
            yield page
        cursor = page.cursor
        if not page.full:
            return
        if budget_s is not None and time.monotonic() - started >= budget_s:
            return


def ensure_indexes(docdb: DocDBResource, assets_collection: str) -> None:
    """The index discovery pages by (idempotent)."""
    docdb.ensure_index(assets_collection, ["last_modified", "_id"])


# --------------------------------------------------------------------------------------------
# The partition map
# --------------------------------------------------------------------------------------------


class PartitionMap:
    """Partition key → per spec: DocDB ids, asset names, locations, group metadata.

    Documents are ``{_id: key, specs: {spec name: entry}, updated_at}``; one key can be shared by
    several specs (the same data asset selected by two specs is one partition).
    """

    def __init__(self, docdb: DocDBResource, collection: str) -> None:
        self.docdb = docdb
        self.collection = collection

    def record(self, partitions: Sequence[DiscoveredPartition]) -> dict[str, str]:
        """Store the partitions' entries; key → ``new``, ``changed`` (members differ) or
        ``same``. New keys are inserted in one batch; existing ones are compared one by one."""
        import pymongo.errors

        if not partitions:
            return {}
        now = datetime.now(UTC)
        docs = [{"_id": p.key, "specs": {p.spec: p.entry()}, "updated_at": now} for p in partitions]
        statuses = {p.key: NEW for p in partitions}
        existing: list[int] = []
        try:
            self.docdb.collection(self.collection).insert_many(docs, ordered=False)
        except pymongo.errors.BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != 11000]
            if others:
                raise RuntimeError(
                    f"cannot write partition map {self.collection!r}: {others[0].get('errmsg')}"
                ) from exc
            existing = sorted(e["index"] for e in errors)
        for index in existing:
            part = partitions[index]
            doc = self.docdb.find_one(self.collection, {"_id": part.key}) or {}
            current = (doc.get("specs") or {}).get(part.spec)
            if current is not None and current.get("members") == part.members_hash:
                statuses[part.key] = SAME
                continue
            statuses[part.key] = CHANGED
            self.docdb.set_fields(
                self.collection,
                {"_id": part.key},
                {f"specs.{part.spec}": part.entry(), "updated_at": now},
            )
        return statuses

    def get(self, key: str) -> dict[str, Any] | None:
        return self.docdb.find_one(self.collection, {"_id": key})

    def entries_for_spec(self, spec: str, *, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Documents holding an entry of ``spec``, by key, after ``after``."""
        query: dict[str, Any] = {f"specs.{spec}": {"$exists": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.docdb.find(self.collection, query, sort=[("_id", 1)], limit=limit))

    def remove(self, spec: str, keys: Sequence[str]) -> list[str]:
        """Remove ``spec``'s entry of ``keys``; the keys left with no entry at all (their
        documents are deleted: the partitions can go)."""
        emptied = []
        for key in keys:
            doc = self.get(key)
            if doc is None:
                continue
            specs = dict(doc.get("specs") or {})
            specs.pop(spec, None)
            if specs:
                self.docdb.upsert(self.collection, {"_id": key}, {**doc, "specs": specs})
            else:
                self.docdb.delete_many(self.collection, {"_id": key})
                emptied.append(key)
        return emptied


def find_gone(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    docs: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Keys (of partition map ``docs``) that ``spec``'s pipeline no longer yields: their records
    were deleted, no longer match the query, were superseded (``filter_latest``) or regrouped.

    Two queries for the batch, whatever DocDB holds.
    """
    ids: list[Any] = []
    for doc in docs:
        entry = (doc.get("specs") or {}).get(spec.name) or {}
        ids.extend(entry.get("docdb_record_id") or [])
    if not docs:
        return []
    produced: set[str] = set()
    if ids:
        rows = list(docdb.find(assets_collection, {"_id": {"$in": list(dict.fromkeys(ids))}}))
        pipeline = queries.pipeline_for_changes(
            spec.resolved_query(), rows, **spec.pipeline_options()
        )
        if pipeline:
            for row in docdb.aggregate(assets_collection, pipeline):
                if row.get("asset_name"):
                    produced.add(partition_key_of(row, spec))
    return [doc["_id"] for doc in docs if doc["_id"] not in produced]
